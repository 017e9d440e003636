#!/usr/bin/env python3
"""Every PromQL expression of deploy/prometheus (rules) and deploy/grafana (dashboards)
names only metrics NexusFlow exports, and every exported name follows the convention.

The exported names are read from the source tree: each family registered with
prometheus-cpp (`Build{Counter,Gauge,Histogram}()...Name("nexusflow_...")`) or as a
lock-free histogram (`NewLatencyHistogram("nexusflow_...", ...)`). A histogram also
exports `<name>_bucket`, `_sum` and `_count`; recording rules export their `record` names.

  python3 tests/prometheus/metric_names_test.py [REPO_ROOT]
"""
import glob
import json
import os
import re
import sys
import unittest

import yaml

ROOT = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))

# Metrics a rule or dashboard may name before their registration is in the source tree
# (the test prints which ones it finds there, so this list only shrinks). None now.
PENDING_METRICS = {}

# Series Prometheus makes itself: scrape health and the alerts' state.
PROMETHEUS_SERIES = {"up", "ALERTS", "ALERTS_FOR_STATE", "scrape_duration_seconds", "scrape_samples_scraped"}

SUBSYSTEMS = {"gateway", "grpc", "auth", "routing", "ratelimit", "billing", "connector"}
SOURCE_DIRS = ("cmd", "gateway", "libs", "services")

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
            "bool", "offset", "inf", "nan", "atan2"}


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def exported_metrics(root=ROOT):
    """{name: type} of every metric family registered in the C++ sources (tests excluded)."""
    found = {}
    builder = re.compile(r"Build(Counter|Gauge|Histogram|Summary)\s*\(\s*\)")
    name = re.compile(r'\.Name\(\s*"(nexusflow_[a-z0-9_]+)"')
    latency = re.compile(r'NewLatencyHistogram\(\s*"(nexusflow_[a-z0-9_]+)"')
    for d in SOURCE_DIRS:
        for path in glob.glob(os.path.join(root, d, "**", "*.cc"), recursive=True) + \
                glob.glob(os.path.join(root, d, "**", "*.h"), recursive=True):
            if "/tests/" in path:
                continue
            text = read(path)
            for m in name.finditer(text):
                kinds = builder.findall(text, 0, m.start())
                found[m.group(1)] = kinds[-1].lower() if kinds else "unknown"
            for m in latency.finditer(text):
                found[m.group(1)] = "histogram"
    return found


def promql_metric_names(expr):
    """The metric (and recording rule) names an expression selects."""
    e = re.sub(r"\$__\w+", "5m", expr)              # Grafana's interval variables
    e = re.sub(r"\$\{(\w+)(:\w+)?\}|\$(\w+)", "x", e)  # other dashboard variables
    e = re.sub(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'', '""', e)  # string literals
    e = re.sub(r"\{[^{}]*\}", " ", e)                # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)              # ranges and subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", " ", e)
    e = re.sub(r"\boffset\s+-?\w+", " ", e)
    names = set()
    for m in re.finditer(r"\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[A-Za-z_:][A-Za-z0-9_:]*", e):
        tok = m.group(0)
        if tok[0].isdigit() or tok.lower() in KEYWORDS:
            continue
        if re.match(r"\s*\(", e[m.end():]):          # a function
            continue
        names.add(tok)
    return names


def rule_files(root=ROOT):
    return sorted(glob.glob(os.path.join(root, "deploy", "prometheus", "*.rules.yml")))


def dashboard_files(root=ROOT):
    return sorted(glob.glob(os.path.join(root, "deploy", "grafana", "*.json")))


def expressions(root=ROOT):
    """(where, expression) for every rule and every dashboard query."""
    out = []
    for path in rule_files(root):
        for group in yaml.safe_load(read(path))["groups"]:
            for rule in group["rules"]:
                out.append((f"{os.path.relpath(path, root)}: {rule.get('record') or rule.get('alert')}", rule["expr"]))
    for path in dashboard_files(root):
        dash = json.loads(read(path))
        where = os.path.relpath(path, root)

        def panels(ps):
            for p in ps:
                yield p
                yield from panels(p.get("panels", []))

        for p in panels(dash.get("panels", [])):
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((f"{where}: {p['title']}", t["expr"]))
        for v in dash.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\)\s*", q)
            out.append((f"{where}: variable {v['name']}", m.group(1) if m else q))
    return out


