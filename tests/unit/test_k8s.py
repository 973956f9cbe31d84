"""deploy/k8s's base and its overlays rendered and validated offline: every object
against the Kubernetes OpenAPI schema (strict: unknown fields are errors), the KEDA ScaledObject
against our topic table, and every STREAMSCORE_* variable against the settings. No cluster runs
here (docs/deployment.md).

The schemas ship in the `kubernetes-validate` package (a dev dependency), one per Kubernetes
release; KEDA's ScaledObject and TriggerAuthentication are custom resources and have none there,
so they are checked field by field below. Each check runs on every tree (the base and each
overlay), so an overlay that patches one object and not the others it must agree with fails.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.core.settings import Settings, iter_env_vars
from streams.topics import by_record, topic_table
from streams.worker.txn_id import unstable
from tests.unit.kustomize import build

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
BASE = K8S / "base"
TREES = {
    "base": BASE,
    "example": K8S / "overlays" / "example",
    "exactly-once": K8S / "overlays" / "exactly-once",
}
WORKLOADS = ("Deployment", "StatefulSet")  # the long-running roles' kinds
# The oldest release still maintained when this was written; objects valid there are valid later.
KUBERNETES = "1.33.0"
# Custom resources (KEDA, the Prometheus Operator): no schema in kubernetes-validate; checked
# field by field below.
CUSTOM = ("keda.sh/", "monitoring.coreos.com/")
ROLE_PORTS = {"worker scoring": 9464, "worker control-plane": 9465, "api serve": 8000}
# docs/performance.md: 42 us of CPU per event, so a worker at its requested half core carries
# about 11,800 events/s.
EVENTS_PER_SECOND_PER_WORKER = 11_800
LATENCY_SLO_SECONDS = 1.0


def render(tree: str) -> list[dict[str, Any]]:
    """What `kustomize build` makes of a tree (tests/unit/kustomize.py).

    `make k8s-check` runs the real `kustomize build` on each tree and names the folder of its
    outputs (<tree>.yaml) in K8S_RENDERED; every test below then checks those outputs instead.
    """
    rendered = os.environ.get("K8S_RENDERED")
    if rendered:
        text = (Path(rendered) / f"{tree}.yaml").read_text()
        return [doc for doc in yaml.safe_load_all(text) if doc]
    return build(TREES[tree])


RENDERED = {tree: render(tree) for tree in TREES}
Objects = list[dict[str, Any]]


@pytest.fixture(params=sorted(TREES))
def objects(request: pytest.FixtureRequest) -> Objects:
    return RENDERED[request.param]


def _by_kind(objects: Objects, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def _workloads(objects: Objects) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in WORKLOADS]


def _pod_specs(objects: Objects) -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in objects
        if o["kind"] in (*WORKLOADS, "Job")
    ]


@pytest.mark.parametrize(
    ("tree", "obj"),
    [
        (tree, o)
        for tree, objects in RENDERED.items()
        for o in objects
        if not o["apiVersion"].startswith(CUSTOM)
    ],
    ids=lambda x: x if isinstance(x, str) else f"{x['kind']}/{x['metadata']['name']}",
)
def test_every_object_is_valid_kubernetes(tree: str, obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_the_base_holds_every_role_and_every_file(objects: Objects) -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    names = {o["metadata"]["name"] for o in _workloads(objects)}
    assert names == {
        "streamscore-scoring",
        "streamscore-control-plane",
        "streamscore-api",
        "mlflow",
    }
    (job,) = _by_kind(objects, "Job")
    assert job["metadata"]["name"].startswith("streamscore-init")


def test_every_overlay_is_checked() -> None:
    overlays = {p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml")}
    assert overlays and overlays <= set(TREES)


def test_the_example_overlay_moves_image_namespace_and_domain_together() -> None:
    base, example = RENDERED["base"], RENDERED["example"]
    assert {o["metadata"].get("namespace") for o in example} == {"streamscore"}
    images = {c["image"] for _, spec in _pod_specs(example) for c in spec["containers"]}
    assert images == {"registry.example.com/your-team/streamscore:0.1.0"}
    (config,) = _by_kind(example, "ConfigMap")
    (base_config,) = _by_kind(base, "ConfigMap")
    assert config["data"]["STREAMSCORE_DOMAIN"] != base_config["data"]["STREAMSCORE_DOMAIN"]
    # The keys the overlay does not set are the base's (a merge, not a replacement).
    assert set(base_config["data"]) <= set(config["data"])


def test_every_streamscore_variable_is_a_setting(objects: Objects) -> None:
    known = {name for name, _ in iter_env_vars()}
    used: set[str] = set()
    for config in _by_kind(objects, "ConfigMap"):
        used |= {k for k in config["data"] if k.startswith("STREAMSCORE_")}
    for _, spec in _pod_specs(objects):
        for container in spec["containers"]:
            used |= {
                e["name"] for e in container.get("env", []) if e["name"].startswith("STREAMSCORE")
            }
    assert used, "no STREAMSCORE_ variables found"
    assert used <= known, used - known


def test_secrets_come_from_a_secret_and_only_from_there(objects: Objects) -> None:
    secret_fields = {
        name for name, field in iter_env_vars() if "SecretStr" in str(field.annotation)
    }
    for config in _by_kind(objects, "ConfigMap"):
        assert not set(config["data"]) & secret_fields
    for name, spec in _pod_specs(objects):
        for container in spec["containers"]:
            for env in container.get("env", []):
                if env["name"] in secret_fields:
                    assert "secretKeyRef" in env["valueFrom"], (name, env["name"])


def test_the_roles_that_load_models_require_the_signing_key(objects: Objects) -> None:
    """The registry has no authentication: a pod must not start without the key that makes the
    workers refuse a version nobody signed."""
    required = {}
    for _, spec in _pod_specs(objects):
        for container in spec["containers"]:
            role = " ".join(container.get("args", [])[:2])
            for env in container.get("env", []):
                if env["name"] == "STREAMSCORE_MODEL__SIGNING_KEY":
                    ref = env["valueFrom"]["secretKeyRef"]
                    required[role] = (ref["key"], ref.get("optional", False))
    assert required == {role: ("model-signing-key", False) for role in ROLE_PORTS}


def test_only_streamscore_pods_reach_the_registry_and_redis(objects: Objects) -> None:
    policies = {o["metadata"]["name"]: o["spec"] for o in _by_kind(objects, "NetworkPolicy")}
    assert set(policies) == {"mlflow", "redis"}
    mlflow_port = next(
        p["containerPort"]
        for name, spec in _pod_specs(objects)
        if name == "mlflow"
        for p in spec["containers"][0]["ports"]
    )
    for name, port in (("mlflow", mlflow_port), ("redis", 6379)):
        spec = policies[name]
        assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
        assert spec["policyTypes"] == ["Ingress"]
        (rule,) = spec["ingress"]
        assert rule["from"] == [
            {"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "streamscore"}}}
        ]
        assert rule["ports"] == [{"protocol": "TCP", "port": port}]
    # Every role that talks to them carries the label the policies admit.
    clients = {
        name: spec_labels
        for name, spec_labels in (
            (o["metadata"]["name"], o["spec"]["template"]["metadata"]["labels"])
            for o in _workloads(objects)
        )
        if name != "mlflow"
    }
    assert clients and all(
        labels.get("app.kubernetes.io/part-of") == "streamscore" for labels in clients.values()
    ), clients


def test_pods_run_non_root_on_a_read_only_root_filesystem(objects: Objects) -> None:
    for name, spec in _pod_specs(objects):
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] == 10001, name  # the image's user
        assert spec["automountServiceAccountToken"] is False, name
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"] for m in container["volumeMounts"]}
            assert "/tmp" in mounts, name  # the only writable places are volumes
            assert {"requests", "limits"} <= set(container["resources"]), name


def test_workers_probe_healthz_and_readyz_on_their_role_port(objects: Objects) -> None:
    seen = set()
    for name, spec in _pod_specs(objects):
        for container in spec["containers"]:
            role = " ".join(container.get("args", [])[:2])
            if role not in ROLE_PORTS:
                continue
            seen.add(role)
            port = ROLE_PORTS[role]
            assert [p["containerPort"] for p in container["ports"]] == [port], name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
    # Every role was found by its arguments: a changed command line cannot skip them all.
    assert seen == set(ROLE_PORTS)


def test_the_validator_refuses_what_kubernetes_would(objects: Objects) -> None:
    """The schema check is live: a misspelt field and a wrong type are errors."""
    (scoring,) = [o for o in _workloads(objects) if o["metadata"]["name"].endswith("scoring")]
    typo = {**scoring, "spec": {**scoring["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES, strict=True)
    wrong = {**scoring, "spec": {**scoring["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES, strict=True)


def test_every_replicated_deployment_has_a_disruption_budget(objects: Objects) -> None:
    budgets = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for o in _by_kind(objects, "PodDisruptionBudget")
    }
    scaled = {"streamscore-scoring", "streamscore-api"}
    assert scaled <= budgets


def test_no_scaled_deployment_sets_its_replicas(objects: Objects) -> None:
    """KEDA's HPA owns the replica count of what a ScaledObject targets (a Deployment unless
    its scaleTargetRef names another kind): a count in the manifest would reset it on every
    apply."""
    targets = {
        (ref.get("kind", "Deployment"), ref["name"])
        for ref in (o["spec"]["scaleTargetRef"] for o in _by_kind(objects, "ScaledObject"))
    }
    workloads = {(o["kind"], o["metadata"]["name"]): o for o in _workloads(objects)}
    assert targets and targets <= set(workloads)
    assert [t for t in sorted(targets) if "replicas" in workloads[t]["spec"]] == []


def test_keda_scales_the_scoring_workers_on_lag_up_to_the_partitions(objects: Objects) -> None:
    (scaled,) = _by_kind(objects, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "streamscore-scoring"
    (config,) = _by_kind(objects, "ConfigMap")
    # The topic and its partitions of the domain the ConfigMap serves, not the default one.
    settings = Settings(domain=config["data"].get("STREAMSCORE_DOMAIN", "feed"))
    events = by_record(settings.topics, settings.topics.event_record)
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == events.name
    assert meta["consumerGroup"] == settings.worker.scoring_group
    assert int(meta["lagThreshold"]) > 0
    assert meta["allowIdleConsumers"] == "false"
    # A partition has one reader per group: workers past the partition count would be idle.
    assert spec["maxReplicaCount"] == events.partitions
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    assert meta["bootstrapServers"] == config["data"]["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"]
    assert {t.name for t in topic_table(settings.topics)} >= {events.name}


def test_the_lag_target_keeps_the_backlog_well_inside_the_latency_slo(objects: Objects) -> None:
    """The HPA settles where each worker holds about lagThreshold events: that backlog, at a
    worker's rate, is the wait an event adds before it is read."""
    (scaled,) = _by_kind(objects, "ScaledObject")
    threshold = int(scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"])
    assert threshold / EVENTS_PER_SECOND_PER_WORKER <= LATENCY_SLO_SECONDS / 4


def test_keda_reads_the_lag_with_the_workers_credentials_and_falls_back(objects: Objects) -> None:
    (scaled,) = _by_kind(objects, "ScaledObject")
    (trigger,) = scaled["spec"]["triggers"]
    auths = {o["metadata"]["name"]: o for o in _by_kind(objects, "TriggerAuthentication")}
    auth = auths[trigger["authenticationRef"]["name"]]
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    refs = {r["parameter"]: r for r in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"sasl", "username", "password", "tls", "ca"}
    assert {r["name"] for r in refs.values()} == {"streamscore-secrets"}
    # The password is the very key the workers log in with.
    worker_keys = {
        env["valueFrom"]["secretKeyRef"]["key"]
        for name, spec in _pod_specs(objects)
        if name == "streamscore-scoring"
        for container in spec["containers"]
        for env in container.get("env", [])
        if env["name"] == "STREAMSCORE_KAFKA__SASL_PASSWORD"
    }
    assert worker_keys == {refs["password"]["key"]}
    # Lag unreadable: one worker per partition (the most that can work), not a frozen count.
    fallback = scaled["spec"]["fallback"]
    assert fallback["failureThreshold"] >= 1
    assert fallback["replicas"] == scaled["spec"]["maxReplicaCount"]


def test_pod_monitors_give_the_alerts_their_job_names() -> None:
    """The alert rules name jobs (`up{job="streamscore-scoring"}`): the PodMonitors scrape each
    role's metrics port under those names, the compose stack's Prometheus's own."""
    objects = RENDERED["example"]
    wanted = set(re.findall(r'up\{job="([^"]+)"\}', ALERTS.read_text()))
    assert wanted == {"streamscore-scoring", "streamscore-control"}
    pods = {
        o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]: o
        for o in _by_kind(objects, "Deployment")
    }
    jobs = {}
    for monitor in _by_kind(objects, "PodMonitor"):
        selected = monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        containers = pods[selected]["spec"]["template"]["spec"]["containers"]
        (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in {p["name"] for c in containers for p in c["ports"]}, selected
        assert endpoint["path"] == "/metrics"
        (job,) = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
        assert job["action"] == "replace"
        jobs[job["replacement"]] = selected
    assert wanted <= set(jobs)
    assert set(jobs.values()) == {n for n in pods if n != "mlflow"}  # every role is scraped
    compose = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert set(jobs) <= {j["job_name"] for j in compose["scrape_configs"]}


def test_the_prometheus_rule_is_the_alert_rules() -> None:
    (rule,) = _by_kind(RENDERED["example"], "PrometheusRule")
    assert rule["spec"] == {"groups": yaml.safe_load(ALERTS.read_text())["groups"]}
    # And the file is what `make k8s-rules` writes now (comments included).
    path = K8S / "monitoring" / "rules.py"
    spec = importlib.util.spec_from_file_location("k8s_rules", path)
    assert spec and spec.loader
    rules = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rules)
    assert rules.OUT.read_text() == rules.render(ALERTS.read_text()), "run `make k8s-rules`"


