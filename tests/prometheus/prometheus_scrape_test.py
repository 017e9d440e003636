#!/usr/bin/env python3
"""Debian's Prometheus scrapes NexusFlow in split mode (tools/run --split: one process per
target, each with its /metrics), with the rules of deploy/prometheus loaded. A known load
goes through the gateway: chat requests in the OpenAI and Anthropic protocols, some
streamed, with token counts the mock provider's rule fixes, and one the upstream fails.
PromQL through Prometheus's HTTP API must then count exactly that load, in the gateway,
billing-ledger and provider-connector processes alike; every rule must evaluate cleanly.

Fixed ports (22080, 22100, 22090-22095, 22301-22305, Prometheus 22990); everything this
test starts it stops, and it checks that the ports are free again.

  NF_BUILD_DIR=build python3 tests/prometheus/prometheus_scrape_test.py
"""
import decimal
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HTTP_PORT, MOCK_PORT, GRPC_PORT, METRICS_PORT, PROM_PORT = 22080, 22100, 22090, 22300, 22990
TARGETS = ["auth", "routing", "rate-limiter", "billing-ledger", "provider-connector"]  # tools/run's order
PORTS = [HTTP_PORT, MOCK_PORT, PROM_PORT] + [GRPC_PORT + i for i in range(0, 6)] + [METRICS_PORT + i for i in range(1, 6)]
BASE = f"http://127.0.0.1:{HTTP_PORT}"
PROM = f"http://127.0.0.1:{PROM_PORT}"
DEMO_KEY = "sk-nf-promtest0123456789abcdef0123456789"
START_TIMEOUT = int(os.environ.get("NEXUSFLOW_PROM_START_TIMEOUT", "300"))  # tools/run may build first
SCRAPE_TIMEOUT = 90

# The load: (protocol, model, streamed, reply words, upstream status forced by the mock).
LOAD = [
    ("openai", "qwen3-max", False, 5, None),
    ("openai", "qwen3-max", False, 9, None),
    ("openai", "qwen3-max", True, 12, None),
    ("openai", "qwen3-max", True, 3, None),
    ("openai", "deepseek-v4", False, 7, None),
    ("openai", "deepseek-v4", True, 10, None),
    ("anthropic", "claude-haiku-4-5", False, 8, None),
    ("anthropic", "claude-haiku-4-5", True, 4, None),
    ("openai", "qwen3-max", False, 6, 500),
]
FORBIDDEN_LABELS = {"key", "key_id", "api_key", "account", "account_id", "request_id", "hold_id", "lease_id"}


def load_yaml(path):
    with open(path) as f:
        return yaml.safe_load(f)


def write_yaml(path, doc):
    with open(path, "w") as f:
        yaml.safe_dump(doc, f)


