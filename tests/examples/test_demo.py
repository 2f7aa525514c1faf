"""`make demo` stopped with Ctrl-C while its output goes to a pipe whose reader is gone (`make demo | head`, or a
`| tee` that the same Ctrl-C ended): it stops the daemon and the service it started, with no BrokenPipeError.

It runs on free ports (DEMO_PORT, DEMO_METRICS_PORT), not the demo's 8000/9797, in the repository's .demo/.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.vbrpg_service import free_port

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2, trust_env=False)
    except httpx.TransportError:
        return False
    return True


def test_ctrl_c_under_a_closed_pipe_stops_the_daemon_and_the_service(tmp_path: Path) -> None:
    port, metrics_port = free_port(), free_port()
    environment = {**os.environ, "DEMO_PORT": str(port), "DEMO_METRICS_PORT": str(metrics_port)}
    errors = (tmp_path / "stderr").open("wb")
    demo = subprocess.Popen(  # noqa: S603 - this interpreter, the repository's demo
        [sys.executable, str(REPO / "examples" / "demo.py")],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=errors,
        env=environment,
        start_new_session=True,  # its own process group, as a terminal's foreground job is
    )
    try:
        assert demo.stdout is not None
        seen = []
        for line in demo.stdout:
            seen.append(line.decode(errors="replace"))
            if b"watching a healthy service" in line:
                break
        assert any("watching a healthy service" in line for line in seen), "".join(seen)
        assert answers(f"http://127.0.0.1:{port}/health") and answers(f"http://127.0.0.1:{metrics_port}/metrics")
        demo.stdout.close()  # the pipe's reader is gone
        os.killpg(demo.pid, signal.SIGINT)  # Ctrl-C: to the whole foreground group
        assert demo.wait(timeout=120) == 0
    finally:
        if demo.poll() is None:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
        errors.close()
    stderr = (tmp_path / "stderr").read_text(errors="replace")
    assert "BrokenPipeError" not in stderr and "Traceback" not in stderr, stderr
    # Nothing it started is left: no daemon on its config, no service answering.
    config = str(REPO / ".demo" / "demo.toml")
    left = [p.pid for p in psutil.process_iter(["cmdline"]) if config in " ".join(p.info.get("cmdline") or ())]
    assert left == []
    assert not answers(f"http://127.0.0.1:{port}/health")
    assert not answers(f"http://127.0.0.1:{metrics_port}/metrics")
    pidfile = REPO / ".demo" / "vbrpg" / "run" / "vbrpg.pid"
    assert not pidfile.exists() or not psutil.pid_exists(int(pidfile.read_text().strip() or 0))
