"""Resident memory after each import, in the order given: each line's delta is that module's cost beside the ones
imported above it (issue 13: where the daemon's memory goes).

    .venv/bin/python bench/import_increments.py asyncio pydantic rollbackd.config.model httpx \\
        rollbackd.runtime.daemon load:config/demo.toml

``load:PATH`` loads a rollbackd config file (pydantic-core validates it then, config/validation.py);
``pickled:PATH`` has a child interpreter load it and unpickles the result here, as a daemon that validates in a
child would hold it; ``trim`` collects garbage and calls ``malloc_trim(0)``, as the running daemon does now and
then (host/glibc_malloc.py): what an import leaves resident once the heap its compiling used is handed back.

    .venv/bin/python bench/import_increments.py asyncio rollbackd.runtime.daemon pickled:config/demo.toml trim
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import importlib
import pickle
import subprocess
import sys
from pathlib import Path


def resident_mib() -> float:
    """VmRSS of this process, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


# The child's side of ``pickled:PATH``: validate, then write the config pickled to stdout.
LOAD_AND_PICKLE = """
import pickle, sys
from pathlib import Path
from rollbackd.config.model import load_config
sys.stdout.buffer.write(pickle.dumps(load_config(Path(sys.argv[1]))))
"""


def main(steps: list[str]) -> int:
    before = resident_mib()
    print(f"{'interpreter':40s} {before:6.1f}")
    for step in steps:
        if step.startswith("load:"):
            from rollbackd.config.model import load_config

            load_config(Path(step.removeprefix("load:")))
        elif step == "trim":
            gc.collect()
            ctypes.CDLL(None).malloc_trim(0)
        elif step.startswith("pickled:"):
            path = step.removeprefix("pickled:")
            child = subprocess.run([sys.executable, "-c", LOAD_AND_PICKLE, path], capture_output=True, check=True)
            pickle.loads(child.stdout)  # noqa: S301 - our own child's output
        else:
            importlib.import_module(step)
        now = resident_mib()
        print(f"{step:40s} {now:6.1f}  +{now - before:5.1f}")
        before = now
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "steps", nargs="+", help="module names to import, load:PATH or pickled:PATH of a rollbackd config, or trim"
    )
    sys.exit(main(parser.parse_args().steps))
