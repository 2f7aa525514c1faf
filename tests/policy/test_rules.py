"""The runbook's rules as data, and how a config changes them by name."""

from __future__ import annotations

import textwrap
from pathlib import Path

from rollbackd.config.model import BUILTIN_RULE_NAMES, parse_config
from rollbackd.policy.rules import Rung, builtin_rules, effective_rules


def service_with_rules(tmp_path: Path, rules: str) -> object:
    text = textwrap.dedent(
        """
        [[service]]
        name = "vbrpg"
        workdir = "."
        database = "vbrpg.db"
        base_url = "http://127.0.0.1:8000"
        verify = { latency_bound = "800ms" }
        """
    ) + textwrap.dedent(rules)
    return parse_config(text, tmp_path / "rollbackd.toml").service[0]


def test_config_knows_every_builtin_rule_name(tmp_path: Path) -> None:
    names = {rule.name for rule in builtin_rules(service_with_rules(tmp_path, ""))}  # type: ignore[arg-type]
    assert names == BUILTIN_RULE_NAMES


def test_runbook_table_is_the_default(tmp_path: Path) -> None:
    rules = {rule.name: rule for rule in effective_rules(service_with_rules(tmp_path, ""))}  # type: ignore[arg-type]
    assert rules["data-loss"].ladder[0] == Rung("restore", "pre_deploy", block_revision=True)
    assert rules["schema-ahead"].ladder[0] == Rung("downgrade", "code_head")
    assert [rung.kind for rung in rules["health-failing"].ladder] == ["restart", "hold"]
    assert rules["health-failing"].when == "no_deploy"
    assert [rung.kind for rung in rules["post-deploy-health"].ladder] == ["downgrade", "restore", "hold"]
    # The runbook's "DO NOT rollback": slow with no deploy only alerts.
    assert not rules["slow-no-deploy"].acts
    # Scenario 4's bound comes from the verification bound ("API response times < 1 second").
    assert rules["slow-after-index-drop"].threshold == 0.8


def test_rules_are_ordered_by_priority(tmp_path: Path) -> None:
    priorities = [rule.priority for rule in effective_rules(service_with_rules(tmp_path, ""))]  # type: ignore[arg-type]
    assert priorities == sorted(priorities, reverse=True)


def test_override_changes_only_the_given_keys(tmp_path: Path) -> None:
    service = service_with_rules(
        tmp_path,
        """
        [[service.rules]]
        name = "health-failing"
        for = "30s"

        [[service.rules]]
        name = "data-loss"
        threshold = 0.2

        [[service.rules]]
        name = "integrity-failed"
        enabled = false
        """,
    )
    rules = {rule.name: rule for rule in effective_rules(service)}  # type: ignore[arg-type]
    assert rules["health-failing"].for_ == 30.0
    assert [rung.kind for rung in rules["health-failing"].ladder] == ["restart", "hold"]
    assert rules["data-loss"].threshold == 0.2
    assert rules["data-loss"].ladder[0].block_revision
    assert not rules["integrity-failed"].enabled


def test_action_override_keeps_the_ladder_from_that_rung(tmp_path: Path) -> None:
    service = service_with_rules(
        tmp_path,
        """
        [[service.rules]]
        name = "post-deploy-health"
        action = "restore"

        [[service.rules]]
        name = "slow-no-deploy"
        action = "restart"

        [[service.rules]]
        name = "process-down"
        action = "alert"
        """,
    )
    rules = {rule.name: rule for rule in effective_rules(service)}  # type: ignore[arg-type]
    assert [rung.kind for rung in rules["post-deploy-health"].ladder] == ["restore", "hold"]
    assert [rung.kind for rung in rules["slow-no-deploy"].ladder] == ["restart", "hold"]
    assert not rules["process-down"].acts


def test_new_rule_is_added(tmp_path: Path) -> None:
    service = service_with_rules(
        tmp_path,
        """
        [[service.rules]]
        name = "very-slow"
        signal = "latency_high"
        threshold = 10
        for = "2m"
        action = "restart"
        """,
    )
    rules = {rule.name: rule for rule in effective_rules(service)}  # type: ignore[arg-type]
    assert rules["very-slow"].signal == "latency_high"
    assert rules["very-slow"].threshold == 10
    assert [rung.kind for rung in rules["very-slow"].ladder] == ["restart", "hold"]


def test_with_replication_each_restore_goes_to_the_replica_first_then_the_local_backup(tmp_path: Path) -> None:
    plain = {rule.name: rule for rule in effective_rules(service_with_rules(tmp_path, ""))}  # type: ignore[arg-type]
    replicated = service_with_rules(
        tmp_path, 'replication = { replicas = [{ type = "file", path = "/mnt/offsite" }] }\n'
    )
    rules = {rule.name: rule for rule in effective_rules(replicated)}  # type: ignore[arg-type]
    assert rules["integrity-failed"].ladder == (
        Rung("restore", "replica:proven_good"),
        Rung("restore", "newest_verified"),
        Rung("hold"),
    )
    assert rules["data-loss"].ladder[:2] == (
        Rung("restore", "replica:pre_deploy", block_revision=True),
        Rung("restore", "pre_deploy", block_revision=True),
    )
    assert [rung.target for rung in rules["migration-failed"].ladder] == [
        "pre_deploy",
        "replica:pre_deploy",
        "pre_deploy",
        None,
    ]
    # Rules without a restore are untouched, and without replication nothing changes.
    assert rules["health-failing"].ladder == plain["health-failing"].ladder
    assert plain["integrity-failed"].ladder == (Rung("restore", "newest_verified"), Rung("hold"))
    assert "replica's last moment proven good" in rules["integrity-failed"].ladder[0].describe()
