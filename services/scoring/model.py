"""A model ready to score: its artifact verified by sha256 and loaded from a safe format.

Formats: LightGBM's text model, and scikit-learn through skops with only sklearn/numpy types
trusted. Never pickle.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from services.core.errors import ModelIntegrityError, ModelLoadError

MODEL_FILES = {"lightgbm": "model.txt", "sklearn": "model.skops"}
METADATA_FILE = "metadata.json"
_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.", "collections.")


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What the scorer needs besides the weights; stored beside the model as metadata.json."""

    flavor: str
    feature_names: tuple[str, ...]
    feature_spec_version: str
    sha256: str
    base_rate: float  # the fallback scorer's answer when the model cannot score

    def to_json(self) -> str:
        return json.dumps(
            {
                "flavor": self.flavor,
                "feature_names": list(self.feature_names),
                "feature_spec_version": self.feature_spec_version,
                "sha256": self.sha256,
                "base_rate": self.base_rate,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        d = json.loads(text)
        return cls(
            d["flavor"],
            tuple(d["feature_names"]),
            d["feature_spec_version"],
            d["sha256"],
            float(d["base_rate"]),
        )


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, verified and loaded. Never mutated: a swap builds a new one."""

    name: str
    version: str
    metadata: ModelMetadata
    model: Any

    def predict(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Engagement probability per row (columns in ``metadata.feature_names`` order)."""
        if len(X) == 0:
            return np.empty(0)
        if self.metadata.flavor == "lightgbm":
            return np.asarray(self.model.predict(X, num_threads=1), dtype=np.float64)
        return np.asarray(self.model.predict_proba(X)[:, 1], dtype=np.float64)


def write_artifacts(
    directory: Path,
    flavor: str,
    model: Any,
    feature_names: tuple[str, ...],
    feature_spec_version: str,
    base_rate: float,
) -> ModelMetadata:
    """Save a fitted model and its metadata into ``directory``; returns the metadata."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILES[flavor]
    if flavor == "lightgbm":
        path.write_text(model.model_to_string(), encoding="utf-8")
    else:
        import skops.io as sio

        sio.dump(model, path)
    meta = ModelMetadata(flavor, feature_names, feature_spec_version, sha256_file(path), base_rate)
    (directory / METADATA_FILE).write_text(meta.to_json(), encoding="utf-8")
    return meta


def load_artifacts(directory: Path, name: str, version: str, expected_sha256: str) -> LoadedModel:
    """Verify and load a downloaded version.

    Raises:
        ModelIntegrityError: the model file's sha256 is not ``expected_sha256``.
        ModelLoadError: files missing or unreadable, or untrusted types in a skops file.
    """
    try:
        meta = ModelMetadata.from_json((directory / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{name} v{version}: unreadable metadata: {exc}") from exc
    path = directory / MODEL_FILES.get(meta.flavor, "?")
    if not path.is_file():
        raise ModelLoadError(f"{name} v{version}: no {path.name} in the artifact")
    actual = sha256_file(path)
    if actual != expected_sha256 or actual != meta.sha256:
        raise ModelIntegrityError(
            f"{name} v{version}: artifact sha256 {actual[:12]}... does not match the registered "
            f"{expected_sha256[:12]}...: refusing to load it"
        )
    try:
        if meta.flavor == "lightgbm":
            model: Any = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
        else:
            import skops.io as sio

            untrusted = sio.get_untrusted_types(file=path)
            unsafe = [t for t in untrusted if not t.startswith(_TRUSTED_PREFIXES)]
            if unsafe:
                raise ModelLoadError(f"{name} v{version}: untrusted types in skops file: {unsafe}")
            model = sio.load(path, trusted=untrusted)
    except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{name} v{version}: cannot load {path.name}: {exc}") from exc
    return LoadedModel(name, version, meta, model)
