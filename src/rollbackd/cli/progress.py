"""Progress of `rollbackd backup` and `restore` for a person: the phase, bytes, rate and ETA, on one line.

Driven by the callbacks the backup and restore code already calls (bytes or pages copied, a step begun), so it
never polls. Hand-written rather than tqdm or rich: the one line needs no layout engine, and importing either
costs the command line 80-230 ms (`python -X importtime -c 'import tqdm'`: 118-134 ms; `rich.progress`:
77-233 ms on this 2-core machine) where this module costs nothing beyond the standard library.

On a terminal the line is redrawn in place on stderr (at most every ``REDRAW`` seconds) and cleared when the
phase ends; elsewhere (cron, CI, a pipe) each phase is one plain line and there is no bar.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from rollbackd.units import human_duration, human_size

REDRAW = 0.1  # seconds between two redraws of the line: enough for the eye, cheap for a 1 GiB copy
BAR_WIDTH = 24


class PhaseProgress:
    """One line per phase ("copying vbrpg.db: [#####   ] 41% 11.2 MiB of 27.0 MiB, 48.1 MiB/s, ETA 0.3 s").

    ``phase(name)`` starts a phase; calling the object with (done, total) reports its bytes (``scale`` turns
    another unit, such as SQLite pages, into bytes); ``close()`` ends the last phase.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        interactive: bool | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.scale = 1.0
        self._name = ""
        self._started = 0.0
        self._drawn_at = float("-inf")
        self._line_open = False

    def phase(self, name: str, *, scale: float = 1.0) -> None:
        """Begin phase ``name``: its bytes are reported as (done, total) times ``scale``."""
        self.clear()
        self._name, self.scale, self._started, self._drawn_at = name, scale, self.clock(), float("-inf")
        if self.interactive:
            self._draw(f"{name} ...")
        else:
            self.stream.write(f"{name} ...\n")
            self.stream.flush()

    def __call__(self, done: int, total: int) -> None:
        if not self.interactive or total <= 0:
            return
        now = self.clock()
        if now - self._drawn_at < REDRAW and done < total:
            return
        self._drawn_at = now
        self._draw(self.describe(done * self.scale, total * self.scale, now - self._started))

    def describe(self, done: float, total: float, elapsed: float) -> str:
        """The line for ``done`` of ``total`` bytes after ``elapsed`` seconds of this phase."""
        fraction = min(1.0, done / total) if total else 1.0
        bar = "#" * int(fraction * BAR_WIDTH)
        line = f"{self._name}: [{bar:<{BAR_WIDTH}}] {fraction * 100:3.0f}% {human_size(done)} of {human_size(total)}"
        if elapsed > 0 and done > 0:
            rate = done / elapsed
            line += f", {human_size(rate)}/s"
            if done < total:
                line += f", ETA {human_duration((total - done) / rate)}"
        return line

    def print_line(self, text: str, stream: TextIO | None = None) -> None:
        """Print a finished step's line (to stdout by default) without tearing the live one."""
        self.clear()
        print(text, file=stream or sys.stdout, flush=True)
        if self.interactive and self._name:
            self._draw(f"{self._name} ...")

    def clear(self) -> None:
        if self._line_open:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self._line_open = False

    def close(self) -> None:
        self.clear()
        self._name = ""

    def _draw(self, line: str) -> None:
        self.stream.write(f"\r\033[K{line}")
        self.stream.flush()
        self._line_open = True
