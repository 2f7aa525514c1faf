"""check-config prints TOML that check-config accepts again, whatever text the config holds."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

from rollbackd.config import toml_dump
from rollbackd.config.model import dump_config, parse_config

EMOJI_CONFIG = textwrap.dedent(
    """
    [[service]]
    name = "vbrpg"
    workdir = "/opt/vbrpg/backend"
    database = "data/vbrpg.db"
    base_url = "http://127.0.0.1:8000"

    [[service.verify.smoke]]
    name = "create a room 🎲"
    method = "POST"
    path = "/api/rooms"
    json = { name = "Dés 🎲 and dragons 🐉", max_players = 4 }
    expect_status = [201]
    """
)


def test_an_emoji_is_written_as_itself_and_reads_back(tmp_path: Path) -> None:
    config = parse_config(EMOJI_CONFIG, tmp_path / "rollbackd.toml")
    printed = toml_dump.dumps(dump_config(config))
    assert "\\ud83c" not in printed  # the old writer's surrogate pair, which TOML rejects
    assert "🎲" in printed
    assert tomllib.loads(printed)["service"][0]["verify"]["smoke"][0]["json"]["name"] == "Dés 🎲 and dragons 🐉"
    assert dump_config(parse_config(printed, tmp_path / "printed.toml")) == dump_config(config)


def test_none_is_left_out_not_written(tmp_path: Path) -> None:
    assert tomllib.loads(toml_dump.dumps({"daemon": {"control_socket": None, "dry_run": True}})) == {
        "daemon": {"dry_run": True}
    }


def test_check_config_accepts_its_own_output(tmp_path: Path) -> None:
    source = tmp_path / "rollbackd.toml"
    source.write_text(EMOJI_CONFIG, encoding="utf-8")
    first = subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(source)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert first.returncode == 0, first.stderr
    printed = tmp_path / "printed.toml"
    printed.write_text(first.stdout, encoding="utf-8")
    second = subprocess.run(
        [sys.executable, "-m", "rollbackd", "check-config", str(printed)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=60,
        check=False,
    )
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
