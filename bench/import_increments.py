"""Resident memory after each import, in the order given: each line's delta is that module's cost beside the ones
imported above it (issue 13: where the daemon's memory goes).

    .venv/bin/python bench/import_increments.py asyncio pydantic rollbackd.config.model httpx \\
        rollbackd.runtime.daemon load:config/demo.toml

``load:PATH`` loads a rollbackd config file (pydantic builds the config's validator then).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path


def resident_mib() -> float:
    """VmRSS of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def main(steps: list[str]) -> int:
    before = resident_mib()
    print(f"{'interpreter':40s} {before:6.1f}")
    for step in steps:
        if step.startswith("load:"):
            from rollbackd.config.model import load_config

            load_config(Path(step.removeprefix("load:")))
        else:
            importlib.import_module(step)
        now = resident_mib()
        print(f"{step:40s} {now:6.1f}  +{now - before:5.1f}")
        before = now
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps", nargs="+", help="module names to import, or load:PATH of a rollbackd config")
    sys.exit(main(parser.parse_args().steps))