def test_mlflow_on_sqlite_has_one_writer_answers_its_service_names_and_may_start_slowly(
    objects: Objects,
) -> None:
    (mlflow,) = [o for o in _by_kind(objects, "Deployment") if o["metadata"]["name"] == "mlflow"]
    assert "replicas" not in mlflow["spec"] or mlflow["spec"]["replicas"] == 1
    (container,) = mlflow["spec"]["template"]["spec"]["containers"]
    args = dict(a.removeprefix("--").split("=", 1) for a in container["args"] if "=" in a)
    if args["backend-store-uri"].startswith("sqlite:"):
        assert args["workers"] == "1"
    env = {e["name"]: e for e in container.get("env", [])}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    hosts = set(args["allowed-hosts"].split(","))
    port = container["ports"][0]["containerPort"]
    for name in (
        "mlflow",
        "mlflow.$(POD_NAMESPACE).svc",
        "mlflow.$(POD_NAMESPACE).svc.cluster.local",
    ):
        assert {name, f"{name}:{port}"} <= hosts, name
    # The tracking URI the other pods use is one of those names.
    (config,) = _by_kind(objects, "ConfigMap")
    uri = config["data"]["STREAMSCORE_MODEL__TRACKING_URI"]
    assert uri.removeprefix("http://") in hosts
    assert container["startupProbe"]["httpGet"]["path"] == "/health"


