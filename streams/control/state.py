"""What the control plane's agents share, built once from settings."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from services.codec.avro import AvroCodec
from services.codec.factory import codec_for, schema_ids, schemas_dir
from services.codec.schemas import load_schemas
from services.core.errors import RegistryUnavailable
from services.core.settings import Settings
from services.domain.config import domain_of
from services.drift.monitor import DriftMonitor
from services.features.redis_store import RedisFeatureStore
from services.features.spec import FeatureSpec
from services.labels.join import QualityBook
from services.labels.store import PredictionStore
from services.retrain.policy import DriftAggregator, PromotionPolicy
from services.retrain.trainer import Codecs
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import RolloutState
from streams.adapters import drift_monitor, feature_spec, feature_store, prediction_store
from streams.topics import by_record

logger = logging.getLogger(__name__)


@dataclass
class ControlState:
    settings: Settings
    registry: MlflowRegistry
    spec: FeatureSpec
    features: RedisFeatureStore
    predictions: PredictionStore
    codecs: dict[str, AvroCodec]
    book: QualityBook
    error_monitor: DriftMonitor
    aggregator: DriftAggregator
    promotion: PromotionPolicy
    decided: set[str] = field(default_factory=set)  # challenger versions already decided
    last_tick: float = field(default_factory=time.monotonic)
    error_champion: str | None = None  # the champion the error detector is watching
    error_seen: int = 0  # labelled events fed to it (its positions)
    rollout: RolloutState | None = None  # the registry's, as of the last tick
    holdout: dict[str, float | None] = field(default_factory=dict)  # holdout log loss by version

    def champion(self) -> str | None:
        """The registry's champion as of the last tick (read once if no tick has yet)."""
        if self.rollout is None:
            try:
                self.rollout = self.registry.rollout_state()
            except RegistryUnavailable as exc:
                logger.warning("registry unavailable; no champion known yet: %s", exc)
                return None
        return self.rollout.champion

    @property
    def trainer_codecs(self) -> Codecs:
        c = self.codecs
        t = self.settings.topics
        return Codecs(c[t.event_record], c[t.label_record], c["ModelEvent"], c.get("FeatureLog"))


def build_state(settings: Settings) -> ControlState:
    records = load_schemas(schemas_dir(settings))
    ids = schema_ids(settings)
    t = settings.topics
    names = (
        t.event_record,
        t.label_record,
        "DriftSignal",
        "RetrainRequest",
        "ModelEvent",
        "FeatureLog",
    )
    codecs = {n: codec_for(settings, by_record(settings.topics, n), records, ids) for n in names}
    spec = feature_spec(settings)
    task = domain_of(settings).task
    r, d = settings.retrain, settings.drift
    return ControlState(
        settings=settings,
        registry=MlflowRegistry(settings),
        spec=spec,
        features=feature_store(settings, spec),
        predictions=prediction_store(settings),
        codecs=codecs,
        book=QualityBook(task=task),
        error_monitor=drift_monitor(settings),
        aggregator=DriftAggregator(int(d.cooldown_seconds * 1000), d.min_partitions),
        promotion=PromotionPolicy(
            int(r.min_shadow_seconds * 1000), r.min_labels, r.promote_margin, task.loss
        ),
    )
