"""The MLflow Model Registry as the source of truth for versions, aliases and training runs.

Embedded default: MLflow's sqlite backend and a local artifact folder under ``<home>/mlflow``;
production: an MLflow tracking server (``STREAMSCORE_MODEL__TRACKING_URI``). Our layer adds the
artifact's sha256 as a version tag, checked on every load.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core.errors import ConfigError, ModelLoadError
from services.core.settings import Settings
from services.scoring.model import LoadedModel, load_artifacts

logger = logging.getLogger(__name__)
SHA_TAG = "artifact_sha256"
ARTIFACT_PATH = "model"


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
        self.uri = settings.mlflow_uri
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
        mv = self.client.create_model_version(
            self.name, source=source, run_id=run_id, tags={SHA_TAG: sha256, **tags}
        )
        return str(mv.version)

    def alias_version(self, alias: str) -> str | None:
        from mlflow.exceptions import MlflowException

        try:
            return str(self.client.get_model_version_by_alias(self.name, alias).version)
        except MlflowException:
            return None

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.name, alias, version)

    def versions(self) -> list[VersionInfo]:
        from mlflow.exceptions import MlflowException

        try:
            found = self.client.search_model_versions(f"name='{self.name}'")
        except MlflowException:
            return []
        return sorted(
            (
                VersionInfo(
                    str(v.version),
                    tuple(getattr(v, "aliases", []) or []),
                    v.run_id,
                    (v.tags or {}).get(SHA_TAG),
                    dict(v.tags or {}),
                    int(v.creation_timestamp or 0),
                )
                for v in found
            ),
            key=lambda v: int(v.version),
        )

    def load(self, alias: str | None = None, version: str | None = None) -> LoadedModel:
        """Download, verify (sha256) and load a version, by alias or number.

        Raises:
            ConfigError: no such alias/version.
            ModelIntegrityError, ModelLoadError: the artifact is tampered with or unloadable.
        """
        from mlflow.exceptions import MlflowException

        try:
            if version is None:
                mv = self.client.get_model_version_by_alias(self.name, alias or "champion")
            else:
                mv = self.client.get_model_version(self.name, version)
        except MlflowException as exc:
            what = f"version {version}" if version else f"alias {alias}"
            raise ConfigError(
                f"model {self.name} has no {what} in the registry: run `streamscore train`"
            ) from exc
        expected = (mv.tags or {}).get(SHA_TAG)
        if not expected:
            raise ModelLoadError(f"{self.name} v{mv.version} has no {SHA_TAG} tag: refusing it")
        with tempfile.TemporaryDirectory(prefix="streamscore-model-") as tmp:
            try:
                local = self._mlflow.artifacts.download_artifacts(
                    artifact_uri=mv.source, dst_path=tmp
                )
            except (MlflowException, OSError) as exc:
                raise ModelLoadError(f"{self.name} v{mv.version}: download failed: {exc}") from exc
            loaded = load_artifacts(Path(local), self.name, str(mv.version), expected)
        logger.info("model loaded: %s v%s", self.name, mv.version)
        return loaded
