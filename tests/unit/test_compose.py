"""docker-compose.kafka.yml's wiring, checked without an engine (`make compose-test` runs it)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from services.core.settings import iter_env_vars

ROOT = Path(__file__).resolve().parents[2]
BROKERS = ("kafka-1", "kafka-2", "kafka-3")


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    return data


def _pom_kafka_version() -> str:
    match = re.search(
        r"<kafka.version>(.+?)</kafka.version>", (ROOT / "deploy/kafka/pom.xml").read_text()
    )
    assert match is not None
    return match.group(1)


def test_kafka_is_three_kraft_nodes_of_the_tested_release() -> None:
    services = _compose()["services"]
    assert "zookeeper" not in services
    voters = ",".join(f"{i}@{b}:9093" for i, b in enumerate(BROKERS, start=1))
    for number, name in enumerate(BROKERS, start=1):
        broker = services[name]
        env = broker["environment"]
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert env["KAFKA_NODE_ID"] == number
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voters
        assert (env["KAFKA_DEFAULT_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == (3, 2)
        # The image defaults to the release the tests run (deploy/kafka/pom.xml).
        assert broker["image"] == "${KAFKA_IMAGE:-apache/kafka:" + _pom_kafka_version() + "}"
        # Containers use the INTERNAL listener; the host, the port each broker advertises.
        advertised = env["KAFKA_ADVERTISED_LISTENERS"]
        assert f"INTERNAL://{name}:29092" in advertised
        external = advertised.split("EXTERNAL://localhost:")[1]
        assert broker["ports"] == [f"127.0.0.1:{external}:9092"]
    assert len({services[b]["environment"]["CLUSTER_ID"] for b in BROKERS}) == 1


def test_services_reach_each_other_by_the_internal_listener() -> None:
    services = _compose()["services"]
    internal = ",".join(f"{b}:29092" for b in BROKERS)
    for name in ("init", "scoring", "control-plane", "api"):
        env = services[name]["environment"]
        assert env["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"] == internal, name
        assert env["STREAMSCORE_REDIS__URL"] == "redis://redis:6379/0", name
        assert env["STREAMSCORE_MODEL__TRACKING_URI"] == "http://mlflow:5000", name
        assert services[name]["build"]["args"]["BASE_IMAGE"] == "${BASE_IMAGE:-python:3.11-slim}"
    assert (ROOT / services["init"]["build"]["dockerfile"]).is_file()


def test_every_streamscore_variable_is_a_setting() -> None:
    known = {name for name, _ in iter_env_vars()}
    for name, svc in _compose()["services"].items():
        used = {k for k in svc.get("environment", {}) if k.startswith("STREAMSCORE_")}
        assert used <= known, (name, used - known)


def test_every_depends_on_names_a_service_with_a_healthcheck() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep, rule in svc.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if rule["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
            else:
                assert rule["condition"] == "service_completed_successfully", (name, dep)


def test_workers_wait_for_the_init_job_and_scale() -> None:
    services = _compose()["services"]
    assert services["init"]["restart"] == "no"
    for name in ("scoring", "control-plane", "api"):
        depends = services[name]["depends_on"]
        assert depends["init"] == {"condition": "service_completed_successfully"}, name
    # Replicas of the scoring service publish no port (they would collide); Prometheus finds
    # each one by the service's DNS name.
    assert "ports" not in services["scoring"]


def test_prometheus_and_grafana_load_the_files_we_test() -> None:
    services = _compose()["services"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in services["prometheus"]["volumes"]}
    assert mounts["./deploy/prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert mounts["./deploy/prometheus/alerts.yml"] == "/etc/prometheus/alerts.yml"
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    assert scrape["rule_files"] == ["/etc/prometheus/alerts.yml"]
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    # The alert rules' WorkerDown expression names this job; the target is the scoring service.
    assert "streamscore-scoring" in (ROOT / "deploy/prometheus/alerts.yml").read_text()
    sd = jobs["streamscore-scoring"]["dns_sd_configs"][0]
    assert sd["names"] == ["scoring"] and "scoring" in services
    port = services["scoring"]["environment"]["STREAMSCORE_METRICS__PORT"]
    assert sd["port"] == int(port)
    for mount in services["grafana"]["volumes"]:
        assert (ROOT / mount.split(":")[0]).exists(), mount


def test_workers_use_the_registry_server_and_report_readiness() -> None:
    services = _compose()["services"]
    env = services["scoring"]["environment"]
    assert env["STREAMSCORE_MODEL__TRACKING_URI"] == "http://mlflow:5000"
    # The image's healthcheck script with --ready asks /readyz of the role's port.
    check = services["scoring"]["healthcheck"]["test"]
    assert check[-2:] == ["/opt/streamscore/healthcheck.py", "--ready"]
    assert services["scoring"]["command"] == ["worker", "scoring"]


def test_the_control_plane_runs_and_is_scraped() -> None:
    services = _compose()["services"]
    assert services["control-plane"]["command"] == ["worker", "control-plane"]
    port = services["control-plane"]["environment"]["STREAMSCORE_METRICS__CONTROL_PLANE_PORT"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert jobs["streamscore-control"]["static_configs"][0]["targets"] == [f"control-plane:{port}"]


def test_mlflow_keeps_the_registry_in_postgresql() -> None:
    services = _compose()["services"]
    mlflow = services["mlflow"]
    assert mlflow["depends_on"]["postgres"] == {"condition": "service_healthy"}
    store = next(a for a in mlflow["command"] if a.startswith("--backend-store-uri="))
    # The password is not on the command line: libpq reads it from PGPASSWORD.
    assert store == "--backend-store-uri=postgresql+psycopg://mlflow@postgres:5432/mlflow"
    password = services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert mlflow["environment"]["PGPASSWORD"] == password == "${MLFLOW_DB_PASSWORD:-mlflow}"
    assert not any("MLFLOW_DB_PASSWORD" in str(a) for a in mlflow["command"])
    assert services["postgres"]["environment"]["POSTGRES_DB"] == "mlflow"
