#!/usr/bin/env python3
"""deploy/helm/nexusflow and deploy/docker/Dockerfile, checked without helm or a cluster.

The chart is rendered by tests/helm/render.go: Go's text/template with Sprig (Debian's
golang-github-masterminds-sprig-dev, the function library Helm uses) plus Helm's own
additions (include, tpl, toYaml, fromYaml, required, lookup, .Files, .Capabilities), built
here with Debian's Go in GOPATH mode. The manifests it prints are parsed with PyYAML and
checked: one workload per target with its --target, probes, Secrets, the NetworkPolicies'
callers, the config checksum, values.schema.json, and the rendered nexusflow.yaml is
validated by the real binary (`nexusflow --check-config`). The Dockerfile is checked
structurally (the image is not built).

  python3 tests/helm/chart_test.py NEXUSFLOW_BINARY [REPO_ROOT]
"""
import atexit
import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import jsonschema
import yaml

BINARY = os.path.abspath(sys.argv.pop(1)) if len(sys.argv) > 1 else None
ROOT = os.path.abspath(sys.argv.pop(1) if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", ".."))
CHART = os.path.join(ROOT, "deploy", "helm", "nexusflow")
DOCKERFILE = os.path.join(ROOT, "deploy", "docker", "Dockerfile")

TARGETS = ["auth", "routing", "rate-limiter", "billing-ledger", "provider-connector", "gateway"]
# Who calls whom over gRPC (docs/ARCHITECTURE.md; cmd/nexusflow/modules.cc dials them).
CALLERS = {
    "auth": {"gateway"},
    "routing": {"gateway"},
    "rate-limiter": {"gateway"},
    "billing-ledger": {"gateway", "provider-connector"},
    "provider-connector": {"gateway"},
    "gateway": set(),
}
TOKEN = "internal-token-for-the-chart-test"

WORK = tempfile.mkdtemp(prefix="nf-helm-")
atexit.register(shutil.rmtree, WORK, ignore_errors=True)
RENDERER = os.path.join(WORK, "render")


def build_renderer():
    env = dict(os.environ, GO111MODULE="off", GOPATH="/usr/share/gocode",
               GOCACHE=os.environ.get("NF_GOCACHE", os.path.join(WORK, "gocache")), GOFLAGS="")
    subprocess.run(["go", "build", "-o", RENDERER, "render.go"], check=True, env=env,
                   cwd=os.path.dirname(os.path.abspath(__file__)))


def write_values(values):
    fd, path = tempfile.mkstemp(suffix=".yaml", dir=WORK)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump(values, f)
    return path


def render(values=None, extra=(), expect_ok=True):
    """The rendered documents (or, with expect_ok=False, the failed run)."""
    args = [RENDERER, *extra, CHART]
    if values is not None:
        args.append(write_values(values))
    run = subprocess.run(args, capture_output=True, text=True)
    if not expect_ok:
        return run
    if run.returncode != 0:
        raise AssertionError(f"render failed: {run.stderr}")
    return [d for d in yaml.safe_load_all(run.stdout) if d]


def by_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def workloads(docs):
    """{target: workload} of the Deployments and StatefulSets."""
    out = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet"):
            out[d["metadata"]["labels"]["app.kubernetes.io/component"]] = d
    return out


def container(workload):
    (c,) = workload["spec"]["template"]["spec"]["containers"]
    return c


def env_of(workload):
    return {e["name"]: e for e in container(workload).get("env", [])}


def local_config():
    with open(os.path.join(ROOT, "deploy", "local", "nexusflow.yaml")) as f:
        text = f.read()
    # Only the parts taken over here: the catalog and the providers (no ${...} in them
    # but the mock's address and key, which are replaced).
    text = re.sub(r"\$\{NEXUSFLOW_MOCK_PORT:-(\d+)\}", r"\1", text)
    text = re.sub(r"\$\{NEXUSFLOW_MOCK_API_KEY:-([^}]*)\}", r"\1", text)
    return yaml.safe_load(text)


def production_values():
    """The demo catalog and providers of deploy/local, with external stores and keys."""
    local = local_config()
    providers = {}
    for name, p in local["provider_connector"]["providers"].items():
        providers[name] = {"kind": p["kind"], "baseUrl": p["base_url"], "apiKey": {"value": p["api_key"]}}
    return {
        "internalToken": {"value": TOKEN},
        "providers": providers,
        "catalog": {"models": local["routing"]["models"]},
        "gateway": {"adminKey": {"existingSecret": "nexusflow-admin", "existingSecretKey": "key"}},
        "auth": {"replicaCount": 2, "database": {"url": "postgresql://nf:pw@pg.example:5432/nexusflow"}},
        "billingLedger": {"replicaCount": 2, "database": {"existingSecret": "ledger-db", "existingSecretKey": "url"}},
        "providerConnector": {"replicaCount": 2, "taskStore": {"url": "postgresql://nf:pw@pg.example:5432/nexusflow"}},
        "rateLimiter": {"replicaCount": 2, "store": {"url": "redis://:pw@redis.example:6379/0"}},
    }


class Renderer(unittest.TestCase):
    def test_renderer_follows_helm_for_numbers_and_missing_keys(self):
        # Helm's values are JSON numbers: a large integer prints in exponent form when
        # written bare, and toYaml writes it whole; a missing key renders empty.
        chart = os.path.join(WORK, "probe-chart")
        os.makedirs(os.path.join(chart, "templates"), exist_ok=True)
        with open(os.path.join(chart, "Chart.yaml"), "w") as f:
            f.write("apiVersion: v2\nname: probe\nversion: 1.0.0\n")
        with open(os.path.join(chart, "values.yaml"), "w") as f:
            f.write("big: 16777216\n")
        with open(os.path.join(chart, "templates", "cm.yaml"), "w") as f:
            f.write('a: "{{ .Values.big }}"\nb: {{ toYaml .Values.big }}\nc: "{{ .Values.nothing }}"\n'
                    'd: {{ include "x" . }}\n{{- define "x" }}{{ .Release.Name }}{{ end }}\n')
        out = subprocess.run([RENDERER, chart], capture_output=True, text=True, check=True).stdout
        doc = yaml.safe_load(out.split("---", 1)[1])
        self.assertEqual(doc, {"a": "1.6777216e+07", "b": 16777216, "c": "", "d": "nexusflow"})


class DefaultValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = render()
        cls.workloads = workloads(cls.docs)

    def test_one_deployment_per_target_with_its_target_flag(self):
        self.assertEqual(sorted(self.workloads), sorted(TARGETS))
        for target, w in self.workloads.items():
            self.assertEqual(w["kind"], "Deployment", target)
            self.assertEqual(w["metadata"]["name"], f"nexusflow-{target}")
            args = container(w)["args"]
            self.assertIn(f"--target={target}", args)
            self.assertEqual([a for a in args if a.startswith("--target")], [f"--target={target}"])
            self.assertIn("--config=/etc/nexusflow/nexusflow.yaml", args)
        images = {container(w)["image"] for w in self.workloads.values()}
        self.assertEqual(images, {"nexusflow:0.1.0"})

    def test_services_use_grpc_health_probes_and_the_gateway_readyz_and_healthz(self):
        for target, w in self.workloads.items():
            c = container(w)
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            if target == "gateway":
                self.assertEqual(c["readinessProbe"]["httpGet"], {"path": "/readyz", "port": "http"})
                self.assertEqual(c["livenessProbe"]["httpGet"], {"path": "/healthz", "port": "http"})
                self.assertEqual(ports["http"], 8080)
            else:
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    self.assertEqual(c[probe]["grpc"], {"port": 9090}, f"{target} {probe}")
                self.assertNotIn("http", ports)
            self.assertEqual(ports["grpc"], 9090)

    def test_the_config_volume_comes_from_the_rendered_configmap(self):
        configmaps = by_kind(self.docs, "ConfigMap")
        for target, w in self.workloads.items():
            spec = w["spec"]["template"]["spec"]
            volumes = {v["name"]: v for v in spec["volumes"]}
            self.assertIn(volumes["config"]["configMap"]["name"], configmaps)
            mounts = {m["mountPath"]: m["name"] for m in container(w)["volumeMounts"]}
            self.assertEqual(mounts["/etc/nexusflow"], "config")
            self.assertEqual(mounts["/var/lib/nexusflow"], "data")
            self.assertIn("emptyDir", volumes["data"])

    def test_every_target_gets_the_internal_token_from_the_secret(self):
        secrets = by_kind(self.docs, "Secret")
        for target, w in self.workloads.items():
            ref = env_of(w)["NEXUSFLOW_INTERNAL_TOKEN"]["valueFrom"]["secretKeyRef"]
            self.assertIn(ref["name"], secrets, target)
            self.assertIn(ref["key"], secrets[ref["name"]]["data"])
        # Generated when none is given: printable, long enough for server.internal_token.
        token = base64.b64decode(secrets["nexusflow"]["data"]["internal-token"]).decode()
        self.assertRegex(token, r"^[!-~]{16,}$")

    def test_shutdown_waits_for_the_drain(self):
        values = yaml.safe_load(open(os.path.join(CHART, "values.yaml")))
        grace = values["config"]["server"]["drain_grace_seconds"]
        pre = values["lifecycle"]["preStopSleepSeconds"]
        for target, w in self.workloads.items():
            spec = w["spec"]["template"]["spec"]
            self.assertEqual(container(w)["lifecycle"]["preStop"]["exec"]["command"], ["sleep", str(pre)])
            # The gateway drains requests, then the outbox, then gRPC: a grace each.
            drains = 3 if target == "gateway" else 1
            self.assertGreater(spec["terminationGracePeriodSeconds"], pre + drains * grace, target)

    def test_pods_run_as_non_root_with_a_read_only_root(self):
        for target, w in self.workloads.items():
            spec = w["spec"]["template"]["spec"]
            self.assertTrue(spec["securityContext"]["runAsNonRoot"])
            self.assertNotEqual(spec["securityContext"]["runAsUser"], 0)
            self.assertTrue(container(w)["securityContext"]["readOnlyRootFilesystem"])

    def test_each_target_has_a_service_selecting_its_pods(self):
        services = by_kind(self.docs, "Service")
        for target, w in self.workloads.items():
            svc = services[f"nexusflow-{target}"]
            pod_labels = w["spec"]["template"]["metadata"]["labels"]
            self.assertLessEqual(svc["spec"]["selector"].items(), pod_labels.items())
            names = {p["name"] for p in svc["spec"]["ports"]}
            self.assertEqual(names, {"http", "metrics"} if target == "gateway" else {"grpc", "metrics"})

    def test_config_names_each_service_at_its_kubernetes_service(self):
        config = yaml.safe_load(by_kind(self.docs, "ConfigMap")["nexusflow-config"]["data"]["nexusflow.yaml"])
        services = by_kind(self.docs, "Service")
        for target in TARGETS[:-1]:
            host, port = config["services"][target].split(":")
            self.assertIn(host, services)
            self.assertIn(int(port), [p["port"] for p in services[host]["spec"]["ports"]])
        self.assertEqual(config["server"]["internal_token"], "${NEXUSFLOW_INTERNAL_TOKEN}")

    def test_network_policies_admit_only_each_services_callers(self):
        policies = by_kind(self.docs, "NetworkPolicy")
        self.assertEqual(len(policies), len(TARGETS))
        for target in TARGETS:
            np = policies[f"nexusflow-{target}"]
            self.assertEqual(np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"], target)
            self.assertEqual(np["spec"]["policyTypes"], ["Ingress"])
            grpc_callers, open_ports = set(), set()
            for rule in np["spec"]["ingress"]:
                ports = {p["port"] for p in rule["ports"]}
                if "from" not in rule:
                    open_ports |= ports
                    continue
                for peer in rule["from"]:
                    # Callers are pods of this release in this namespace: no namespaceSelector.
                    self.assertNotIn("namespaceSelector", peer)
                    self.assertNotIn("ipBlock", peer)
                    sel = peer["podSelector"]
                    self.assertEqual(sel["matchLabels"]["app.kubernetes.io/instance"], "nexusflow")
                    (expr,) = sel["matchExpressions"]
                    self.assertEqual((expr["key"], expr["operator"]), ("app.kubernetes.io/component", "In"))
                    self.assertEqual(ports, {"grpc"})
                    grpc_callers |= set(expr["values"])
            self.assertEqual(grpc_callers, CALLERS[target], target)
            # Only the gateway's HTTP port is open to everyone.
            self.assertEqual(open_ports, {"http"} if target == "gateway" else set(), target)

    def test_disruption_budgets_and_no_autoscalers_by_default(self):
        self.assertEqual(len(by_kind(self.docs, "PodDisruptionBudget")), len(TARGETS))
        self.assertEqual(by_kind(self.docs, "HorizontalPodAutoscaler"), {})
        self.assertEqual([d for d in self.docs if d["kind"] in ("ServiceMonitor", "PrometheusRule")], [])

    def test_notes_render(self):
        run = subprocess.run([RENDERER, "--notes", CHART], capture_output=True, text=True, check=True)
        self.assertIn("kubectl port-forward", run.stdout)
        self.assertIn("auth keeps its state in the pod", run.stdout)


class ProductionValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.values = production_values()
        cls.docs = render(cls.values)
        cls.workloads = workloads(cls.docs)

    def test_store_urls_and_keys_come_from_secrets_only_where_needed(self):
        secrets = by_kind(self.docs, "Secret")
        # The admin RPC token (the gateway's identity) reaches the gateway, which presents
        # it, and auth and billing-ledger, which check it: no other pod.
        admin_rpc = {"NEXUSFLOW_ADMIN_RPC_TOKEN": ("nexusflow", "admin-rpc-token")}
        expect = {
            "auth": {"NEXUSFLOW_AUTH_DATABASE": ("nexusflow", "auth-database-url"), **admin_rpc},
            "billing-ledger": {"NEXUSFLOW_LEDGER_DATABASE": ("ledger-db", "url"), **admin_rpc},
            "rate-limiter": {"NEXUSFLOW_RATE_LIMITER_STORE": ("nexusflow", "rate-limiter-store-url")},
            "provider-connector": {"NEXUSFLOW_TASK_STORE": ("nexusflow", "task-store-url"),
                                   **{f"NEXUSFLOW_PROVIDER_{p.upper().replace('-', '_')}_API_KEY":
                                      ("nexusflow", f"provider-{p}-api-key") for p in self.values["providers"]}},
            "gateway": {"NEXUSFLOW_ADMIN_KEY": ("nexusflow-admin", "key"), **admin_rpc},
            "routing": {},
        }
        for target, w in self.workloads.items():
            env = env_of(w)
            got = {}
            for name, e in env.items():
                self.assertNotIn("value", e, f"{target}: {name} is written into the manifest")
                ref = e["valueFrom"]["secretKeyRef"]
                got[name] = (ref["name"], ref["key"])
                if ref["name"] == "nexusflow":
                    self.assertIn(ref["key"], secrets["nexusflow"]["data"])
            self.assertEqual(got, {"NEXUSFLOW_INTERNAL_TOKEN": ("nexusflow", "internal-token"), **expect[target]}, target)
        # No password of a URL, no key is written into the ConfigMap.
        text = by_kind(self.docs, "ConfigMap")["nexusflow-config"]["data"]["nexusflow.yaml"]
        for secret in ("pw@", TOKEN, "mock-upstream-key"):
            self.assertNotIn(secret, text)

    def test_the_real_binary_accepts_the_rendered_config(self):
        if not BINARY:
            self.skipTest("no nexusflow binary given")
        text = by_kind(self.docs, "ConfigMap")["nexusflow-config"]["data"]["nexusflow.yaml"]
        path = os.path.join(WORK, "nexusflow.yaml")
        with open(path, "w") as f:
            f.write(text)
        base = {k: v for k, v in os.environ.items() if not k.startswith("NEXUSFLOW_")}
        # As a pod sees it: the token and the store URLs from the Secrets.
        pod = dict(base, NEXUSFLOW_INTERNAL_TOKEN=TOKEN,
                   NEXUSFLOW_AUTH_DATABASE="postgresql://nf:pw@pg.example:5432/nexusflow",
                   NEXUSFLOW_RATE_LIMITER_STORE="redis://:pw@redis.example:6379/0")
        ok = subprocess.run([BINARY, f"--check-config={path}"], capture_output=True, text=True, env=pod)
        self.assertEqual(ok.returncode, 0, ok.stderr)
        local = local_config()
        self.assertIn(f"({len(local['routing']['models'])} models, {len(local['provider_connector']['providers'])} providers",
                      ok.stdout)
        # Without the Secret's token the file is refused: the token is not optional.
        missing = subprocess.run([BINARY, f"--check-config={path}"], capture_output=True, text=True, env=base)
        self.assertEqual(missing.returncode, 1)
        self.assertIn("NEXUSFLOW_INTERNAL_TOKEN is not set", missing.stderr)

    def test_the_default_config_is_accepted_too(self):
        if not BINARY:
            self.skipTest("no nexusflow binary given")
        text = by_kind(render(), "ConfigMap")["nexusflow-config"]["data"]["nexusflow.yaml"]
        path = os.path.join(WORK, "default.yaml")
        with open(path, "w") as f:
            f.write(text)
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEXUSFLOW_")}
        env["NEXUSFLOW_INTERNAL_TOKEN"] = TOKEN
        run = subprocess.run([BINARY, f"--check-config={path}"], capture_output=True, text=True, env=env)
        self.assertEqual(run.returncode, 0, run.stderr)

    def test_config_checksum_changes_with_the_catalog_and_only_then(self):
        def checksums(docs):
            return {t: w["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                    for t, w in workloads(docs).items()}
        before = checksums(self.docs)
        self.assertEqual(len(set(before.values())), 1)
        self.assertEqual(checksums(render(self.values)), before)
        changed = copy.deepcopy(self.values)
        changed["catalog"]["models"][0]["pricing"]["output"] = "7.00"
        after = checksums(render(changed))
        for target in TARGETS:
            self.assertNotEqual(after[target], before[target], target)

    def test_a_target_with_an_embedded_store_refuses_a_second_replica(self):
        for key, target in (("auth", "auth"), ("billingLedger", "billing-ledger"),
                            ("providerConnector", "provider-connector"), ("rateLimiter", "rate-limiter")):
            run = render({key: {"replicaCount": 2}}, expect_ok=False)
            self.assertNotEqual(run.returncode, 0, target)
            self.assertIn(f"{target} keeps its state in the pod", run.stderr)
        run = render({"auth": {"autoscaling": {"enabled": True}}}, expect_ok=False)
        self.assertNotEqual(run.returncode, 0)

    def test_autoscalers_target_their_workloads(self):
        values = copy.deepcopy(self.values)
        for key in ("auth", "routing", "rateLimiter", "billingLedger", "providerConnector", "gateway"):
            values.setdefault(key, {})["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 5}
        docs = render(values)
        hpas = by_kind(docs, "HorizontalPodAutoscaler")
        ws = workloads(docs)
        self.assertEqual(len(hpas), len(TARGETS))
        for target, w in ws.items():
            ref = hpas[f"nexusflow-{target}"]["spec"]["scaleTargetRef"]
            self.assertEqual((ref["kind"], ref["name"]), (w["kind"], w["metadata"]["name"]))
            self.assertNotIn("replicas", w["spec"])  # the HPA owns it


class GatewayOutbox(unittest.TestCase):
    def test_persistent_outbox_makes_the_gateway_a_statefulset_with_a_volume_per_pod(self):
        docs = render({"gateway": {"persistence": {"enabled": True, "size": "2Gi"}}})
        gw = workloads(docs)["gateway"]
        self.assertEqual(gw["kind"], "StatefulSet")
        (claim,) = gw["spec"]["volumeClaimTemplates"]
        self.assertEqual(claim["metadata"]["name"], "data")
        self.assertEqual(claim["spec"]["resources"]["requests"]["storage"], "2Gi")
        volumes = {v["name"] for v in gw["spec"]["template"]["spec"]["volumes"]}
        self.assertNotIn("data", volumes)  # the claim, not an emptyDir
        services = by_kind(docs, "Service")
        headless = services[gw["spec"]["serviceName"]]
        self.assertEqual(headless["spec"]["clusterIP"], "None")
        config = yaml.safe_load(by_kind(docs, "ConfigMap")["nexusflow-config"]["data"]["nexusflow.yaml"])
        self.assertEqual(config["gateway"]["outbox"], "/var/lib/nexusflow/outbox.db")


class Monitoring(unittest.TestCase):
    def test_service_monitor_scrapes_every_targets_metrics_port(self):
        docs = render({"metrics": {"serviceMonitor": {"enabled": True}}})
        (sm,) = by_kind(docs, "ServiceMonitor").values()
        (endpoint,) = sm["spec"]["endpoints"]
        self.assertEqual(endpoint["port"], "metrics")
        selected = [s for s in by_kind(docs, "Service").values()
                    if sm["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()]
        self.assertEqual(sorted(s["metadata"]["labels"]["app.kubernetes.io/component"] for s in selected),
                         sorted(TARGETS))
        config = yaml.safe_load(by_kind(docs, "ConfigMap")["nexusflow-config"]["data"]["nexusflow.yaml"])
        self.assertEqual(config["server"]["metrics_listen"], "0.0.0.0:9300")

    def test_prometheus_rules_are_deploy_prometheus_rules(self):
        docs = render({"metrics": {"prometheusRule": {"enabled": True}}})
        rules = by_kind(docs, "PrometheusRule")
        for kind in ("recording", "alerts"):
            with open(os.path.join(ROOT, "deploy", "prometheus", f"{kind}.rules.yml")) as f:
                source = yaml.safe_load(f)
            self.assertEqual(rules[f"nexusflow-{kind}"]["spec"]["groups"], source["groups"])

    def test_metrics_ports_open_to_the_configured_scraper_only(self):
        scraper = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        docs = render({"networkPolicy": {"metricsFrom": [scraper]}})
        for np in by_kind(docs, "NetworkPolicy").values():
            metrics = [r for r in np["spec"]["ingress"] if {p["port"] for p in r["ports"]} == {"metrics"}]
            self.assertEqual([r["from"] for r in metrics], [[scraper]])


class Schema(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(os.path.join(CHART, "values.schema.json")) as f:
            cls.schema = json.load(f)
        with open(os.path.join(CHART, "values.yaml")) as f:
            cls.defaults = yaml.safe_load(f)
        jsonschema.Draft7Validator.check_schema(cls.schema)
        cls.validator = jsonschema.Draft7Validator(cls.schema)

    def merged(self, over):
        def merge(a, b):
            for k, v in b.items():
                if isinstance(v, dict) and isinstance(a.get(k), dict):
                    merge(a[k], v)
                else:
                    a[k] = v
            return a
        return merge(copy.deepcopy(self.defaults), over)

    def test_default_and_production_values_validate(self):
        self.validator.validate(self.defaults)
        self.validator.validate(self.merged(production_values()))

    def test_bad_values_are_refused(self):
        for bad in ({"internalToken": {"value": "short"}},
                    {"auth": {"database": {"url": "mysql://db/nf"}}},
                    {"rateLimiter": {"store": {"url": "memcached://x"}}},
                    {"providers": {"x": {"kind": "cohere", "baseUrl": "https://x"}}},
                    {"gateway": {"replicas": 2}},
                    {"ports": {"grpc": 70000}},
                    {"config": {"servre": {}}}):
            self.assertTrue(list(self.validator.iter_errors(self.merged(bad))), bad)


class Dockerfile(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(DOCKERFILE) as f:
            text = f.read()
        text = re.sub(r"\\\n", " ", text)  # continuation lines
        cls.lines = [l.strip() for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
        cls.stages = []
        for line in cls.lines:
            if line.upper().startswith("FROM "):
                cls.stages.append([line])
            elif cls.stages:
                cls.stages[-1].append(line)
        with open(os.path.join(ROOT, "tools", "lib", "common.sh")) as f:
            m = re.search(r"NF_BUILD_PACKAGES=\(([^)]*)\)", f.read())
        cls.build_packages = set(m.group(1).split())

    @staticmethod
    def apt_packages(stage):
        out = set()
        for line in stage:
            m = re.search(r"apt-get install ([^&]*)", line)
            if m:
                out |= {w for w in m.group(1).split() if not w.startswith("-")}
        return out

    def test_two_debian_12_stages_the_last_running_the_binary_as_non_root(self):
        self.assertEqual(len(self.stages), 2)
        self.assertIn("ARG DEBIAN_RELEASE=bookworm", self.lines)
        self.assertRegex(self.stages[0][0], r"^FROM debian:\$\{DEBIAN_RELEASE\} AS build$")
        self.assertRegex(self.stages[1][0], r"^FROM debian:\$\{DEBIAN_RELEASE\}-slim AS runtime$")
        runtime = self.stages[1]
        (user,) = [l for l in runtime if l.startswith("USER ")]
        uid = user.split()[1].split(":")[0]
        self.assertTrue(uid.isdigit() and int(uid) != 0, user)  # numeric: runAsNonRoot can check it
        self.assertIn("COPY --from=build /nexusflow /usr/local/bin/nexusflow", runtime)
        self.assertIn('ENTRYPOINT ["/usr/local/bin/nexusflow"]', runtime)

    def test_build_stage_uses_the_projects_debian_packages_and_builds_nexusflow(self):
        build = self.apt_packages(self.stages[0])
        self.assertLessEqual(build, self.build_packages)
        self.assertTrue({"cmake", "ninja-build", "libgrpc++-dev"} <= build)
        self.assertTrue(any("-G Ninja" in l and "ninja -C /build nexusflow" in l for l in self.stages[0]))

    def test_runtime_stage_has_the_libraries_the_binary_links_and_no_dev_packages(self):
        runtime = self.apt_packages(self.stages[1])
        self.assertFalse([p for p in runtime if p.endswith("-dev")])
        if not BINARY:
            self.skipTest("no nexusflow binary given")
        # Each library the binary names (DT_NEEDED) must come from a package the stage
        # installs, one they depend on directly, or the base image (libc, libstdc++).
        dyn = subprocess.run(["readelf", "-d", BINARY], capture_output=True, text=True, check=True).stdout
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dyn)
        self.assertTrue(needed)
        provided = set(runtime) | {"libc6", "libstdc++6", "libgcc-s1"}
        for p in list(runtime):
            deps = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", p], capture_output=True, text=True)
            provided |= {d.split()[0].split(":")[0] for d in re.split(r"[,|]", deps.stdout) if d.strip()}
        ldd = subprocess.run(["ldd", BINARY], capture_output=True, text=True, check=True).stdout
        paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
        for lib in needed:
            path = os.path.realpath(paths[lib])
            owner = subprocess.run(["dpkg", "-S", path], capture_output=True, text=True)
            if owner.returncode != 0:  # merged /usr: dpkg knows the /lib spelling
                owner = subprocess.run(["dpkg", "-S", path.replace("/usr/lib/", "/lib/", 1)],
                                       capture_output=True, text=True, check=True)
            package = owner.stdout.split(":")[0]
            self.assertIn(package, provided, f"{lib} ({package}) is not installed in the runtime stage")


if __name__ == "__main__":
    build_renderer()
    unittest.main(verbosity=2)
