"""Ops artefacts: Prometheus config, recording rules and alerts, and the Grafana dashboard.

The Prometheus checks run Debian's ``promtool`` (package ``prometheus``); a missing
promtool FAILS these tests, it never skips them. The dashboard checks scrape the
service's own ``Metrics`` registry in-process, watching a real core with callers
waiting, a connected call, an abandon and an overflow (``_live.busy_centre``), so a
panel or rule that names a metric, a label or a label value the service does not
export is caught here rather than as an empty panel in the ops room; and the alert
conditions are evaluated by promtool on series scraped from that real state.

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

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ._live import busy_centre

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
# Gauges and counters that runtime.py adds to the registry through Metrics.watch(...).
RUNTIME_GAUGES = frozenset({"siaga_outbox_pending", "siaga_ari_connected", "siaga_inbox_depth"})
RUNTIME_COUNTERS = frozenset({"siaga_ari_reconnects_total"})
# Series that Prometheus itself makes.
PROMETHEUS_BUILTINS = frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})
# Labels Prometheus attaches to every scraped series (prometheus.yml: job, instance and
# the static ``service`` label).
TARGET_LABELS = frozenset({"job", "instance", "service"})
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
    """The gauge and counter names runtime.py passes to ``Metrics.watch`` (from its source)."""
    source = RUNTIME_SRC.read_text(encoding="utf-8")
    return set(re.findall(r"\"(siaga_[a-z0-9_]+)\"\s*:", source))


def runtime_counter_names() -> set[str]:
    """The names runtime.py passes to ``Metrics.watch`` as counters (the ``counters=`` dict)."""
    source = RUNTIME_SRC.read_text(encoding="utf-8")
    match = re.search(r"counters=lambda: \{(.*?)\}", source, flags=re.DOTALL)
    return set(re.findall(r"\"(siaga_[a-z0-9_]+)\"\s*:", match.group(1))) if match else set()


def exported_series_names() -> set[str]:
    """Every series name the service can export: its Metrics registry plus runtime gauges."""
    text = busy_centre().scrape()
    names: set[str] = set()
    for match in re.finditer(r"^# TYPE (\S+) (\S+)$", text, flags=re.MULTILINE):
        names |= expand_family(match.group(1), match.group(2))
    return names | runtime_gauge_names()


def exported_labels() -> dict[str, dict[str, set[str]]]:
    """For each series name of a scrape of real state: its label names and their values."""
    labels: dict[str, dict[str, set[str]]] = {}
    for family in text_string_to_metric_families(busy_centre().scrape()):
        for sample in family.samples:
            found = labels.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                found.setdefault(key, set()).add(value)
    return labels


def selectors(expr: str) -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """Each ``name{matchers}`` in a PromQL expression: the name and its (label, op, value)."""
    for match in re.finditer(r"(?<![\w:])([A-Za-z_][\w:]*)\{([^}]*)\}", expr):
        matchers = re.findall(r'(\w+)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"', match.group(2))
        yield match.group(1), matchers


def grouped_labels(expr: str) -> Iterator[tuple[str, list[str]]]:
    """Each ``by (labels)`` applied straight to one series (through functions such as rate)."""
    pattern = r"\bby\s*\(([^)]*)\)\s*\((?:\s*[a-z_]+\()*\s*([A-Za-z_][\w:]*)"
    for match in re.finditer(pattern, expr):
        yield match.group(2), [name.strip() for name in match.group(1).split(",") if name.strip()]


def label_problems(exprs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Label names and literal label values that the service's series do not carry."""
    exported = exported_labels()
    problems: dict[str, list[str]] = {}
    for where, expr in exprs:
        found: list[str] = []
        for name, matchers in selectors(expr):
            if ":" in name or name in PROMETHEUS_BUILTINS:
                continue  # recording rules and Prometheus's own series
            carried = exported.get(name, {})
            for label, op, value in matchers:
                if label in TARGET_LABELS:
                    continue
                if label not in carried:
                    found.append(f"{name} has no label {label!r}")
                elif op == "=" and value not in carried[label] and "$" not in value:
                    found.append(f"{name}{{{label}={value!r}}} is never exported")
        for name, labels in grouped_labels(expr):
            if ":" in name or name in PROMETHEUS_BUILTINS:
                continue
            carried = exported.get(name, {})
            found += [
                f"{name} has no label {label!r} to group by"
                for label in labels
                if label not in carried and label not in TARGET_LABELS
            ]
        if found:
            problems[where] = found
    return problems


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


# --------------------------------------------------------------------------- real state


