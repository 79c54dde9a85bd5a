"""The shipped Prometheus files, checked by Debian's promtool (no server): the configuration and the rules
are valid, and the alerts' unit tests (deploy/prometheus/alerts.test.yml) pass.

A real Prometheus scraping the services with this configuration is
tests/integration/deploy/test_prometheus.py.
"""

from __future__ import annotations

import yaml

from tests.support.prometheus import promtool
from tests.support.promql import ALERT_NAMES, PROMETHEUS_DIR

RULE_TESTS = PROMETHEUS_DIR / "alerts.test.yml"


def test_promtool_checks_the_shipped_configuration_and_its_rules() -> None:
    promtool("check", "config", PROMETHEUS_DIR / "prometheus.yml")


def test_promtool_checks_the_alert_rules() -> None:
    promtool("check", "rules", PROMETHEUS_DIR / "alerts.yml")


def test_alert_rule_unit_tests_pass() -> None:
    promtool("test", "rules", RULE_TESTS.name, cwd=PROMETHEUS_DIR)


def test_every_alert_is_tested_firing_and_quiet() -> None:
    """promtool runs what the file says; this checks that it says something for every alert, both ways."""
    alerts = set(ALERT_NAMES)
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fires = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts - fires == set(), f"never tested firing: {sorted(alerts - fires)}"
    assert alerts - quiet == set(), f"never tested quiet: {sorted(alerts - quiet)}"
