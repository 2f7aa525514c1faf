"""Shell completion is generated from the CLI's own parser by shtab, as packaging/build-deb.sh does it, and a
real bash completes a subcommand and an option with it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rollbackd.cli import build_parser

pytest.importorskip("shtab", reason="shtab (a build tool in the test extras) writes the completion scripts")

REPO = Path(__file__).resolve().parents[2]


def generate(shell: str) -> str:
    """The script exactly as build-deb.sh writes it into the package."""
    parser = "rollbackd.cli.build_parser"
    argv = [sys.executable, "-B", "-m", "shtab", f"--shell={shell}", "--prog", "rollbackd", parser]
    environment = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True, env=environment).stdout


def complete(script: Path, *words: str) -> list[str]:
    """What bash offers for the last of ``words`` (typed after `rollbackd`), by the function `complete -p` names."""
    line = " ".join(["rollbackd", *words])
    program = f"""
source {script}
spec=$(complete -p rollbackd) || exit 3
function=${{spec#*-F }}; function=${{function%% *}}
COMP_WORDS=(rollbackd {" ".join(words)}); COMP_CWORD={len(words)}; COMP_LINE='{line}'; COMP_POINT={len(line)}
"$function" rollbackd '{words[-1]}' '{words[-2] if len(words) > 1 else "rollbackd"}'
printf '%s\\n' "${{COMPREPLY[@]}}"
"""
    result = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "rollbackd"
    path.write_text(generate("bash"))
    return path


def test_bash_completes_a_subcommand(bash_script: Path) -> None:
    assert complete(bash_script, "sta") == ["status"]
    assert set(complete(bash_script, "re")) == {"restore", "rehearse", "resume"}


def test_bash_completes_a_subcommands_options_and_the_global_ones_after_it(bash_script: Path) -> None:
    assert "--full" in complete(bash_script, "history", "--f")
    assert set(complete(bash_script, "verify", "--")) >= {"--wait", "--json", "--config", "--utc"}


def test_zsh_script_names_every_subcommand() -> None:
    script = generate("zsh")
    assert script.startswith("#compdef rollbackd")
    commands = next(action for action in build_parser()._actions if action.dest == "command").choices
    for name in commands:
        assert f"\n    {name}:'" in script, name