def test_the_init_job_waits_for_every_broker_and_registers_with_a_registry(
    objects: Objects,
) -> None:
    (job,) = _by_kind(objects, "Job")
    (container,) = job["spec"]["template"]["spec"]["containers"]
    script = container["command"][-1]
    create, check, register = (part.strip() for part in script.split("&&"))
    assert create.startswith("streamscore topics create --wait-brokers ")
    assert check == "streamscore schemas check"
    assert register == (
        'if [ -n "${STREAMSCORE_SCHEMA_REGISTRY__URL:-}" ]; then streamscore schemas register; fi'
    )
    env = {e["name"]: e for e in container["env"]}
    ref = env["STREAMSCORE_SCHEMA_REGISTRY__PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("streamscore-secrets", "schema-registry-password")


def test_an_overlay_that_sets_the_tag_names_the_init_job_after_it() -> None:
    """A Job cannot change in place: a new release applied over the last one's Job fails,
    unless each release has its own Job."""
    (job,) = _by_kind(RENDERED["example"], "Job")
    kustomization = yaml.safe_load((TREES["example"] / "kustomization.yaml").read_text())
    (image,) = kustomization["images"]
    assert job["metadata"]["name"] == "streamscore-init-" + image["newTag"].replace(".", "-")


def test_replicated_roles_spread_over_nodes_and_the_api_drains_before_it_stops(
    objects: Objects,
) -> None:
    specs = dict(_pod_specs(objects))
    for name in ("streamscore-api", "streamscore-scoring"):
        (spread,) = specs[name]["topologySpreadConstraints"]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        assert spread["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
    api = specs["streamscore-api"]
    (container,) = api["containers"]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep" and 0 < int(command[1]) < api["terminationGracePeriodSeconds"]


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_exactly_once_runs_only_on_pods_with_stable_names(objects: Objects) -> None:
    """exactly_once needs a transactional id that survives a restart: never on a Deployment,
    whose pods get a new random name each time (streams/worker/txn_id.py warns at start)."""
    for o in _workloads(objects):
        for container in o["spec"]["template"]["spec"]["containers"]:
            guarantee = _env(container).get("STREAMSCORE_WORKER__PROCESSING_GUARANTEE", {})
            if guarantee.get("value") == "exactly_once":
                assert o["kind"] == "StatefulSet", o["metadata"]["name"]
    for config in _by_kind(objects, "ConfigMap"):
        assert config["data"].get("STREAMSCORE_WORKER__PROCESSING_GUARANTEE") != "exactly_once"


def test_the_exactly_once_overlay_runs_the_scoring_workers_as_a_statefulset() -> None:
    objects, base = RENDERED["exactly-once"], RENDERED["base"]
    (stateful,) = _by_kind(objects, "StatefulSet")
    name = stateful["metadata"]["name"]
    assert name == "streamscore-scoring"
    # No scoring Deployment left: by name, or by what its pods run.
    deployments = _by_kind(objects, "Deployment")
    assert name not in {o["metadata"]["name"] for o in deployments}
    assert not [
        o["metadata"]["name"]
        for o in deployments
        for c in o["spec"]["template"]["spec"]["containers"]
        if c.get("args", [])[:2] == ["worker", "scoring"]
    ]
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    assert container["args"][:2] == ["worker", "scoring"]
    env = _env(container)
    assert env["STREAMSCORE_WORKER__PROCESSING_GUARANTEE"]["value"] == "exactly_once"
    tid = env["STREAMSCORE_WORKER__TRANSACTIONAL_ID"]["valueFrom"]["fieldRef"]
    assert tid["fieldPath"] == "metadata.name"
    # A StatefulSet's pod is <name>-<ordinal>: the worker's own check finds it stable.
    assert unstable(f"{name}-0", worker_id_set=True, tid_set=True) is None
    # KEDA scales the StatefulSet (it would look for a Deployment by default).
    (scaled,) = _by_kind(objects, "ScaledObject")
    ref = scaled["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "StatefulSet", name)
    # Its governing Service exists and is headless.
    services = {o["metadata"]["name"]: o for o in _by_kind(objects, "Service")}
    governing = services[stateful["spec"]["serviceName"]]["spec"]
    assert governing["clusterIP"] == "None"
    assert governing["selector"] == stateful["spec"]["selector"]["matchLabels"]
    # The same pod as the base's Deployment, but for the two exactly-once variables.
    (deployment,) = [o for o in _by_kind(base, "Deployment") if o["metadata"]["name"] == name]
    ours = yaml.safe_load(yaml.safe_dump(stateful["spec"]["template"]))
    (c,) = ours["spec"]["containers"]
    c["env"] = [e for e in c["env"] if e["name"] not in _EXACTLY_ONCE_ENV]
    assert ours == deployment["spec"]["template"]
    assert stateful["spec"]["selector"] == deployment["spec"]["selector"]


_EXACTLY_ONCE_ENV = {
    "STREAMSCORE_WORKER__PROCESSING_GUARANTEE",
    "STREAMSCORE_WORKER__TRANSACTIONAL_ID",
}