def series_key(name: str, labels: dict[str, str]) -> str:
    """A series in promtool's input notation: ``name{label="value",...}``."""
    if not labels:
        return name
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


class TestRealScrape:
    """Scrapes of a real core's state pass promtool and make the queue alerts fire."""

    def test_scrape_passes_promtool_check_metrics(self) -> None:
        """`promtool check metrics` finds no problem in a scrape of a busy centre."""
        proc = subprocess.run(
            [find_promtool(), "check", "metrics"],
            input=busy_centre().scrape(),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr

    def test_queue_alert_conditions_hold_on_real_series(self, tmp_path: Path) -> None:
        """Series scraped every 5 s from a centre where callers wait and nobody is free
        satisfy the conditions of SiagaCallerWaitingTooLong and SiagaNoTakerFreeWhileCallersWait,
        with the exact waits and count (promtool evaluates the rules file's own expressions)."""
        live = busy_centre()  # t = 70 s: c3 waits in main since 30 s, c2 in backup since 5 s
        wanted = ("siaga_callers_waiting", "siaga_oldest_wait_seconds", "siaga_takers")
        history: dict[str, list[float]] = {}
        for step in range(7):  # scrapes at 70, 75, ... 100 s, as Prometheus would take them
            live.advance(70.0 + 5 * step)
            for family in text_string_to_metric_families(live.scrape()):
                for sample in family.samples:
                    if sample.name in wanted:
                        key = series_key(sample.name, sample.labels)
                        history.setdefault(key, []).append(sample.value)
        blocks = alert_blocks()
        waiting_too_long = rule_exprs(blocks["SiagaCallerWaitingTooLong"])[0]
        nobody_free = rule_exprs(blocks["SiagaNoTakerFreeWhileCallersWait"])[0]
        test = {
            "rule_files": [str(RULES)],
            "evaluation_interval": "5s",
            "tests": [
                {
                    "interval": "5s",
                    "input_series": [
                        {"series": key, "values": " ".join(f"{v:g}" for v in values)}
                        for key, values in history.items()
                    ],
                    "promql_expr_test": [
                        {
                            "expr": waiting_too_long,
                            "eval_time": "15s",  # t = 85 s (c3 overflows at 90 s)
                            "exp_samples": [
                                {"labels": '{queue="main"}', "value": 55},
                                {"labels": '{queue="backup"}', "value": 80},
                            ],
                        },
                        {
                            "expr": nobody_free,
                            "eval_time": "15s",
                            "exp_samples": [{"labels": "{}", "value": 2}],
                        },
                    ],
                }
            ],
        }
        path = tmp_path / "real-state.test.yml"
        path.write_text(json.dumps(test))  # JSON is YAML
        proc = subprocess.run(
            [find_promtool(), "test", "rules", str(path)],
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
        assert runtime_gauge_names() >= RUNTIME_GAUGES | RUNTIME_COUNTERS

    def test_runtime_totals_are_registered_as_counters(self) -> None:
        """Every ``_total`` name runtime.py registers is a counter, never a gauge."""
        totals = {name for name in runtime_gauge_names() if name.endswith("_total")}
        assert totals >= RUNTIME_COUNTERS
        assert runtime_counter_names() == totals

    def test_rules_use_only_exported_labels(self) -> None:
        """Every label a rule selects or groups by is carried by the series it names."""
        exprs = [(f"rule {n}", e) for n, e in enumerate(rule_exprs(RULES.read_text()))]
        problems = label_problems(exprs)
        assert not problems, f"rules use labels the service does not export: {problems}"

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

    def test_panels_use_only_exported_labels(self, dashboard: dict[str, Any]) -> None:
        """Every label a panel selects or groups by is carried by the series it names."""
        problems = label_problems(panel_exprs(dashboard))
        assert not problems, f"panels use labels the service does not export: {problems}"

    def test_abandon_wait_panel_follows_the_queue_variable(self, dashboard: dict[str, Any]) -> None:
        """The abandon-wait panel is filtered by the queue chosen at the top, like its row."""
        exprs = [e for _, e in panel_exprs(dashboard) if "siaga_abandon_wait_seconds" in e]
        assert exprs
        assert all('siaga_abandon_wait_seconds_bucket{queue=~"$queue"}' in e for e in exprs)

    def test_process_panels_read_the_service_job(self, dashboard: dict[str, Any]) -> None:
        """The service's memory and open-FD panels read its process series, not Prometheus's."""
        exprs = " ".join(e for _, e in panel_exprs(dashboard))
        for name in ("process_resident_memory_bytes", "process_open_fds"):
            assert f'{name}{{job="siaga-pbx"}}' in exprs, name

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
