"""Ops artefacts: Prometheus config, recording rules and alerts, and the Grafana dashboard.

The Prometheus checks run Debian's ``promtool`` (package ``prometheus``); a missing
promtool FAILS these tests, it never skips them. The dashboard checks build the
service's own ``Metrics`` registry in-process, so a panel or rule that names a metric
the service does not export is caught here rather than as an empty panel in the ops room.

The rules file is read with a few regular expressions rather than a YAML parser (the
project does not depend on one): its header says which two ``expr`` forms it uses.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import prometheus_client
import pytest

from siaga_pbx.adapters.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
PROM_DIR = REPO / "ops" / "prometheus"
PROM_CONFIG = PROM_DIR / "prometheus.yml"
RULES = PROM_DIR / "siaga-112-rules.yml"
RULES_TEST = PROM_DIR / "siaga-112-rules.test.yml"
GRAFANA_DIR = REPO / "ops" / "grafana"
DASHBOARD = GRAFANA_DIR / "siaga-112-dashboard.json"
PROVISIONING = GRAFANA_DIR / "provisioning"
RUNTIME_SRC = REPO / "src" / "siaga_pbx" / "runtime.py"
COMPOSE = REPO / "docker" / "compose.yaml"

INSTALL_HINT = "apt-get install -y --no-install-recommends prometheus"
# Gauges that runtime.py adds to the registry through Metrics.watch(extra=...).
RUNTIME_GAUGES = frozenset(
    {
        "siaga_outbox_pending",
        "siaga_ari_reconnects_total",
        "siaga_ari_connected",
        "siaga_inbox_depth",
    }
)
# Series that Prometheus itself makes.
PROMETHEUS_BUILTINS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"and", "or", "unless", "offset", "inf", "nan", "atan2"}
)
DS_REF = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


# --------------------------------------------------------------------------- helpers


def find_promtool() -> str:
    """The path of promtool; fails the calling test (never skips) when it is missing."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: it comes from Debian's `prometheus` package "
            f"({INSTALL_HINT}); scripts/system-deps.sh should install it"
        )
    return path


def run_promtool(*args: str) -> str:
    """Run promtool in ops/prometheus/ and return its output; fail the test on a non-zero exit."""
    proc = subprocess.run(
        [find_promtool(), *args],
        cwd=PROM_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def expand_family(name: str, kind: str) -> set[str]:
    """The series names that one exposition-format metric family produces."""
    if kind == "counter":
        base = name.removesuffix("_total")
        return {f"{base}_total", f"{base}_created"}
    if kind == "histogram":
        return {f"{name}_bucket", f"{name}_count", f"{name}_sum", f"{name}_created"}
    if kind == "summary":
        return {name, f"{name}_count", f"{name}_sum", f"{name}_created"}
    return {name}


def runtime_gauge_names() -> set[str]:
    """The gauge names runtime.py passes to ``Metrics.watch`` (read from its source)."""
    source = RUNTIME_SRC.read_text(encoding="utf-8")
    return set(re.findall(r"\"(siaga_[a-z0-9_]+)\"\s*:", source))


def exported_series_names() -> set[str]:
    """Every series name the service can export: its Metrics registry plus runtime gauges."""
    metrics = Metrics()
    metrics.watch(lambda: {"queues": [], "takers": [], "callbacks": []}, dict)
    text = prometheus_client.generate_latest(metrics.registry).decode()
    names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names |= expand_family(match.group(1), match.group(2))
    return names | runtime_gauge_names()


def promql_series_names(expr: str) -> set[str]:
    """Metric and recording-rule names used in a PromQL expression (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names: set[str] = set()
    for match in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", text):
        name, call = match.groups()
        if call is None and name.lower() not in PROMQL_WORDS:
            names.add(name)
    return names


def rule_exprs(text: str) -> list[str]:
    """Every ``expr`` of a rules file, in the one-line or ``|`` block form."""
    lines = text.splitlines()
    exprs: list[str] = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if match is None:
            continue
        indent, rest = len(match.group(1)), match.group(2).strip()
        if rest not in {"|", "|-", ">", ">-"}:
            exprs.append(rest)
            continue
        block: list[str] = []
        for follow in lines[i + 1 :]:
            if follow.strip() and len(follow) - len(follow.lstrip()) <= indent:
                break
            block.append(follow.strip())
        exprs.append(" ".join(part for part in block if part))
    return exprs


def recording_rule_names() -> set[str]:
    """The ``record:`` names of the rules file."""
    return set(re.findall(r"^\s*- record:\s*(\S+)\s*$", RULES.read_text(), flags=re.MULTILINE))


def alert_blocks() -> dict[str, str]:
    """Each alert's name and the text of its rule."""
    parts = re.split(r"^\s*- alert:\s*", RULES.read_text(encoding="utf-8"), flags=re.MULTILINE)
    blocks: dict[str, str] = {}
    for part in parts[1:]:
        name, _, body = part.partition("\n")
        # a block ends where the next rule or group begins
        body = re.split(r"^\s*- (?:record|name):", body, flags=re.MULTILINE)[0]
        blocks[name.strip()] = body
    return blocks


def load_dashboard() -> dict[str, Any]:
    """The dashboard JSON as a dict."""
    data = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those inside collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def panel_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title/refId, PromQL) for every panel target and annotation query."""
    found = [
        (f"{panel['title']}/{target['refId']}", target["expr"])
        for panel in all_panels(dashboard)
        for target in panel.get("targets", [])
    ]
    found += [
        (f"annotation {a['name']}", a["expr"])
        for a in dashboard["annotations"]["list"]
        if a.get("expr")
    ]
    return found


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's variables with values Prometheus accepts."""
    return expr.replace("$__rate_interval", "1m").replace("$queue", ".*")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """Series names the service exports."""
    return exported_series_names()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    """The parsed dashboard."""
    return load_dashboard()


