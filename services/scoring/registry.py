"""The MLflow Model Registry as the source of truth for versions, aliases and training runs.

Embedded default: MLflow's sqlite backend and a local artifact folder under ``<home>/mlflow``;
production: an MLflow tracking server (``STREAMSCORE_MODEL__TRACKING_URI``). Our layer adds the
artifact's sha256 as a version tag, checked on every load.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from services.core.errors import ConfigError, ModelLoadError, RegistryUnavailable
from services.core.settings import Settings
from services.scoring.artifact_cache import ArtifactCache
from services.scoring.model import SIGNATURE_TAG, LoadedModel, load_artifacts, sign_digest
from services.scoring.rollout import MODES, AliasChange, Mode, RolloutState

logger = logging.getLogger(__name__)
SHA_TAG = "artifact_sha256"
ARTIFACT_PATH = "model"
MODE_TAG = "streamscore.rollout.mode"
PERCENT_TAG = "streamscore.rollout.canary_percent"
HISTORY_TAG = "streamscore.history."
T = TypeVar("T")


def _not_found(exc: Exception) -> bool:
    """The registry answered "no such model/version/alias" (anything else is an outage)."""
    code = getattr(exc, "error_code", "")
    return code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE") or (
        "not found" in str(exc).lower() and "connection" not in str(exc).lower()
    )


def _outage(exc: Exception) -> RegistryUnavailable:
    return RegistryUnavailable(f"model registry unavailable: {type(exc).__name__}: {exc}")


def _ask(call: Callable[[], T], missing: Callable[[], T]) -> T:
    """A registry read: its answer, or ``missing()`` when the registry says there is no such
    model, version or alias. Any other failure (MLflow, HTTP and database errors alike) is an
    outage: ``RegistryUnavailable``."""
    from mlflow.exceptions import MlflowException

    try:
        return call()
    except Exception as exc:  # noqa: BLE001
        if isinstance(exc, MlflowException) and _not_found(exc):
            return missing()
        raise _outage(exc) from exc


def _write(call: Callable[[], object]) -> None:
    """A registry write: an outage is ``RegistryUnavailable``; "no such model or version" is
    ``ConfigError``."""

    def missing() -> None:
        raise ConfigError("the registry has no such model or version")

    _ask(call, missing)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    """One registered version as listed by `streamscore models list`."""

    version: str
    aliases: tuple[str, ...]
    run_id: str | None
    sha256: str | None
    tags: dict[str, str]
    created_ms: int


class MlflowRegistry:
    """Registered model ``settings.model.name``: runs, versions and aliases in MLflow."""

    def __init__(self, settings: Settings) -> None:
        import mlflow
        from mlflow import MlflowClient

        self._mlflow = mlflow
        self.name = settings.model.name
        if settings.model.tracking_uri is not None:
            # A tracking server that does not answer must read as an outage in seconds, not
            # after MLflow's default retries (minutes). The operator's own values win.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
            os.environ.setdefault(
                "MLFLOW_HTTP_REQUEST_TIMEOUT", f"{settings.model.registry_timeout_seconds:g}"
            )
        key = settings.model.signing_key
        self.signing_key = key.get_secret_value().encode() if key is not None else None
        self.cache = ArtifactCache(
            settings.model.cache_dir or settings.home / "model-cache", settings.model.name
        )
        self.uri = settings.mlflow_uri
        self._compile_cache = settings.model.compile_cache_dir if settings.model.compile else None
        self._artifact_root: Path | None = None
        if settings.model.tracking_uri is None:
            (settings.home / "mlflow").mkdir(parents=True, exist_ok=True)
            self._artifact_root = settings.home / "mlflow" / "artifacts"
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)
        self._experiment = settings.model.experiment

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self._experiment)
        if exp is not None:
            return str(exp.experiment_id)
        location = self._artifact_root.as_uri() if self._artifact_root else None
        return str(self.client.create_experiment(self._experiment, artifact_location=location))

    def log_run(
        self,
        params: dict[str, Any],
        metrics: dict[str, float],
        tags: dict[str, str],
        artifact_dir: Path,
        run_name: str,
    ) -> tuple[str, str]:
        """Record a training run with its artifacts; returns (run id, artifact URI of the model)."""
        mlflow = self._mlflow
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name) as run:
            mlflow.log_params(params)
            mlflow.log_metrics({k: v for k, v in metrics.items() if v == v})  # drop NaN
            mlflow.set_tags(tags)
            mlflow.log_artifacts(str(artifact_dir), artifact_path=ARTIFACT_PATH)
            return str(run.info.run_id), f"{run.info.artifact_uri}/{ARTIFACT_PATH}"

    def register(self, run_id: str, source: str, sha256: str, tags: dict[str, str]) -> str:
        """Create a new version of the model from a run's artifacts; returns the version."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(self.name)
        except MlflowException as exc:
            if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(
                exc
            ):
                raise
        signed = {SIGNATURE_TAG: sign_digest(sha256, self.signing_key)} if self.signing_key else {}
        mv = self.client.create_model_version(
            self.name, source=source, run_id=run_id, tags={SHA_TAG: sha256, **signed, **tags}
        )
        return str(mv.version)

    def alias_version(self, alias: str) -> str | None:
        return _ask(
            lambda: str(self.client.get_model_version_by_alias(self.name, alias).version),
            lambda: None,
        )

    def set_alias(self, alias: str, version: str) -> None:
        _write(lambda: self.client.set_registered_model_alias(self.name, alias, version))

    def tag_version(self, version: str, key: str, value: str) -> None:
        """Raises ``RegistryUnavailable`` (transient) on an outage, ``ConfigError`` when the
        version does not exist."""
        _write(lambda: self.client.set_model_version_tag(self.name, version, key, value))

    # -- rollout state and alias history (registered-model aliases and tags) -----------------
    def rollout_state(self) -> RolloutState:
        """Champion, challenger and rollout mode, read in one registry call.

        Raises:
            RegistryUnavailable: the registry did not answer (not the same as "no champion").
        """
        rm = _ask(lambda: self.client.get_registered_model(self.name), lambda: None)
        if rm is None:
            return RolloutState(None)
        aliases = {k: str(v) for k, v in (rm.aliases or {}).items()}
        tags = rm.tags or {}
        mode: Mode = "none"
        if tags.get(MODE_TAG) in MODES:
            mode = tags[MODE_TAG]
        challenger = aliases.get("challenger")
        if challenger is None:
            mode = "none"
        try:
            percent = float(tags.get(PERCENT_TAG, "0"))
        except ValueError:
            percent = 0.0
        return RolloutState(
            aliases.get("champion"),
            challenger,
            mode,
            percent if mode == "canary" else 0.0,
        )

    def apply(self, state: RolloutState, change: AliasChange) -> None:
        """Write a planned state: aliases, rollout tags, and the change into the history.

        A narrowing change (stopping a rollout) turns the mode off before moving aliases and a
        widening one sets aliases first, so a worker reading in between never routes traffic to
        a version that is not (or no longer) the challenger.
        """
        set_tags = state.mode == "none"
        if set_tags:
            self._set_rollout_tags(state)
        if state.champion is not None:
            self.set_alias("champion", state.champion)
        if state.challenger is not None:
            self.set_alias("challenger", state.challenger)
        elif self.alias_version("challenger") is not None:
            _write(lambda: self.client.delete_registered_model_alias(self.name, "challenger"))
        if not set_tags:
            self._set_rollout_tags(state)
        key = f"{HISTORY_TAG}{change.at_ms:015d}.{uuid.uuid4().hex[:6]}"
        _write(lambda: self.client.set_registered_model_tag(self.name, key, change.to_json()))

    def _set_rollout_tags(self, state: RolloutState) -> None:
        c = self.client
        _write(lambda: c.set_registered_model_tag(self.name, MODE_TAG, state.mode))
        _write(
            lambda: c.set_registered_model_tag(self.name, PERCENT_TAG, f"{state.canary_percent:g}")
        )

    def history(self) -> list[AliasChange]:
        """Every recorded alias change, oldest first."""
        rm = _ask(lambda: self.client.get_registered_model(self.name), lambda: None)
        tags = (rm.tags or {}) if rm is not None else {}
        out = []
        for key in sorted(k for k in tags if k.startswith(HISTORY_TAG)):
            try:
                out.append(AliasChange.from_json(tags[key]))
            except (ValueError, TypeError):
                logger.warning("unreadable alias history entry %s", key)
        return out

    def run_metrics(self, run_id: str | None) -> dict[str, float]:
        from mlflow.exceptions import MlflowException

        if not run_id:
            return {}
        try:
            return dict(self.client.get_run(run_id).data.metrics)
        except MlflowException:
            return {}

    def versions(self) -> list[VersionInfo]:
        found: list[Any] = _ask(
            lambda: list(self.client.search_model_versions(f"name='{self.name}'")), list
        )
        rm = _ask(lambda: self.client.get_registered_model(self.name), lambda: None)
        if rm is None:
            return []
        aliases = rm.aliases or {}
        # search_model_versions does not fill in aliases on every backend; the model does.
        by_version: dict[str, list[str]] = {}
        for alias, version in aliases.items():
            by_version.setdefault(str(version), []).append(alias)
        return sorted(
            (
                VersionInfo(
                    str(v.version),
                    tuple(sorted(by_version.get(str(v.version), []))),
                    v.run_id,
                    (v.tags or {}).get(SHA_TAG),
                    dict(v.tags or {}),
                    int(v.creation_timestamp or 0),
                )
                for v in found
            ),
            key=lambda v: int(v.version),
        )

    def version_numbers(self) -> list[str]:
        return [v.version for v in self.versions()]

    def load(
        self, alias: str | None = None, version: str | None = None, keep: Path | None = None
    ) -> LoadedModel:
        """Download, verify (sha256) and load a version, by alias or number; ``keep``: a
        folder that receives a copy of the verified artifact (its other files: a reference).

        Raises:
            ConfigError: no such alias/version.
            ModelIntegrityError, ModelLoadError: the artifact is tampered with or unloadable.
            RegistryUnavailable: the registry or its artifact store did not answer.
        """

        def missing() -> Any:
            what = f"version {version}" if version else f"alias {alias}"
            raise ConfigError(
                f"model {self.name} has no {what} in the registry: run `streamscore train`"
            )

        mv = _ask(
            lambda: (
                self.client.get_model_version_by_alias(self.name, alias or "champion")
                if version is None
                else self.client.get_model_version(self.name, version)
            ),
            missing,
        )
        expected = (mv.tags or {}).get(SHA_TAG)
        signature = (mv.tags or {}).get(SIGNATURE_TAG)
        if not expected:
            raise ModelLoadError(f"{self.name} v{mv.version} has no {SHA_TAG} tag: refusing it")
        with tempfile.TemporaryDirectory(prefix="streamscore-model-") as tmp:
            try:
                local = self._mlflow.artifacts.download_artifacts(
                    artifact_uri=mv.source, dst_path=tmp
                )
            except Exception as exc:  # noqa: BLE001 (the artifact store is part of the registry)
                raise _outage(exc) from exc
            loaded = load_artifacts(
                Path(local),
                self.name,
                str(mv.version),
                expected,
                signature=signature,
                signing_key=self.signing_key,
            )
            if keep is not None:
                shutil.copytree(local, keep, dirs_exist_ok=True)
            try:
                self.cache.put(str(mv.version), expected, signature, Path(local))
            except OSError as exc:  # the copy is for outages; serving does not need it
                logger.warning("cannot keep a local copy of v%s: %s", mv.version, exc)
        logger.info("model loaded: %s v%s", self.name, mv.version)
        return loaded
