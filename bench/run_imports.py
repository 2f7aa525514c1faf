"""What `rollbackd run` holds before Daemon.serve(), imported the way the daemon imports it: through the command
line's parse (bench/daemon_memory.py's "imports and config only" imports the daemon module directly).

Prints VmRSS (MiB) and the number of modules. Runs on trees from before ``command_modules`` too (full parser).

    .venv/bin/python bench/run_imports.py config.toml
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import rollbackd.cli as cli


def main() -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("config", type=Path, help="a rollbackd config file")
    config_path = arguments.parse_args().config
    narrowed = hasattr(cli, "command_modules")
    parser = cli.build_parser(cli.command_modules(["run"])) if narrowed else cli.build_parser()
    parser.parse_args(["--config", str(config_path), "run"])
    del parser
    import rollbackd.runtime.daemon  # noqa: F401 - cli/run.py's imports, as run() makes them
    from rollbackd.config.child_load import load_config_in_child
    from rollbackd.host.glibc_malloc import PeriodicTrim  # noqa: F401
    from rollbackd.metrics import daemon_metrics

    config, metrics = load_config_in_child(config_path), daemon_metrics()  # as cli/run.py
    rss = [line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmRSS:")][0]
    print(f"{int(rss.split()[1]) / 1024:.1f} MiB, {len(sys.modules)} modules")
    del config, metrics
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
