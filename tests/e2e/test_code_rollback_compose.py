"""The runbook's Docker rollback (section 2, "Restore previous image version" + the database): under docker compose,
a deploy that loses data is undone with the image the service ran before the deploy and the pre-deploy backup.

Everything real: a private `dockerd` (tests/support/docker_engine.py), `docker-compose` running the real example
service in a container (the host's interpreter and venv bind-mounted read-only into an image that holds only a
VERSION file, so the two "releases" are two real images with different ids), on the host's network, its
database bind-mounted from the host where rollbackd probes it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.docker_engine import DockerEngine, docker_engine
from tests.support.rollbackd_daemon import wait_for
from tests.support.stack import Stack
from tests.support.vbrpg_service import CLEAN_HEAD, FAULT_REVISIONS

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
IMAGE = "vbrpg-backend:latest"
# A compose deploy recreates the container: seconds without a process or health. The rules that answer an outage
# with a restart wait longer than that here, so the only incident is the data loss.
PATIENT_RULES = """
[[service.rules]]
name = "process-down"
for = "60s"

[[service.rules]]
name = "health-failing"
for = "60s"

[[service.rules]]
name = "post-deploy-health"
for = "60s"
"""


@dataclass
class ComposeStack(Stack):
    engine: DockerEngine | None = None

    @property
    def compose_dir(self) -> Path:
        return self.root / "compose"

    def start_service(self) -> None:
        mounts = {self.workdir, REPO, Path(sys.prefix), Path(sys.base_prefix), Path("/usr"), Path("/etc")}
        mounts |= {Path(path) for path in ("/lib", "/lib64") if Path(path).exists()}
        volumes = [f"{path}:{path}{'' if path == self.workdir else ':ro'}" for path in sorted(mounts)]
        command = [
            str(Path(sys.prefix) / "bin" / "vbrpg-example"), "serve", "--db", str(self.database),
            "--app-dir", str(self.workdir), "--host", "127.0.0.1", "--port", str(self.port),
        ]  # fmt: skip
        service = {"image": IMAGE, "network_mode": "host", "volumes": volumes, "command": command}
        self.compose_dir.mkdir(parents=True, exist_ok=True)
        (self.compose_dir / "docker-compose.yml").write_text(json.dumps({"services": {"backend": service}}))
        self.compose("up", "-d", "backend")
        wait_for(lambda: self.health() == 200, "the example service in its container")

    def stop_service(self) -> None:
        if self.engine is not None:
            self.compose("down", check=False)

    def compose(self, *arguments: str, check: bool = True) -> str:
        assert self.engine is not None
        result = subprocess.run(
            ["docker-compose", "--project-directory", str(self.compose_dir), *arguments],
            capture_output=True,
            text=True,
            env=self.engine.env,
            cwd=self.compose_dir,
            timeout=180,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker-compose {' '.join(arguments)}: {result.stdout}{result.stderr}")
        return result.stdout.strip()

    def running_image(self) -> str:
        assert self.engine is not None
        (container,) = self.compose("ps", "-q", "backend").split()
        return self.engine.docker("inspect", "--format", "{{.Image}}", container)

    def control_config(self) -> str:
        return f"""
[service.control]
kind = "docker-compose"
service = "backend"
project_dir = "{self.compose_dir}"
command = ["docker-compose"]
timeout = "2m"
"""

    def process_match(self) -> str:
        return f'match = ["vbrpg-example serve", "--port {self.port}"]'


def test_data_loss_deploy_under_compose_goes_back_to_the_previous_image_and_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with docker_engine() as engine:
        monkeypatch.setenv("DOCKER_HOST", engine.host)  # rollbackd and its docker commands inherit it
        old = engine.import_image("vbrpg-backend:v1", {"VERSION": "v1\n"})
        new = engine.import_image("vbrpg-backend:v2", {"VERSION": "v2\n"})
        engine.docker("tag", "vbrpg-backend:v1", IMAGE)
        stack = ComposeStack(
            tmp_path / "live", code_rollback=True, fast_rules=False, extra_config=PATIENT_RULES, engine=engine
        )
        try:
            stack.set_up()
            stack.start_daemon()
            wait_for(
                lambda: f"code version to go back to: image:{IMAGE}@{old}" in stack.daemon_log.read_text(),
                f"the daemon to record the running image\n{stack.log_tail()}",
            )
            before = stack.counts()

            # The deploy: the new release's image, its container, then its migration (an entrypoint's upgrade).
            engine.docker("tag", "vbrpg-backend:v2", IMAGE)
            stack.compose("up", "-d", "backend")
            assert stack.running_image() == new
            wait_for(lambda: stack.health() == 200, "the new release to answer")
            stack.fault("data-loss")

            incident = stack.settled_incident("data-loss")
            assert incident.outcome == "recovered", f"{incident.notes}\n{stack.log_tail()}"
            [restore] = incident.actions
            assert restore.detail["code_commit"] == f"image:{IMAGE}@{old}"
            argvs = [command["argv"] for command in restore.commands]
            assert ["docker", "tag", old, IMAGE] in argvs
            assert stack.running_image() == old  # compose recreated the container from the previous image
            assert stack.health() == 200
            after = stack.counts()  # the checklist's smoke steps leave their players behind
            assert after["game_rooms"] == before["game_rooms"] and after["players"] >= before["players"]
            assert stack.revision() == CLEAN_HEAD
            assert (incident.revision_before, incident.revision_after) == (FAULT_REVISIONS["data-loss"], CLEAN_HEAD)
            plan = stack.rollbackd("rollback", "vbrpg", "--restore", "--code", "--dry-run")
            assert f"put the code back to image:{IMAGE}@{old}: docker tag {old} {IMAGE}" in plan.stdout, plan.stdout
        finally:
            stack.tear_down()
