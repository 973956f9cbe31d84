"""The one frozen settings object: env (prefix ``STREAMSCORE_``) over defaults, CLI flags over both.

Build ``Settings()`` once, in the CLI entry point, and pass it down: nothing else reads the
environment. Nested groups use ``__`` in names: ``STREAMSCORE_KAFKA__BOOTSTRAP_SERVERS``.
Every variable is listed in ``docs/configuration.md`` (a test keeps the two in step).

The package: ``infra`` and ``ml`` hold the section models, ``root`` the ``Settings`` that
gathers them, ``domain`` where a domain folder is and what its ``domain.json`` defaults, and
``envdoc`` the settings as environment variables (the docs table, a child's env).
"""

from __future__ import annotations

from services.core.settings.domain import (
    DOMAIN_FILE,
    DOMAIN_TOPICS,
    SCHEMAS_DIR,
    domain_declares,
    domain_folder,
)
from services.core.settings.envdoc import env_table_markdown, iter_env_vars, masked, to_env
from services.core.settings.infra import (
    DEFAULT_KAFKA_PORT,
    DEFAULT_REDIS_PORT,
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
from services.core.settings.root import Settings

__all__ = [
    "DEFAULT_KAFKA_PORT",
    "DEFAULT_REDIS_PORT",
    "DOMAIN_FILE",
    "DOMAIN_TOPICS",
    "ENV_PREFIX",
    "NESTED_DELIMITER",
    "SCHEMAS_DIR",
    "ApiSettings",
    "BatchSettings",
    "DriftSettings",
    "FeatureSettings",
    "KafkaSettings",
    "LocalSettings",
    "LogSettings",
    "MetricsSettings",
    "ModelSettings",
    "RateLimitSettings",
    "RedisSettings",
    "RetrainSettings",
    "SchemaRegistrySettings",
    "Settings",
    "TopicSettings",
    "WorkerSettings",
    "domain_declares",
    "domain_folder",
    "env_table_markdown",
    "iter_env_vars",
    "masked",
    "to_env",
]
