"""docker-compose.kafka.yml cannot run here (no Docker engine); check its wiring instead."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.kafka.yml").read_text())
    return data


def test_kafka_is_kraft_without_zookeeper() -> None:
    services = _compose()["services"]
    assert "zookeeper" not in services
    env = services["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert services["kafka"]["image"].startswith("apache/kafka:4.")


def test_services_reach_each_other_by_the_internal_listener() -> None:
    services = _compose()["services"]
    internal = "kafka:29092"
    assert internal in services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    sr = services["schema-registry"]["environment"]
    assert sr["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"] == f"PLAINTEXT://{internal}"
    init = services["init"]["environment"]
    assert init["STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS"] == internal
    assert init["STREAMSCORE_SCHEMA_REGISTRY__URL"] == "http://schema-registry:8081"
    assert (ROOT / services["init"]["build"]["dockerfile"]).is_file()


def test_every_depends_on_names_a_service_with_a_healthcheck() -> None:
    services = _compose()["services"]
    for name, svc in services.items():
        for dep in svc.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
            assert "healthcheck" in services[dep], f"{dep} has no healthcheck"


def test_prometheus_and_grafana_load_the_files_we_test() -> None:
    services = _compose()["services"]
    mounts = {m.split(":")[0]: m.split(":")[1] for m in services["prometheus"]["volumes"]}
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
    assert "/readyz" in " ".join(services["scoring"]["healthcheck"]["test"])
    assert services["scoring"]["command"] == ["worker", "scoring"]


def test_the_control_plane_runs_and_is_scraped() -> None:
    services = _compose()["services"]
    assert services["control-plane"]["command"] == ["worker", "control-plane"]
    port = services["control-plane"]["environment"]["STREAMSCORE_METRICS__CONTROL_PLANE_PORT"]
    scrape = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in scrape["scrape_configs"]}
    assert jobs["streamscore-control"]["static_configs"][0]["targets"] == [f"control-plane:{port}"]
