"""Turn the registry's rollout state into a ``Serving`` set, refusing versions that fail to load.

The fallback ladder's model rung lives here: a champion that cannot be loaded (sha256 mismatch,
unreadable artifact) is never served; the worker keeps the last good champion, or, at start-up
when it has none, walks back through earlier champions and then older versions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from services.core.errors import (
    ConfigError,
    ModelIntegrityError,
    ModelLoadError,
    RegistryUnavailable,
)
from services.core.task import Task
from services.scoring.artifact_cache import ArtifactCache
from services.scoring.model import LoadedModel
from services.scoring.rollout import AliasChange, RolloutState, previous_champion
from services.scoring.serving import Serving

logger = logging.getLogger(__name__)


class ModelSource(Protocol):
    """What the loader needs of a registry (``MlflowRegistry`` is one)."""

    name: str

    def load(self, alias: str | None = None, version: str | None = None) -> LoadedModel: ...

    def rollout_state(self) -> RolloutState: ...

    def history(self) -> list[AliasChange]: ...

    def version_numbers(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Refusal:
    """A version that was asked for and not served, and why."""

    version: str
    role: str  # champion or challenger
    reason: str  # integrity or load
    detail: str


@dataclass(frozen=True)
class Built:
    serving: Serving
    refusals: list[Refusal] = field(default_factory=list)
    fell_back: bool = False  # the champion served is not the registry's champion


def smoke_check(model: LoadedModel, task: Task | None = None) -> None:
    """A loaded model must answer a row of zeros as its task says (a probability, a finite
    value, or class probabilities summing to 1), or it is not served; with ``task`` (the
    domain's), it must also have been trained for that task.

    Raises:
        ModelLoadError: another task's model, or it raised or answered something unusable.
    """
    have = model.metadata.task
    if task is not None and have != task:
        raise ModelLoadError(
            f"{model.name} v{model.version}: a {have.describe()} model, but this domain's task "
            f"is {task.describe()}"
        )
    X = np.zeros((2, len(model.metadata.feature_names)))
    try:
        p = model.predict(X)
    except Exception as exc:  # noqa: BLE001 (any failure here means "do not serve it")
        raise ModelLoadError(f"{model.name} v{model.version}: cannot score: {exc}") from exc
    shape = (2, have.width) if have.width > 1 else (2,)
    if p.shape != shape or not np.isfinite(p).all():
        raise ModelLoadError(
            f"{model.name} v{model.version}: outputs of shape {p.shape}, or not finite"
        )
    if have.kind != "regression" and ((p < 0).any() or (p > 1).any()):
        raise ModelLoadError(f"{model.name} v{model.version}: scores are not probabilities")
    if have.kind == "multiclass" and not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ModelLoadError(f"{model.name} v{model.version}: class probabilities do not sum to 1")


class ServingLoader:
    """Loads versions once (cached by version number) and builds serving sets."""

    def __init__(
        self,
        source: ModelSource,
        copies: ArtifactCache | None = None,
        signing_key: bytes | None = None,
        task: Task | None = None,
    ) -> None:
        self.source = source
        self.task = task  # the domain's: a version trained for another task is refused
        self.copies = copies  # local copies for a start during a registry outage
        self.signing_key = signing_key
        self._cache: dict[str, LoadedModel] = {}

    def remember(self, serving: Serving) -> None:
        """Record what is served now (its versions were verified from the registry)."""
        if self.copies is None:
            return
        challenger = serving.challenger.version if serving.challenger else None
        state = RolloutState(
            serving.champion.version, challenger, serving.mode, serving.canary_percent
        )
        try:
            self.copies.remember(state)
        except OSError as exc:
            logger.warning("cannot record the served state locally: %s", exc)

    def from_copies(self, outage: RegistryUnavailable) -> tuple[RolloutState, Built]:
        """Start-up during a registry outage: what this machine served last, verified again.

        Raises:
            RegistryUnavailable: no usable local copy (the worker must not start).
        """
        state = self.copies.last_state() if self.copies is not None else None
        if state is None or state.champion is None:
            raise RegistryUnavailable(
                f"{outage}; and no local copy of a served version: refusing to start"
            )
        try:
            champion = self.copies.load(state.champion, self.signing_key)  # type: ignore[union-attr]
            smoke_check(champion, self.task)
        except ModelLoadError as exc:
            raise RegistryUnavailable(
                f"{outage}; and the local copy of v{state.champion} is unusable ({exc}): "
                "refusing to start"
            ) from exc
        challenger = None
        target = state.active_challenger()
        if target is not None:
            try:
                challenger = self.copies.load(target, self.signing_key)  # type: ignore[union-attr]
                smoke_check(challenger, self.task)
            except ModelLoadError as exc:
                logger.error("local copy of challenger v%s unusable: %s", target, exc)
        mode = state.mode if challenger is not None else "none"
        serving = Serving(champion, challenger, mode, state.canary_percent if challenger else 0.0)
        self._cache = {m.version: m for m in (champion, challenger) if m is not None}
        logger.warning(
            "registry unavailable: serving the local copy of what this machine served last (%s)",
            serving.describe(),
        )
        return state, Built(serving)

    def load(self, version: str) -> LoadedModel:
        """A verified, smoke-checked version. Raises ModelLoadError (or ModelIntegrityError)."""
        if version not in self._cache:
            model = self.source.load(version=version)
            smoke_check(model, self.task)
            self._cache[version] = model
        return self._cache[version]

    def build(self, state: RolloutState, current: Serving | None) -> Built:
        """The serving set for ``state``; what cannot be loaded is refused and reported."""
        refusals: list[Refusal] = []
        champion: LoadedModel | None = None
        fell_back = False
        if state.champion is not None:
            champion = self._try(state.champion, "champion", refusals)
        if champion is None and current is not None:
            champion, fell_back = current.champion, True
        if champion is None:
            champion = self._walk_back(state.champion, refusals)
            fell_back = True
        challenger = None
        target = state.active_challenger()
        if target is not None:
            challenger = self._try(target, "challenger", refusals)
        mode = state.mode if challenger is not None else "none"
        serving = Serving(champion, challenger, mode, state.canary_percent if challenger else 0.0)
        # Keep only what is served: a long-lived worker must not accumulate every version.
        keep = {champion.version, challenger.version if challenger else ""}
        self._cache = {v: m for v, m in self._cache.items() if v in keep}
        return Built(serving, refusals, fell_back)

    def _try(self, version: str, role: str, refusals: list[Refusal]) -> LoadedModel | None:
        """A version, or None (refused and reported). A registry outage is not a refusal: it
        propagates, and the caller keeps what it serves."""
        try:
            return self.load(version)
        except (ModelLoadError, ConfigError) as exc:
            reason = (
                "integrity"
                if isinstance(exc, ModelIntegrityError)
                else "missing"
                if isinstance(exc, ConfigError)
                else "load"
            )
            refusals.append(Refusal(version, role, reason, str(exc)))
            logger.error(
                "refusing %s v%s (%s): %s",
                role,
                version,
                reason,
                exc,
                extra={"model_version": version, "stage": "model_load", "reason": reason},
            )
            return None

    def _walk_back(self, bad: str | None, refusals: list[Refusal]) -> LoadedModel:
        """Start-up without a loadable champion: earlier champions, then older versions."""
        history = self.source.history()
        tried = {bad}
        current = bad
        while (current := previous_champion(current, history)) is not None:
            if current in tried:
                break
            tried.add(current)
            model = self._try(current, "champion", refusals)
            if model is not None:
                logger.warning("serving earlier champion v%s instead of v%s", current, bad)
                return model
        if bad is None:  # no champion was ever named: no version is approved
            raise ConfigError(f"model {self.source.name} has no champion: run `streamscore train`")
        older = [v for v in self.source.version_numbers() if v not in tried]
        for version in sorted(older, key=int, reverse=True):
            if int(version) > int(bad):
                continue  # never newer-than-champion versions nobody approved
            model = self._try(version, "champion", refusals)
            if model is not None:
                logger.warning("serving v%s: the champion v%s cannot be loaded", version, bad)
                return model
        raise ConfigError(
            f"model {self.source.name}: no loadable version "
            f"({'; '.join(r.detail for r in refusals) or 'no champion'})"
        )
