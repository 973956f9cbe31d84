"""Settings groups of the ML side: features, models, the worker, rate limits, drift, retraining,
metrics and logging."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from services.core.settings.infra import _Group


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
    log: bool = Field(
        True,
        description="The scoring worker writes the entity features of each batch to the "
        "feature-log topic (one message per batch, best effort), so that training uses the "
        "rows that were served.",
    )
    log_slack_seconds: int = Field(
        3600,
        ge=0,
        description="Training reads the feature-log records logged from this long before the "
        "earliest event's time to this long after the newest: an event scored later than that "
        "(a worker far behind) has no row read and is left out of training, counted.",
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
    processing_guarantee: Literal["at_least_once", "exactly_once"] = Field(
        "at_least_once",
        description="at_least_once: outputs are acknowledged, then their offsets committed (a "
        "crash scores the uncommitted tail again: duplicates with the same prediction id). "
        "exactly_once: each batch's predictions, dead letters and offsets commit in one Kafka "
        "transaction, so a read_committed consumer sees every input's output once.",
    )
    transactional_id: str | None = Field(
        None,
        description="exactly_once: the producer's transactional.id, unique per running worker "
        "and the same across its restarts (a restart then fences the previous process at once). "
        "Unset: <scoring_group>-<worker_id>.",
    )
    liveness_seconds: float = Field(
        60.0,
        gt=0,
        description="/healthz fails when the worker loop has neither turned nor beaten for "
        "this long. Every wait inside a batch beats (Redis or the schema registry down, a full "
        "producer queue, too many outputs in flight), so only a stuck loop fails it.",
    )
    partition_grace_seconds: float = Field(
        60.0,
        gt=0,
        description="/readyz fails on partitions when an owned partition's position has not "
        "moved for this long while records wait above it and no decided pause (a hold, "
        "backpressure) explains it, or when the worker has owned nothing this long since its "
        "partitions were revoked or lost while the input topic has partitions.",
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
        '"page_hinkley"}; signals are score, probability:<class> (multiclass), error and '
        "feature:<name>.",
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
        "same rows by more than this is recorded but not shadowed (regression: MAE, and this is "
        "a fraction of the champion's MAE).",
    )
    ece_margin: float | None = Field(
        None,
        ge=0,
        description="Calibration gate: a challenger whose holdout expected calibration error "
        "exceeds the champion's on the same rows by more than this is not shadowed. Unset: no "
        "calibration gate.",
    )
    features_now: bool = Field(
        False,
        description="Window events without a row in the feature log take their entity "
        "features from Redis as it is now (leakage when features move with the outcome). "
        "Off: they are left out of training.",
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
        "promoted (regression: MAE, and this is a fraction of the champion's MAE).",
    )
    quality_margin: float = Field(
        0.1,
        ge=0,
        description="Absolute trigger: retrain when the champion's online log loss exceeds its "
        "own holdout log loss by more than this (regression: MAE, and this is a fraction of the "
        "holdout MAE).",
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