def recorded_names(root=ROOT):
    names = set()
    for path in rule_files(root):
        for group in yaml.safe_load(read(path))["groups"]:
            names |= {r["record"] for r in group["rules"] if "record" in r}
    return names


def resolves(name, metrics, records):
    if name in metrics or name in records or name in PROMETHEUS_SERIES:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return base != name and metrics.get(base) in ("histogram", "summary")


class MetricNamesTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.source = exported_metrics()
        cls.metrics = dict(PENDING_METRICS, **cls.source)
        cls.records = recorded_names()
        landed = sorted(set(PENDING_METRICS) & set(cls.source))
        if landed:
            print(f"now registered in the source (drop from PENDING_METRICS): {', '.join(landed)}", file=sys.stderr)

    def test_source_scan_finds_the_registered_families(self):
        self.assertEqual(self.source.get("nexusflow_gateway_chat_requests_total"), "counter")
        self.assertEqual(self.source.get("nexusflow_gateway_active_streams"), "gauge")
        self.assertEqual(self.source.get("nexusflow_gateway_time_to_first_token_seconds"), "histogram")
        self.assertEqual(self.source.get("nexusflow_connector_upstream_first_byte_seconds"), "histogram")
        self.assertGreaterEqual(len(self.source), 25)

    def test_extractor_sees_names_not_functions_labels_or_variables(self):
        self.assertEqual(
            promql_metric_names('sum by (model, le) (rate(a_seconds_bucket{model=~"$model", le="10"}[$__rate_interval]))'
                                ' / on (model) group_left b:rec:rate5m > bool 1e9 unless c offset 5m'),
            {"a_seconds_bucket", "b:rec:rate5m", "c"})
        self.assertEqual(promql_metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))"), {"x_bucket"})

    def test_every_expression_names_only_exported_metrics(self):
        exprs = expressions()
        self.assertGreater(len(exprs), 60, "rules and dashboards were found")
        unknown = []
        for where, expr in exprs:
            names = promql_metric_names(expr)
            if not names:
                unknown.append(f"{where}: selects no metric: {expr}")
            for n in sorted(names):
                if not resolves(n, self.metrics, self.records):
                    unknown.append(f"{where}: {n}")
        self.assertEqual(unknown, [], "names not exported by the code")

    def test_recording_rules_are_used_and_their_inputs_exported(self):
        used = set()
        for _, expr in expressions():
            used |= promql_metric_names(expr)
        self.assertEqual(sorted(self.records - used), [], "recording rules nothing reads")

    def test_exported_names_follow_the_convention(self):
        bad = []
        for name, kind in sorted(self.metrics.items()):
            parts = name.split("_")
            if len(parts) < 3 or parts[0] != "nexusflow" or parts[1] not in SUBSYSTEMS:
                bad.append(f"{name}: not nexusflow_<subsystem>_<name>")
            if kind == "counter" and not name.endswith("_total"):
                bad.append(f"{name}: a counter must end in _total")
            if kind != "counter" and name.endswith("_total"):
                bad.append(f"{name}: only counters end in _total")
            if kind == "unknown":
                bad.append(f"{name}: type not found")
            if re.search(r"_(ms|milliseconds|us|microseconds|minutes)(_|$)", name):
                bad.append(f"{name}: durations are in seconds")
        self.assertEqual(bad, [])

    def test_every_dashboard_is_valid_and_uses_the_datasource_variable(self):
        files = dashboard_files()
        self.assertEqual(sorted(os.path.basename(f) for f in files),
                         ["billing.json", "models.json", "overview.json", "providers.json", "services.json", "tasks.json"])
        uids = set()
        for path in files:
            dash = json.loads(read(path))
            self.assertNotIn(dash["uid"], uids)
            uids.add(dash["uid"])
            for p in dash["panels"]:
                if p["type"] != "row":
                    self.assertEqual(p["datasource"]["uid"], "${datasource}", f"{path}: {p['title']}")


if __name__ == "__main__":
    unittest.main(verbosity=2)