# --------------------------------------------------------------------------- promtool


class TestPromtool:
    """Prometheus config, rules and rule unit tests, checked by promtool."""

    def test_missing_promtool_fails_instead_of_skipping(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without promtool on PATH the helper fails the test with the package to install."""
        monkeypatch.setenv("PATH", "/nonexistent")
        with pytest.raises(pytest.fail.Exception, match="prometheus"):
            find_promtool()

    def test_config_is_valid(self) -> None:
        """`promtool check config` accepts prometheus.yml and the rules file it loads."""
        output = run_promtool("check", "config", PROM_CONFIG.name)
        assert "1 rule files found" in output

    def test_config_scrapes_the_service_every_5s(self) -> None:
        """prometheus.yml scrapes the service's /metrics on 127.0.0.1:8080 every 5 s."""
        text = PROM_CONFIG.read_text(encoding="utf-8")
        job = text.split("job_name: siaga-pbx", 1)[1].split("- job_name:", 1)[0]
        assert "metrics_path: /metrics" in job
        assert "scrape_interval: 5s" in job
        assert '"127.0.0.1:8080"' in job

    def test_rules_are_valid(self) -> None:
        """`promtool check rules` accepts the recording rules and alerts."""
        output = run_promtool("check", "rules", RULES.name)
        assert "SUCCESS" in output

    def test_rule_unit_tests_pass(self) -> None:
        """`promtool test rules` passes: every alert fires when it should and not otherwise."""
        output = run_promtool("test", "rules", RULES_TEST.name)
        assert "SUCCESS" in output

    def test_dashboard_queries_are_valid_promql(self, tmp_path: Path) -> None:
        """Every dashboard query parses as PromQL (checked as a throw-away rules file)."""
        rules = [
            {"record": f"dashboard_query_{n}", "expr": grafana_to_promql(expr)}
            for n, (_, expr) in enumerate(panel_exprs(load_dashboard()))
        ]
        path = tmp_path / "dashboard-queries.yml"
        path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))
        proc = subprocess.run(
            [find_promtool(), "check", "rules", str(path)],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- rules content


class TestRules:
    """The rules file names only real metrics and every alert is usable by ops."""

    def test_runtime_gauges_are_still_registered(self) -> None:
        """runtime.py still registers the gauges the dashboard and alerts rely on."""
        assert runtime_gauge_names() >= RUNTIME_GAUGES

    def test_rules_use_only_exported_metrics(self, exported: set[str]) -> None:
        """Every rule expression names exported series, recording rules or Prometheus built-ins."""
        known = exported | recording_rule_names() | PROMETHEUS_BUILTINS
        exprs = rule_exprs(RULES.read_text(encoding="utf-8"))
        assert len(exprs) == len(recording_rule_names()) + len(alert_blocks())
        unknown = {name for expr in exprs for name in promql_series_names(expr)} - known
        assert not unknown, f"rules use series the service does not export: {sorted(unknown)}"

    def test_every_alert_explains_itself(self) -> None:
        """Each alert carries a severity and a summary, description and runbook for ops."""
        blocks = alert_blocks()
        assert len(blocks) >= 10
        for name, body in blocks.items():
            assert re.search(r"severity: (critical|warning)\b", body), name
            for key in ("summary", "description", "runbook"):
                assert re.search(rf"^\s+{key}: \S", body, flags=re.MULTILINE), f"{name}: {key}"

    def test_required_alerts_exist(self) -> None:
        """The alerts the ops room asked for are all defined."""
        required = {
            "SiagaAnswerSlaBreach",
            "SiagaCallerWaitingTooLong",
            "SiagaNoTakerFreeWhileCallersWait",
            "SiagaAriDisconnected",
            "SiagaOutboxNotDraining",
            "SiagaOutboxHigh",
            "SiagaAbandonRateHigh",
            "SiagaCallbacksPendingTooLong",
            "SiagaServiceDown",
        }
        assert required <= set(alert_blocks())

    def test_every_alert_is_unit_tested_both_ways(self) -> None:
        """The promtool test file shows each alert firing and, somewhere, staying quiet."""
        text = RULES_TEST.read_text(encoding="utf-8")
        fires = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n\s+- exp_labels", text))
        quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", text))
        alerts = set(alert_blocks())
        assert alerts - fires == set(), "alerts never shown firing"
        assert alerts - quiet == set(), "alerts never shown staying quiet"


# --------------------------------------------------------------------------- dashboard


class TestDashboard:
    """The Grafana dashboard parses and queries only what the service exports."""

    def test_dashboard_parses_with_expected_shape(self, dashboard: dict[str, Any]) -> None:
        """The JSON parses, targets schemaVersion 39 and has a stable uid and title."""
        assert dashboard["schemaVersion"] == 39
        assert dashboard["uid"] == "siaga-112-ops"
        assert dashboard["title"]
        ids = [panel["id"] for panel in all_panels(dashboard)]
        assert len(ids) == len(set(ids)), "panel ids must be unique"

    def test_datasource_is_an_input_and_a_variable(self, dashboard: dict[str, Any]) -> None:
        """Every query uses ${DS_PROMETHEUS}, offered both as an import input and a variable."""
        assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["DS_PROMETHEUS"]["type"] == "datasource"
        assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
        for panel in all_panels(dashboard):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == DS_REF, panel["title"]
            for target in panel["targets"]:
                assert target["datasource"] == DS_REF, panel["title"]

    def test_queue_variable_comes_from_an_exported_metric(
        self, dashboard: dict[str, Any], exported: set[str]
    ) -> None:
        """The queue variable lists queues from a gauge the service always exports."""
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        queue = variables["queue"]
        assert queue["multi"] is True
        assert queue["includeAll"] is True
        match = re.fullmatch(r"label_values\((\w+), queue\)", queue["definition"])
        assert match is not None
        assert match.group(1) in exported

    def test_panels_use_only_exported_metrics(
        self, dashboard: dict[str, Any], exported: set[str]
    ) -> None:
        """Every panel query names exported series, recording rules or Prometheus built-ins."""
        known = exported | recording_rule_names() | PROMETHEUS_BUILTINS
        exprs = panel_exprs(dashboard)
        assert len(exprs) >= 30
        problems = {
            where: sorted(promql_series_names(expr) - known)
            for where, expr in exprs
            if promql_series_names(expr) - known
        }
        assert not problems, f"panels query series the service does not export: {problems}"

    def test_recording_rules_used_in_panels_exist(self, dashboard: dict[str, Any]) -> None:
        """Every recording-rule name (level:metric:op) in a panel is defined in the rules file."""
        records = recording_rule_names()
        used = {
            name
            for _, expr in panel_exprs(dashboard)
            for name in promql_series_names(expr)
            if ":" in name
        }
        assert used, "the dashboard should use the recorded SLA series"
        assert used <= records, f"undefined recording rules: {sorted(used - records)}"

    def test_sla_panels_cover_the_standards(self, dashboard: dict[str, Any]) -> None:
        """The SLA panels read the 10 s, 15 s and 20 s buckets over 1 h and 24 h."""
        exprs = " ".join(expr for _, expr in panel_exprs(dashboard))
        for window in ("1h", "24h"):
            for le in ("10.0", "15.0", "20.0"):
                assert f'rate{window}{{queue=~"$queue", le="{le}"}}' in exprs, (window, le)

    def test_panels_have_titles_descriptions_and_do_not_overlap(
        self, dashboard: dict[str, Any]
    ) -> None:
        """Each panel explains itself and no two panels cover the same grid cell."""
        taken: dict[tuple[int, int], str] = {}
        for panel in all_panels(dashboard):
            assert panel["title"]
            if panel["type"] != "row":
                assert panel.get("description"), panel["title"]
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24, panel["title"]
            for x in range(pos["x"], pos["x"] + pos["w"]):
                for y in range(pos["y"], pos["y"] + pos["h"]):
                    assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                    taken[(x, y)] = panel["title"]


class TestProvisioning:
    """Grafana provisioning files load the datasource and this dashboard."""

    def test_datasource_is_provisioned_as_default_prometheus(self) -> None:
        """The provisioned datasource is Prometheus and the default one."""
        text = (PROVISIONING / "datasources" / "siaga-prometheus.yaml").read_text()
        assert "apiVersion: 1" in text
        assert "type: prometheus" in text
        assert "isDefault: true" in text

    def test_dashboard_provider_path_is_mounted_by_compose(self) -> None:
        """The provider's path is where docker/compose.yaml mounts the dashboard JSON."""
        text = (PROVISIONING / "dashboards" / "siaga-112.yaml").read_text()
        match = re.search(r"^\s+path:\s*(\S+)\s*$", text, flags=re.MULTILINE)
        assert match is not None
        compose = COMPOSE.read_text(encoding="utf-8")
        assert f"{DASHBOARD.name}:{match.group(1)}/{DASHBOARD.name}" in compose
