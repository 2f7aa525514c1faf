"""The example service run the way rollbackd's `command` control kind runs it: `vbrpg-example serve --detach`
on a port fixed beforehand (so a config can name it), stopped with `vbrpg-example stop --pidfile`.

The argvs are the ones a config's [service.control] gives rollbackd, so the test's first start and rollbackd's
restarts run the same command. Paths may be relative to ``cwd`` (the service's workdir), as in a real config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tests.support.vbrpg_service import VBRPG_EXAMPLE, free_port, kill_detached, run_argv, run_cli

START_TIMEOUT_SECONDS = 180.0


class ExampleInstance(Protocol):
    """One example-service instance's folders and port (tests/probes/example_app.py's VbrpgApp)."""

    port: int  # 9 until served

    @property
    def root(self) -> Path: ...

    @property
    def app_dir(self) -> Path: ...

    @property
    def database(self) -> Path: ...

    @property
    def pidfile(self) -> Path: ...

    @property
    def base_url(self) -> str: ...


@dataclass(frozen=True)
class DetachedService:
    database: Path
    app_dir: Path
    port: int
    pidfile: Path
    log_file: Path | None = None
    cwd: Path | None = None  # what relative paths above are relative to

    @classmethod
    def for_app(cls, app: ExampleInstance) -> DetachedService:
        """``app`` served detached; its port is fixed now if it has none yet."""
        if app.port == 9:
            app.port = free_port()
        return cls(app.database, app.app_dir, app.port, app.pidfile, app.root / "run" / "service.log")

    def start_argv(self) -> list[str]:
        log = ["--log-file", str(self.log_file)] if self.log_file is not None else []
        return [*VBRPG_EXAMPLE, "serve", "--db", str(self.database), "--app-dir", str(self.app_dir), "--port",
                str(self.port), "--chaos", "--detach", "--pidfile", str(self.pidfile), *log]  # fmt: skip

    def stop_argv(self) -> list[str]:
        return [*VBRPG_EXAMPLE, "stop", "--pidfile", str(self.pidfile)]

    @property
    def pidfile_path(self) -> Path:
        return self.cwd / self.pidfile if self.cwd is not None else self.pidfile

    def start(self, argv: list[str] | None = None) -> None:
        """Run ``argv`` (a variant of start_argv(), say one behind `env`) or start_argv(); it returns once the
        service answers. Raise AssertionError with its output if it fails."""
        self.pidfile_path.parent.mkdir(parents=True, exist_ok=True)
        result = run_argv(argv or self.start_argv(), timeout=START_TIMEOUT_SECONDS, cwd=self.cwd)
        assert result.returncode == 0, f"{argv or self.start_argv()}: {result.stdout}{result.stderr}"

    def stop(self) -> None:
        """`stop --pidfile`, then SIGKILL for whatever of its group is left (a service rollbackd started too)."""
        if self.pidfile_path.exists():
            run_cli("stop", "--pidfile", self.pidfile_path)
        kill_detached(self.pidfile_path)
