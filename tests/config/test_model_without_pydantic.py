"""The config's classes are plain dataclasses: importing them, or receiving a validated config pickled, loads no
pydantic (~10 MiB the daemon would carry for its whole life, issue 13); only validating does, and then only
pydantic-core (config/validation.py builds the validator).

Each check runs in a fresh child interpreter, whose ``sys.modules`` is what it says.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

from rollbackd.config.model import Config, S3Replica, SystemdControl, parse_config

VALIDATORS = ("pydantic", "pydantic_core", "annotated_types", "typing_extensions")

# Every kind of value a config holds: a discriminated union member, a replica tuple, aliased keys, durations,
# sizes, paths, rules, smoke steps, webhooks.
RICH_CONFIG = """
[daemon]
state_dir = "state"
metrics_listen = ""
shutdown_timeout = "20s"
webhooks = [{ url = "https://hooks.example/x?token={secret:TOKEN}", retries = 2 }]

[[service]]
name = "vbrpg"
workdir = "backend"
database = "data/vbrpg.db"
base_url = "http://127.0.0.1:8000/"

[service.control]
kind = "systemd"
unit = "vbrpg-backend"

[service.backups]
min_free_bytes = "512MiB"
min_free_ratio = 0

[service.probes.schema]
every = "3s"

[service.probes.health]
ok_status = [200, 204]
expect_json = { "/status" = "ok" }

[[service.rules]]
name = "data-loss"
for = "30s"
threshold = 1

[[service.verify.smoke]]
name = "create room"
method = "POST"
path = "/api/rooms"
json = { name = "smoke" }

[service.replication]
credentials_file = "secrets.env"

[[service.replication.replicas]]
type = "s3"
bucket = "backups"
endpoint = "http://127.0.0.1:9000/"
"""


def loaded_by(code: str, stdin: bytes = b"") -> tuple[bytes, list[str]]:
    """Run ``code`` in a fresh interpreter; return what it wrote to stdout (pickled) and its sys.modules."""
    wrapped = code + "\nimport pickle, sys\nsys.stdout.buffer.write(pickle.dumps((result, sorted(sys.modules))))\n"
    child = subprocess.run([sys.executable, "-c", wrapped], input=stdin, capture_output=True, timeout=60, check=False)
    assert child.returncode == 0, child.stderr.decode()
    result, modules = pickle.loads(child.stdout)  # noqa: S301 - our own child, on a pipe
    return result, modules


def validators_in(modules: list[str]) -> list[str]:
    return [name for name in modules if name.split(".")[0] in VALIDATORS]


def test_importing_the_config_model_loads_no_pydantic() -> None:
    result, modules = loaded_by("import rollbackd.config.model\nresult = rollbackd.config.model.__name__")
    assert result == "rollbackd.config.model"
    assert "rollbackd.config.validation_markers" in modules
    assert validators_in(modules) == []


def test_a_validated_config_unpickles_whole_in_a_process_that_never_imports_pydantic(tmp_path: Path) -> None:
    config = parse_config(textwrap.dedent(RICH_CONFIG), tmp_path / "rollbackd.toml")
    service = config.service[0]
    assert isinstance(service.control, SystemdControl) and isinstance(service.replication.replicas[0], S3Replica)
    code = textwrap.dedent(
        """
        import pickle, sys
        config = pickle.loads(sys.stdin.buffer.read())
        service = config.service[0]
        result = (config, service.control.unit, service.backups.min_free_bytes, service.probes.schema_.every,
                  config.daemon.socket_path, config.daemon.webhooks[0].send_url)
        """
    )
    result, modules = loaded_by(code, stdin=pickle.dumps(config))
    assert validators_in(modules) == []
    assert "rollbackd.config.model" in modules  # the classes came back as themselves
    returned, unit, min_free_bytes, schema_every, socket_path, send_url = result
    assert returned == config
    assert isinstance(returned, Config) and returned is not config
    assert (unit, min_free_bytes, schema_every) == ("vbrpg-backend.service", 512 * 1024**2, 3.0)
    assert socket_path == tmp_path / "state" / "rollbackd.sock"
    assert send_url == "https://hooks.example/x?token=TOKEN"


def test_validating_a_config_loads_pydantic_core_and_not_pydantic() -> None:
    code = textwrap.dedent(
        f"""
        from pathlib import Path
        from rollbackd.config.model import dump_config, parse_config
        result = dump_config(parse_config({RICH_CONFIG!r}, Path("/srv/rollbackd.toml")))
        """
    )
    result, modules = loaded_by(code)
    assert result["service"][0]["replication"]["replicas"][0]["endpoint"] == "http://127.0.0.1:9000"
    assert "pydantic_core" in modules
    assert not [name for name in modules if name.split(".")[0] == "pydantic"]