def port_busy(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def http(method, url, body=None, headers=None, timeout=30):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def sse_data(text):
    """The JSON payloads of a server-sent event stream."""
    out = []
    for line in text.splitlines():
        if line.startswith("data:"):
            payload = line[5:].strip()
            if payload and payload != "[DONE]":
                out.append(json.loads(payload))
    return out


def mock_input_tokens(text):
    """The mock's prompt count for one user message of ASCII text (tools/mock-provider/README.md)."""
    return 4 + math.ceil(len(text) / 4)


def nano_per_token(usd_per_million):
    return decimal.Decimal(usd_per_million) * 1000  # USD per 1e6 tokens -> nano-USD per token


class PrometheusScrapeTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.run_proc = cls.prom_proc = None
        cls.tmp = tempfile.mkdtemp(prefix="nexusflow-prom-")
        busy = [p for p in PORTS if port_busy(p)]
        if busy:
            raise RuntimeError(f"ports already in use: {busy}")
        try:
            cls.start_nexusflow()
            cls.start_prometheus()
            cls.wait_targets_up()
            cls.expected = cls.send_load()
        except BaseException:
            cls.stop_all()
            raise

    @classmethod
    def tearDownClass(cls):
        problems = cls.stop_all()
        if problems:
            raise AssertionError("; ".join(problems))

    # --- starting and stopping --------------------------------------------------------

    @classmethod
    def start_nexusflow(cls):
        env = dict(os.environ,
                   NEXUSFLOW_HTTP_PORT=str(HTTP_PORT), NEXUSFLOW_MOCK_PORT=str(MOCK_PORT),
                   NEXUSFLOW_GRPC_PORT=str(GRPC_PORT), NEXUSFLOW_METRICS_PORT=str(METRICS_PORT),
                   NEXUSFLOW_DATA_DIR=os.path.join(cls.tmp, "data"), NEXUSFLOW_DEMO_KEY=DEMO_KEY,
                   NEXUSFLOW_ADMIN_KEY="nf-admin-promtest-0123456789abcdef")
        env.setdefault("NF_BUILD_DIR", os.path.join(ROOT, "build"))
        cls.run_log = open(os.path.join(cls.tmp, "tools-run.log"), "w")
        # Its own session: every process it starts is in its process group.
        cls.run_proc = subprocess.Popen([os.path.join(ROOT, "tools", "run"), "--split"], cwd=ROOT, env=env,
                                        stdin=subprocess.DEVNULL, stdout=cls.run_log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        demo_env = os.path.join(cls.tmp, "data", "demo.env")
        deadline = time.monotonic() + START_TIMEOUT
        while not (os.path.exists(demo_env) and "NEXUSFLOW_DEMO_ACCOUNT=" in cls.read(demo_env)):
            if cls.run_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("tools/run --split did not come up: " + cls.tail(os.path.join(cls.tmp, "tools-run.log")))
            time.sleep(0.5)
        while http("GET", BASE + "/readyz")[0] != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway is not ready")
            time.sleep(0.5)

    @classmethod
    def start_prometheus(cls):
        # The repository's rules, evaluated every second here (30 s in deploy/prometheus).
        rule_files = []
        for name in ("recording.rules.yml", "alerts.rules.yml"):
            rules = load_yaml(os.path.join(ROOT, "deploy", "prometheus", name))
            for g in rules["groups"]:
                g["interval"] = "1s"
            path = os.path.join(cls.tmp, name)
            write_yaml(path, rules)
            rule_files.append(path)
        targets = [{"targets": [f"127.0.0.1:{HTTP_PORT}"], "labels": {"target": "gateway"}}]
        targets += [{"targets": [f"127.0.0.1:{METRICS_PORT + i + 1}"], "labels": {"target": t}} for i, t in enumerate(TARGETS)]
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
                  "rule_files": rule_files,
                  "scrape_configs": [{"job_name": "nexusflow", "static_configs": targets}]}
        config_path = os.path.join(cls.tmp, "prometheus.yml")
        write_yaml(config_path, config)
        cls.prom_log = open(os.path.join(cls.tmp, "prometheus.log"), "w")
        cls.prom_proc = subprocess.Popen(
            ["prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={cls.tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{PROM_PORT}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=cls.prom_log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", PROM + "/-/ready", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            if cls.prom_proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("prometheus did not start: " + cls.tail(os.path.join(cls.tmp, "prometheus.log")))
            time.sleep(0.3)

    @classmethod
    def wait_targets_up(cls):
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        while True:
            targets = json.loads(http("GET", PROM + "/api/v1/targets")[1])["data"]["activeTargets"]
            if len(targets) == 6 and all(t["health"] == "up" for t in targets):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"targets not all up: {[(t['labels'], t['health'], t['lastError']) for t in targets]}")
            time.sleep(0.5)

    @classmethod
    def stop_all(cls):
        """Stops Prometheus and tools/run (and whatever it started); the problems found."""
        problems = []
        for name, proc, grace in (("prometheus", cls.prom_proc, 30), ("tools/run", cls.run_proc, 40)):
            if proc is None:
                continue
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    problems.append(f"{name} did not stop within {grace}s of SIGTERM")
            try:
                os.killpg(proc.pid, 0)
                left = True
            except ProcessLookupError:
                left = False
            if left:
                # The group of the session it was started in: only processes this test started.
                time.sleep(1)
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                    problems.append(f"processes of {name}'s group were still running; killed")
                except ProcessLookupError:
                    pass
            proc.wait()
        for log in ("run_log", "prom_log"):
            if getattr(cls, log, None):
                getattr(cls, log).close()
        busy = [p for p in PORTS if port_busy(p)]
        if busy:
            problems.append(f"ports still listening: {busy}")
        if problems or os.environ.get("NEXUSFLOW_PROM_KEEP") == "1":
            print(f"kept {cls.tmp}", file=sys.stderr)
            for log in ("tools-run.log", "prometheus.log"):
                print(cls.tail(os.path.join(cls.tmp, log)), file=sys.stderr)
        else:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        return problems

    @staticmethod
    def read(path):
        with open(path) as f:
            return f.read()

    @classmethod
    def tail(cls, path, lines=40):
        try:
            return f"--- {path}\n" + "".join(cls.read(path).splitlines(True)[-lines:])
        except OSError:
            return ""

    # --- the load ---------------------------------------------------------------------

    @classmethod
    def send_load(cls):
        """Sends LOAD; what the counters must show afterwards."""
        config = load_yaml(os.path.join(ROOT, "deploy", "local", "nexusflow.yaml"))
        prices = {m["id"]: m["pricing"] for m in config["routing"]["models"]}
        exp = {"requests": {}, "by_stream": {}, "by_code": {}, "tokens": {}, "deployments": {},
               "cost": 0, "ok": 0, "streamed_ok": 0}
        for i, (protocol, model, stream, words, fail) in enumerate(LOAD):
            text = f"[mock:words={words}]{f'[mock:status={fail}]' if fail else ''} metrics probe {i}"
            want_in, want_out = mock_input_tokens(text), words
            code, usage = cls.chat(protocol, model, stream, text)
            key = (protocol, model)
            exp["requests"][key] = exp["requests"].get(key, 0) + 1
            if fail:
                assert code == 502, f"request {i}: HTTP {code}, want 502 (upstream {fail})"
                exp["by_code"]["502"] = exp["by_code"].get("502", 0) + 1
                exp["deployments"][(f"{model}@mock", str(fail))] = exp["deployments"].get((f"{model}@mock", str(fail)), 0) + 1
                continue
            assert code == 200, f"request {i}: HTTP {code}"
            assert usage == (want_in, want_out), f"request {i}: usage {usage}, the mock's rule says {(want_in, want_out)}"
            exp["by_code"]["200"] = exp["by_code"].get("200", 0) + 1
            exp["by_stream"][str(stream).lower()] = exp["by_stream"].get(str(stream).lower(), 0) + 1
            exp["ok"] += 1
            exp["streamed_ok"] += stream
            t = exp["tokens"].setdefault(model, {"input": 0, "output": 0})
            t["input"] += want_in
            t["output"] += want_out
            provider = "mock-anthropic" if model.startswith("claude") else "mock"
            dep = (f"{model}@{provider}", "200")
            exp["deployments"][dep] = exp["deployments"].get(dep, 0) + 1
            p = prices[model]
            exp["cost"] += math.ceil(want_in * nano_per_token(p["input"]) + want_out * nano_per_token(p["output"]))
        return exp

    @classmethod
    def chat(cls, protocol, model, stream, text):
        """(HTTP status, (input tokens, output tokens) the answer reported)."""
        if protocol == "openai":
            body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}
            if stream:
                body["stream_options"] = {"include_usage": True}
            code, out = http("POST", BASE + "/v1/chat/completions", body, {"authorization": f"Bearer {DEMO_KEY}"})
            if code != 200:
                return code, None
            u = [c["usage"] for c in sse_data(out) if c.get("usage")][-1] if stream else json.loads(out)["usage"]
            return code, (u["prompt_tokens"], u["completion_tokens"])
        body = {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": text}], "stream": stream}
        code, out = http("POST", BASE + "/v1/messages", body, {"x-api-key": DEMO_KEY, "anthropic-version": "2023-06-01"})
        if code != 200:
            return code, None
        if not stream:
            u = json.loads(out)["usage"]
            return code, (u["input_tokens"], u["output_tokens"])
        events = sse_data(out)
        start = next(e for e in events if e["type"] == "message_start")["message"]["usage"]
        delta = [e for e in events if e["type"] == "message_delta"][-1]["usage"]
        return code, (start["input_tokens"], delta["output_tokens"])

    # --- PromQL -----------------------------------------------------------------------

    def query(self, promql):
        code, out = http("GET", PROM + "/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        self.assertEqual(code, 200, out)
        return json.loads(out)["data"]["result"]

    def by(self, promql, *labels):
        """{label values: number} of an instant vector."""
        out = {}
        for s in self.query(promql):
            k = tuple(s["metric"].get(l, "") for l in labels)
            out[k if len(k) > 1 else k[0]] = float(s["value"][1])
        return out

    def scalar(self, promql):
        r = self.query(promql)
        return float(r[0]["value"][1]) if r else None

    def eventually(self, checks):
        """Polls until every (PromQL, expected) pair holds (the scrapes catch up), then
        asserts them all: a mismatch after SCRAPE_TIMEOUT is a real one."""
        deadline = time.monotonic() + SCRAPE_TIMEOUT
        while True:
            got = [(name, fn(), want) for name, fn, want in checks]
            if all(g == w for _, g, w in got) or time.monotonic() > deadline:
                break
            time.sleep(1)
        for name, g, w in got:
            with self.subTest(name):
                self.assertEqual(g, w)

    # --- the tests --------------------------------------------------------------------

    def test_edge_counts_every_request_and_token_sent(self):
        exp = self.expected
        ok = exp["ok"]
        self.eventually([
            ("chat requests by protocol and model",
             lambda: self.by("sum by (protocol, model) (nexusflow_gateway_chat_requests_total)", "protocol", "model"),
             {k: float(v) for k, v in exp["requests"].items()}),
            ("chat requests by status code",
             lambda: self.by("sum by (code) (nexusflow_gateway_chat_requests_total)", "code"),
             {k: float(v) for k, v in exp["by_code"].items()}),
            ("answered chat requests, streamed or not",
             lambda: self.by('sum by (stream) (nexusflow_gateway_chat_requests_total{code="200"})', "stream"),
             {k: float(v) for k, v in exp["by_stream"].items()}),
            ("input tokens by model",
             lambda: self.by('sum by (model) (nexusflow_gateway_tokens_total{kind="input"})', "model"),
             {m: float(t["input"]) for m, t in exp["tokens"].items()}),
            ("output tokens by model",
             lambda: self.by('sum by (model) (nexusflow_gateway_tokens_total{kind="output"})', "model"),
             {m: float(t["output"]) for m, t in exp["tokens"].items()}),
            ("chat latency observations",
             lambda: self.scalar("sum(nexusflow_gateway_chat_request_duration_seconds_count)"), float(len(LOAD))),
            ("first-token observations (answered streams)",
             lambda: self.scalar("sum(nexusflow_gateway_time_to_first_token_seconds_count)"), float(exp["streamed_ok"])),
            ("cost acknowledged at the edge, nano-USD",
             lambda: self.scalar("sum(nexusflow_gateway_cost_nano_usd_total)"), float(exp["cost"])),
            ("streams open after the load", lambda: self.scalar("sum(nexusflow_gateway_active_streams)"), 0.0),
            ("chat routes in the HTTP counters",
             lambda: self.scalar('sum(nexusflow_gateway_http_requests_total{route=~"chat_completions|messages"})'),
             float(len(LOAD))),
        ])
        self.assertEqual(ok, sum(exp["by_stream"].values()))
        # What the load looks like from Prometheus, for the log.
        print("\nsum by (model, kind) (nexusflow_gateway_tokens_total) =",
              self.by("sum by (model, kind) (nexusflow_gateway_tokens_total)", "model", "kind"), file=sys.stderr)

    def test_services_count_the_same_load_in_their_own_processes(self):
        exp = self.expected
        ok = float(exp["ok"])
        self.eventually([
            ("billing: settlements charged", lambda: self.scalar('sum(nexusflow_billing_settlements_total{outcome="charged"})'), ok),
            ("billing: nano-USD charged", lambda: self.scalar("sum(nexusflow_billing_charged_nano_usd_total)"), float(exp["cost"])),
            ("billing: holds", lambda: self.scalar('sum(nexusflow_billing_reservations_total{outcome="held"})'), float(len(LOAD))),
            ("billing: the failed request's hold released",
             lambda: self.scalar('sum(nexusflow_billing_hold_releases_total{reason="released"})'), float(len(LOAD) - exp["ok"])),
            ("connector: upstream attempts by deployment and outcome",
             lambda: self.by("sum by (deployment, outcome) (nexusflow_connector_upstream_requests_total)", "deployment", "outcome"),
             {k: float(v) for k, v in exp["deployments"].items()}),
            ("connector: attempt durations",
             lambda: self.scalar("sum(nexusflow_connector_upstream_duration_seconds_count)"), float(len(LOAD))),
            ("gRPC: Chat served by the connector process",
             lambda: self.by('sum by (target, code) (nexusflow_grpc_server_handled_total{method="Chat"})', "target", "code"),
             {("provider-connector", "OK"): float(len(LOAD))}),
            ("gRPC: Settle served by the billing process",
             lambda: self.by('sum by (target) (nexusflow_grpc_server_handled_total{method="Settle",code="OK"})', "target"),
             {"billing-ledger": ok}),
            ("rate limiter: admissions", lambda: self.scalar('sum(nexusflow_ratelimit_decisions_total{outcome="allowed"})'), float(len(LOAD))),
        ])

    def test_every_rule_evaluates_on_the_real_metrics(self):
        # A recording rule over rates has a series once two scrapes saw the counters.
        self.eventually([
            ("output token rate recorded for every model",
             lambda: sorted(self.by('model_kind:nexusflow_gateway_tokens:rate5m{kind="output"}', "model")),
             sorted(self.expected["tokens"])),
            ("upstream error ratio recorded for every deployment",
             lambda: sorted(self.by("provider_deployment:nexusflow_connector_upstream_error_ratio:rate5m", "deployment")),
             sorted({d for d, _ in self.expected["deployments"]})),
        ])
        groups = json.loads(http("GET", PROM + "/api/v1/rules")[1])["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        in_files = sum(len(g["rules"]) for name in ("recording.rules.yml", "alerts.rules.yml")
                       for g in load_yaml(os.path.join(ROOT, "deploy", "prometheus", name))["groups"])
        self.assertEqual(len(rules), in_files)
        bad = [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"]
        self.assertEqual(bad, [])

    def test_labels_are_bounded(self):
        labels = json.loads(http("GET", PROM + "/api/v1/labels?" + urllib.parse.urlencode(
            {"match[]": '{__name__=~"nexusflow_.*"}'}))[1])["data"]
        self.assertIn("model", labels)
        self.assertIn("deployment", labels)
        self.assertEqual(sorted(FORBIDDEN_LABELS & set(labels)), [])
        names = json.loads(http("GET", PROM + "/api/v1/label/__name__/values")[1])["data"]
        for n in names:
            if n.startswith("nexusflow_"):
                self.assertRegex(n, r"^nexusflow_(gateway|grpc|auth|routing|ratelimit|billing|connector)_[a-z0-9_]+$")


if __name__ == "__main__":
    unittest.main(verbosity=2)
