"""deploy/k8s/base rendered and validated offline: every object against the Kubernetes OpenAPI
schema (strict: unknown fields are errors), the KEDA ScaledObject against our topic table, and
every STREAMSCORE_* variable against the settings. No cluster runs here (docs/deployment.md).

The schemas ship in the `kubernetes-validate` package (a dev dependency), one per Kubernetes
release; KEDA's ScaledObject is a custom resource and has none there, so it is checked field by
field below.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from services.core.settings import Settings, iter_env_vars
from streams.topics import by_record, topic_table

BASE = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "base"
# The oldest release still maintained when this was written; objects valid there are valid later.
KUBERNETES = "1.33.0"
ROLE_PORTS = {"worker scoring": 9464, "worker control-plane": 9465, "api serve": 8000}


def render() -> list[dict[str, Any]]:
    """What `kustomize build` makes of the base: its resources, with the common labels.

    `make k8s-check` runs the real `kustomize build` and names its output in K8S_RENDERED; every
    test below then checks that output instead (it was identical when this was written).
    """
    rendered = os.environ.get("K8S_RENDERED")
    if rendered:
        return [doc for doc in yaml.safe_load_all(Path(rendered).read_text()) if doc]
    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    assert set(kustomization) <= {"apiVersion", "kind", "labels", "resources"}, (
        "this renderer knows resources and labels only; extend it with the kustomization"
    )
    labels: dict[str, str] = {}
    for entry in kustomization.get("labels", []):
        labels.update(entry["pairs"])
    objects = []
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((BASE / name).read_text()):
            if doc:
                doc["metadata"].setdefault("labels", {}).update(labels)
                objects.append(doc)
    return objects


OBJECTS = render()


def _by_kind(kind: str) -> list[dict[str, Any]]:
    return [o for o in OBJECTS if o["kind"] == kind]


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (o["metadata"]["name"], o["spec"]["template"]["spec"])
        for o in OBJECTS
        if o["kind"] in ("Deployment", "Job")
    ]


@pytest.mark.parametrize(
    "obj",
    [o for o in OBJECTS if o["apiVersion"] != "keda.sh/v1alpha1"],
    ids=lambda o: f"{o['kind']}/{o['metadata']['name']}",
)
def test_every_object_is_valid_kubernetes(obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, KUBERNETES, strict=True)


def test_the_base_holds_every_role_and_every_file() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    names = {o["metadata"]["name"] for o in _by_kind("Deployment")}
    assert names == {
        "streamscore-scoring",
        "streamscore-control-plane",
        "streamscore-api",
        "mlflow",
    }
    assert [o["metadata"]["name"] for o in _by_kind("Job")] == ["streamscore-init"]


def test_every_streamscore_variable_is_a_setting() -> None:
    known = {name for name, _ in iter_env_vars()}
    used: set[str] = set()
    for config in _by_kind("ConfigMap"):
        used |= {k for k in config["data"] if k.startswith("STREAMSCORE_")}
    for _, spec in _pod_specs():
        for container in spec["containers"]:
            used |= {e["name"] for e in container.get("env", [])}
    assert used, "no STREAMSCORE_ variables found"
    assert used <= known, used - known


def test_secrets_come_from_a_secret_and_only_from_there() -> None:
    secret_fields = {
        name for name, field in iter_env_vars() if "SecretStr" in str(field.annotation)
    }
    for config in _by_kind("ConfigMap"):
        assert not set(config["data"]) & secret_fields
    for name, spec in _pod_specs():
        for container in spec["containers"]:
            for env in container.get("env", []):
                if env["name"] in secret_fields:
                    assert "secretKeyRef" in env["valueFrom"], (name, env["name"])


def test_the_roles_that_load_models_require_the_signing_key() -> None:
    """The registry has no authentication: a pod must not start without the key that makes the
    workers refuse a version nobody signed."""
    required = {}
    for _, spec in _pod_specs():
        for container in spec["containers"]:
            role = " ".join(container.get("args", [])[:2])
            for env in container.get("env", []):
                if env["name"] == "STREAMSCORE_MODEL__SIGNING_KEY":
                    ref = env["valueFrom"]["secretKeyRef"]
                    required[role] = (ref["key"], ref.get("optional", False))
    assert required == {role: ("model-signing-key", False) for role in ROLE_PORTS}


def test_only_streamscore_pods_reach_the_registry_and_redis() -> None:
    policies = {o["metadata"]["name"]: o["spec"] for o in _by_kind("NetworkPolicy")}
    assert set(policies) == {"mlflow", "redis"}
    mlflow_port = next(
        p["containerPort"]
        for name, spec in _pod_specs()
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
            for o in _by_kind("Deployment")
        )
        if name != "mlflow"
    }
    assert clients and all(
        labels.get("app.kubernetes.io/part-of") == "streamscore" for labels in clients.values()
    ), clients


def test_pods_run_non_root_on_a_read_only_root_filesystem() -> None:
    for name, spec in _pod_specs():
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


def test_workers_probe_healthz_and_readyz_on_their_role_port() -> None:
    seen = set()
    for name, spec in _pod_specs():
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


def test_the_validator_refuses_what_kubernetes_would() -> None:
    """The schema check is live: a misspelt field and a wrong type are errors."""
    (scoring,) = [o for o in _by_kind("Deployment") if o["metadata"]["name"].endswith("scoring")]
    typo = {**scoring, "spec": {**scoring["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES, strict=True)
    wrong = {**scoring, "spec": {**scoring["spec"], "replicas": "two"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, KUBERNETES, strict=True)


def test_every_replicated_deployment_has_a_disruption_budget() -> None:
    budgets = {
        o["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for o in _by_kind("PodDisruptionBudget")
    }
    scaled = {"streamscore-scoring", "streamscore-api"}
    assert scaled <= budgets


def test_no_scaled_deployment_sets_its_replicas() -> None:
    """KEDA's HPA owns the replica count of what a ScaledObject targets: a count in the
    manifest would reset it on every apply."""
    targets = {o["spec"]["scaleTargetRef"]["name"] for o in _by_kind("ScaledObject")}
    deployments = {o["metadata"]["name"]: o for o in _by_kind("Deployment")}
    assert targets and targets <= set(deployments)
    assert [name for name in sorted(targets) if "replicas" in deployments[name]["spec"]] == []


def test_keda_scales_the_scoring_workers_on_lag_up_to_the_partitions() -> None:
    (scaled,) = _by_kind("ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert spec["scaleTargetRef"]["name"] == "streamscore-scoring"
    (config,) = _by_kind("ConfigMap")
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
