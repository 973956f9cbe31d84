"""Change what serves: plan (pure rules), verify, write to the registry, announce.

The one path for every alias or rollout change, used by `streamscore models ...`, the demo and
(later) the retraining loop, so none of them can skip the verification or the history.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.codec.avro import AvroCodec
from services.core.errors import ConfigError, ModelLoadError
from services.core.settings import Settings
from services.scoring.announce import announce
from services.scoring.events import model_event
from services.scoring.loader import ServingLoader
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import AliasChange, RolloutState

Plan = Callable[[RolloutState, MlflowRegistry], tuple[RolloutState, AliasChange]]


@dataclass(frozen=True, slots=True)
class Applied:
    before: RolloutState
    after: RolloutState
    change: AliasChange
    announce_error: str | None  # None: announced on the model-events topic


def apply_change(
    settings: Settings, registry: MlflowRegistry, codec: AvroCodec, plan: Plan
) -> Applied:
    """Raises:
    ValueError: the plan is not possible (nothing to promote, no earlier champion...).
    ModelLoadError: a version the new state would serve fails verification; nothing changed.
    """
    before = registry.rollout_state()
    after, change = plan(before, registry)
    loader = ServingLoader(registry)
    wanted = {after.champion, after.active_challenger()} - {before.champion}
    for version in sorted(v for v in wanted if v is not None):
        try:
            loader.load(version)
        except (ModelLoadError, ConfigError) as exc:
            raise ModelLoadError(f"refused, nothing changed: {exc}") from exc
    registry.apply(after, change)
    sha = next((v.sha256 for v in registry.versions() if v.version == change.to_version), None)
    problem = announce(settings, codec, model_event(registry.name, change, sha))
    return Applied(before, after, change, problem)
