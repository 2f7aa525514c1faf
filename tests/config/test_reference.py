"""docs/CONFIG.md is generated from the config models and names every key; a stale copy fails here."""

from __future__ import annotations

from pathlib import Path

from rollbackd.config.reference import render, rows
from rollbackd.config.reference_text import DESCRIPTIONS, SECTION_NOTES

REPO = Path(__file__).resolve().parents[2]
CONFIG_MD = REPO / "docs" / "CONFIG.md"


def test_docs_config_md_is_what_the_models_render() -> None:
    assert CONFIG_MD.read_text(encoding="utf-8") == render(), (
        "docs/CONFIG.md is stale: run `python -m rollbackd.config.reference > docs/CONFIG.md`"
    )


def test_every_key_has_a_description_and_every_description_a_key() -> None:
    paths = [row.path for row in rows()]
    assert len(paths) == len(set(paths))
    assert [path for path in paths if not DESCRIPTIONS.get(path)] == []
    assert set(DESCRIPTIONS) - set(paths) == set()
    assert set(SECTION_NOTES) <= {row.section for row in rows()}


def test_the_keys_the_issue_found_undocumented_are_listed_with_type_and_default() -> None:
    by_path = {row.path: row for row in rows()}
    for path in (
        "service.control.systemd.user",
        "service.control.systemd.timeout",
        "service.backups.enabled",
        "service.backups.timeout",
        "service.probes.health.ok_status",
        "service.probes.integrity.foreign_keys",
        "daemon.webhooks.url",
        "daemon.webhooks.retries",
        "service.verify.smoke.capture",
    ):
        assert path in by_path, path
    assert (by_path["service.backups.timeout"].type, by_path["service.backups.timeout"].default) == (
        "duration (> 0)",
        '`"1h"`',
    )
    assert by_path["service.backups.min_free_bytes"].unit.startswith("bytes")
    assert by_path["service.workdir"].default == "required"
    assert "every" not in {row.key for row in rows() if row.section == "[service.probes.integrity]"}


def test_render_gives_type_default_and_a_section_per_probe() -> None:
    text = render()
    assert '| `shutdown_timeout` | duration (> 0) | `"30s"` |' in text
    assert text.count("## `[service.probes.") == 7
