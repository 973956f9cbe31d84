"""The root ``Settings``: every group, env over defaults, domain defaults applied."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from services.core.settings.domain import DOMAIN_TOPICS, domain_declares, domain_folder
from services.core.settings.infra import (
    ENV_PREFIX,
    NESTED_DELIMITER,
    ApiSettings,
    BatchSettings,
    KafkaSettings,
    LocalSettings,
    RedisSettings,
    SchemaRegistrySettings,
    TopicSettings,
)
from services.core.settings.ml import (
    DriftSettings,
    FeatureSettings,
    LogSettings,
    MetricsSettings,
    ModelSettings,
    RateLimitSettings,
    RetrainSettings,
    WorkerSettings,
)


class _SchemaRegistryUrlAlias(PydanticBaseSettingsSource):
    """Accepts ``STREAMSCORE_SCHEMA_REGISTRY_URL`` as a spelling of ``..._SCHEMA_REGISTRY__URL``."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        value = os.environ.get(f"{ENV_PREFIX}SCHEMA_REGISTRY_URL")
        return {"schema_registry": {"url": value}} if value else {}


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
        part = declared.get("prediction")
        declared_threshold = part.get("decision_threshold") if isinstance(part, dict) else None
        if (
            declared_threshold is not None
            and "decision_threshold" not in self.model.model_fields_set
        ):
            # Checked when the domain loads (services.domain.config.check_decision).
            update = {"decision_threshold": declared_threshold}
            object.__setattr__(self, "model", self.model.model_copy(update=update))
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
        """Servers are set, and are not the embedded broker's own address: `local up` prints
        that address as an export line, and pasting it keeps the broker embedded."""
        servers = self.kafka.bootstrap_servers
        port = self.local.kafka_port
        return servers is not None and servers not in (f"127.0.0.1:{port}", f"localhost:{port}")

    @property
    def external_redis(self) -> bool:
        """A URL is set, and is not the embedded server's own (as for ``external_kafka``)."""
        url = self.redis.url
        if url is None:
            return False
        port = self.local.redis_port
        return url.rstrip("/") not in {
            f"redis://{host}:{port}{db}" for host in ("127.0.0.1", "localhost") for db in ("", "/0")
        }
