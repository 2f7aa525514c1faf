"""The Prometheus side ships working: promtool checks and unit-tests every alert, and the alert rules and the
Grafana dashboard ask only for metrics rollbackd really exports (names from the metrics registry)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from rollbackd.metrics import Metrics

PROMETHEUS = Path(__file__).resolve().parents[1] / "config/prometheus"
RULES = PROMETHEUS / "rollbackd.rules.yml"
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
DASHBOARD = PROMETHEUS / "grafana-dashboard.json"
ALERTS = {
    "RollbackdServiceDown",
    "RollbackdRecoveryFailed",
    "RollbackdInHold",
    "RollbackdBackupStale",
    "RollbackdBackupDrillFailed",
    "RollbackdWriteLockHeld",
    "RollbackdSchemaDrift",
    "RollbackdWalGrowing",
    "RollbackdDown",
    "RollbackdNotificationsFailing",
    "RollbackdHotJournal",
    "RollbackdMissingIndexes",
    "RollbackdSchemaUnknown",
    "RollbackdReplicationLagging",
    "RollbackdReplicaDown",
    "RollbackdReplicaDrillFailed",
    "RollbackdOverloaded",
}

needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian: prometheus) missing")


def promtool(*args: str | Path, cwd: Path = PROMETHEUS) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["promtool", *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@needs_promtool
def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = promtool("check", "config", PROMETHEUS / "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


@needs_promtool
def test_the_fleet_example_is_a_valid_central_prometheus_config() -> None:
    checked = promtool("check", "config", PROMETHEUS / "fleet.yml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    fleet = yaml.safe_load((PROMETHEUS / "fleet.yml").read_text())
    jobs = {job["job_name"]: job for job in fleet["scrape_configs"]}
    assert len(jobs["rollbackd"]["static_configs"][0]["targets"]) > 1
    assert jobs["federate-rollbackd"]["honor_labels"] is True  # keeps job="rollbackd" and each host's instance


needs_amtool = pytest.mark.skipif(
    shutil.which("amtool") is None, reason="amtool (Debian: prometheus-alertmanager) missing"
)


def amtool_route(*labels: str) -> str:
    result = subprocess.run(
        ["amtool", "config", "routes", "test", f"--config.file={PROMETHEUS / 'alertmanager.yml'}", *labels],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return result.stdout.strip()


@needs_amtool
def test_the_alertmanager_example_routes_rollbackds_alerts() -> None:
    result = subprocess.run(
        ["amtool", "check-config", PROMETHEUS / "alertmanager.yml"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # rollbackd's own incident alert and a critical rule alert page; a warning goes to the team; others not.
    assert amtool_route("alertname=RollbackdIncident", "severity=critical", "service=vbrpg") == "oncall"
    assert amtool_route("alertname=RollbackdInHold", "severity=critical", "service=vbrpg") == "oncall"
    assert amtool_route("alertname=RollbackdBackupStale", "severity=warning", "service=vbrpg") == "team"
    assert amtool_route("alertname=NodeDown", "severity=critical") == "default"


@needs_promtool
def test_promtool_unit_tests_of_every_alert_pass() -> None:
    assert RULE_TESTS
    result = promtool("test", "rules", *RULE_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_promtool
def test_the_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The fixtures pin behaviour: the write-lock alert at 600 s instead of 60 s makes them fail."""
    (tmp_path / "tests").mkdir()
    lock_rule = "rollbackd_sqlite_write_lock_held_seconds > 60"
    (tmp_path / "rollbackd.rules.yml").write_text(RULES.read_text().replace(lock_rule, lock_rule + "0"))
    for test in RULE_TESTS:
        shutil.copy(test, tmp_path / "tests" / test.name)
    result = promtool("test", "rules", *sorted((tmp_path / "tests").glob("*.yml")), cwd=tmp_path)
    assert result.returncode != 0
    assert "RollbackdWriteLockHeld" in result.stdout + result.stderr


def test_every_alert_exists_with_severity_and_operator_annotations() -> None:
    assert {rule["alert"] for rule in rules()} == ALERTS
    for rule in rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["alert"]


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    assert firing == ALERTS
    assert quiet == ALERTS


# ---- metric names ----------------------------------------------------------------------------------------

SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
}


def exported_series_names() -> set[str]:
    """Every series name rollbackd's registry can expose (labelled metrics have no samples until used)."""
    names = set()
    for family in Metrics(CollectorRegistry()).registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


def metric_names(expr: str) -> set[str]:
    """rollbackd_* identifiers in a PromQL expression (label values in quotes stripped first)."""
    return set(re.findall(r"\brollbackd_[a-zA-Z0-9_:]*", re.sub(r'"[^"]*"', '""', expr)))


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    exprs += [variable["query"]["query"] for variable in dashboard["templating"]["list"] if variable["type"] == "query"]
    return exprs


def test_the_names_this_test_reads_are_the_real_exposition_names() -> None:
    names = exported_series_names()
    assert "rollbackd_recovery_actions_total" in names
    assert "rollbackd_http_request_duration_seconds_bucket" in names
    assert "rollbackd_build_info" in names
    assert "rollbackd_recovery_actions" not in names
    assert metric_names('rate(rollbackd_x_total{service="rollbackd_y"}[5m])') == {"rollbackd_x_total"}


def test_alert_rules_use_only_exported_metrics() -> None:
    exported = exported_series_names()
    for rule in rules():
        used = metric_names(rule["expr"])
        assert used or rule["expr"].startswith('up{job="rollbackd"}'), rule["alert"]
        assert used <= exported, (rule["alert"], used - exported)


def test_dashboard_uses_only_exported_metrics() -> None:
    exported = exported_series_names()
    exprs = dashboard_exprs()
    assert exprs
    unknown = {name for expr in exprs for name in metric_names(expr)} - exported
    assert unknown == set()


def test_dashboard_shows_what_an_operator_watches() -> None:
    used = {name for expr in dashboard_exprs() for name in metric_names(expr)}
    for needed in (
        "rollbackd_probe_success",
        "rollbackd_http_request_duration_seconds_bucket",
        "rollbackd_sqlite_write_lock_held_seconds",
        "rollbackd_backup_last_success_timestamp_seconds",
        "rollbackd_backup_size_bytes",
        "rollbackd_recovery_actions_total",
        "rollbackd_policy_state",
        "rollbackd_notifications_failed_total",
        "rollbackd_sqlite_hot_journal",
        "rollbackd_sqlite_missing_indexes",
        "rollbackd_schema_state",
        "rollbackd_service_process_resident_memory_bytes",
        "rollbackd_replication_lag_seconds",
        "rollbackd_replication_up",
    ):
        assert needed in used, needed
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))


def test_every_dashboard_query_selects_and_shows_the_instance() -> None:
    """A fleet (one central Prometheus, several rollbackd hosts) reads each panel per host."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert 'instance=~"$instance"' in target["expr"], (panel["title"], target["expr"])
            assert "{{instance}}" in target["legendFormat"], (panel["title"], target["legendFormat"])
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"instance", "service"} <= variables


def test_every_alert_keeps_the_instance_label() -> None:
    """An aggregation that drops ``instance`` would leave a fleet's alert without the host it is about."""
    for rule in rules():
        for grouping in re.findall(r"\b(?:by|on) \(([^)]*)\)", rule["expr"]):
            assert "instance" in grouping.split(", "), (rule["alert"], grouping)
        assert "without" not in rule["expr"], rule["alert"]
