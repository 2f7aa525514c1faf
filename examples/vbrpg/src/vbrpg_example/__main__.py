"""Allow `python -m vbrpg_example`, the same entry point as the `vbrpg-example` console script."""

from vbrpg_example.cli import main

raise SystemExit(main())
