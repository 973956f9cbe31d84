"""A model ready to score: its artifact verified by sha256 and loaded from a safe format.

Formats: LightGBM's text model, and scikit-learn through skops with an exact allowlist of the
types our trainer writes. Never pickle. With a signing key configured, the artifact digest must
also carry its HMAC signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from services.core.errors import ModelIntegrityError, ModelLoadError
from services.core.task import BINARY, Task
from services.scoring.calibration import Calibration
from services.scoring.compiled import CompiledForest, compile_lightgbm

MODEL_FILES = {"lightgbm": "model.txt", "sklearn": "model.skops"}
METADATA_FILE = "metadata.json"
# skops loads its own safe defaults (scikit-learn estimators, numpy arrays, plain containers)
# and lists every other type in a file as untrusted. Of those we admit exactly the ones our
# trainer writes, per flavour; anything else (``builtins.exec``, a numpy function, a user class)
# is refused. Widen it only together with the trainer.
SKOPS_ALLOWED = {
    "sklearn": frozenset({"sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"}),
}
SIGNATURE_TAG = "artifact_hmac"


def sign_digest(digest: str, key: bytes) -> str:
    """HMAC-SHA256 of an artifact digest: the version tag ``artifact_hmac``.

    >>> sign_digest("ab", b"k") == sign_digest("ab", b"k") != sign_digest("ab", b"other")
    True
    """
    return hmac.new(key, digest.encode(), hashlib.sha256).hexdigest()


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True, slots=True)
class LogisticFallback:
    """The small scorer stored with a version: standardise, then a logistic regression.

    Pure numpy, so it still answers when the main model cannot (a library error, a corrupt
    tree). Kept in metadata.json, which the artifact digest covers.

    >>> fb = LogisticFallback((0.0, 0.0), (1.0, 1.0), (1.0, -1.0), 0.0)
    >>> fb.predict(np.array([[0.0, 0.0], [2.0, 2.0], [np.nan, 0.0]])).tolist()
    [0.5, 0.5, 0.5]
    """

    mean: tuple[float, ...]
    scale: tuple[float, ...]
    coef: tuple[float, ...]
    intercept: float

    def predict(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        standard = (X - np.asarray(self.mean)) / np.asarray(self.scale)
        # A missing (NaN) value counts as the training mean, as it was imputed when fitting.
        z = np.nan_to_num(standard, nan=0.0, posinf=0.0, neginf=0.0) @ np.asarray(self.coef)
        z = np.clip(z + self.intercept, -50.0, 50.0)  # no overflow: exp(50) is finite
        return np.asarray(1.0 / (1.0 + np.exp(-z)), dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "logistic",
            "mean": list(self.mean),
            "scale": list(self.scale),
            "coef": list(self.coef),
            "intercept": self.intercept,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogisticFallback:
        return cls(
            tuple(map(float, d["mean"])),
            tuple(map(float, d["scale"])),
            tuple(map(float, d["coef"])),
            float(d["intercept"]),
        )


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """What the scorer needs besides the weights; stored beside the model as metadata.json."""

    flavor: str
    feature_names: tuple[str, ...]
    feature_spec_version: str
    sha256: str  # of the model file alone; the registry's tag is the digest of every file
    base_rate: float  # the last rung of the fallback ladder
    fallback: LogisticFallback | None = None  # the rung before it
    calibration: Calibration | None = None  # applied to the model's scores (not the fallback's)
    # The task the version was trained for. base_rate is the binary base rate or the regression
    # training mean; a multiclass version's last rung is its class prior instead.
    task: Task = BINARY
    class_prior: tuple[float, ...] = ()

    @property
    def constant(self) -> tuple[float, ...]:
        """The constant rung's answer, in ``Task.fill``'s terms."""
        return self.class_prior if self.task.kind == "multiclass" else (self.base_rate,)

    def to_json(self) -> str:
        data = {
            "flavor": self.flavor,
            "feature_names": list(self.feature_names),
            "feature_spec_version": self.feature_spec_version,
            "sha256": self.sha256,
            "base_rate": self.base_rate,
            "fallback": self.fallback.to_dict() if self.fallback else None,
        }
        if self.calibration is not None:  # absent otherwise: older digests stay the same
            data["calibration"] = self.calibration.to_dict()
        if self.task != BINARY:  # absent for binary: older digests stay the same
            data |= self.task.to_dict()
        if self.class_prior:
            data["class_prior"] = list(self.class_prior)
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str) -> ModelMetadata:
        d = json.loads(text)
        fb = d.get("fallback")
        cal = d.get("calibration")
        return cls(
            d["flavor"],
            tuple(d["feature_names"]),
            d["feature_spec_version"],
            d["sha256"],
            float(d["base_rate"]),
            LogisticFallback.from_dict(fb) if fb else None,
            Calibration.from_dict(cal) if cal else None,
            Task.from_dict(d),
            tuple(map(float, d.get("class_prior", ()))),
        )


def artifact_digest(directory: Path) -> str:
    """sha256 over every file of an artifact (names and contents), so that changing, adding or
    removing any file (the model, its metadata, its fallback) changes the digest.

    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "a").write_text("x")
    ...     before = artifact_digest(Path(d))
    ...     _ = (Path(d) / "a").write_text("y")
    ...     before != artifact_digest(Path(d))
    True
    """
    h = hashlib.sha256()
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        h.update(path.relative_to(directory).as_posix().encode() + b"\0")
        h.update(sha256_file(path).encode() + b"\n")
    return h.hexdigest()


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, verified and loaded. Never mutated: a swap builds a new one."""

    name: str
    version: str
    metadata: ModelMetadata
    model: Any
    compiled: CompiledForest | None = None  # LightGBM compiled by lleaves, when it could be

    def predict(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The outputs per row (columns in ``metadata.feature_names`` order): a probability
        (binary, calibrated when the version carries a calibration), a value (regression), or
        a row of class probabilities (multiclass, shape ``(n, classes)``)."""
        cal = self.metadata.calibration
        raw = self.predict_raw(X)
        return raw if cal is None or len(raw) == 0 else cal.apply(raw)

    def predict_raw(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The model's own outputs per row, before any calibration."""
        task = self.metadata.task
        if len(X) == 0:
            return np.empty((0, task.width)) if task.width > 1 else np.empty(0)
        if self.compiled is not None:
            return self.compiled.predict(X)
        if self.metadata.flavor == "lightgbm":
            return np.asarray(self.model.predict(X, num_threads=1), dtype=np.float64)
        with warnings.catch_warnings():
            # Fitted on named columns (a registered outside model, its names checked against
            # the spec at registration): the matrix is in that order, only unnamed.
            warnings.filterwarnings("ignore", message="X does not have valid feature names")
            if task.kind == "regression":
                return np.asarray(self.model.predict(X), dtype=np.float64)
            proba = np.asarray(self.model.predict_proba(X), dtype=np.float64)
        return proba if task.kind == "multiclass" else proba[:, 1]

    def predict_fallback(self, X: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], str]:
        """The fallback ladder below the model: the stored logistic scorer (binary), else the
        constant of the task (base rate, training mean, class prior). Returns the outputs and
        which rung answered."""
        fb = self.metadata.fallback
        task = self.metadata.task
        if fb is not None and len(X) and task == BINARY:
            try:
                scores = fb.predict(X)
                if scores.shape == (len(X),) and np.isfinite(scores).all():
                    return scores, "logistic"
            except (ValueError, FloatingPointError):  # shape mismatch, bad numbers
                pass
        return task.fill(self.metadata.constant, len(X)), task.constant_rung()


def write_artifacts(
    directory: Path,
    flavor: str,
    model: Any,
    feature_names: tuple[str, ...],
    feature_spec_version: str,
    base_rate: float,
    fallback: LogisticFallback | None = None,
    calibration: Calibration | None = None,
    task: Task = BINARY,
    class_prior: tuple[float, ...] = (),
) -> ModelMetadata:
    """Save a fitted model and its metadata into ``directory``; returns the metadata (the
    registry's tag is ``artifact_digest(directory)`` afterwards)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / MODEL_FILES[flavor]
    if flavor == "lightgbm":
        path.write_text(model.model_to_string(), encoding="utf-8")
    else:
        import skops.io as sio

        sio.dump(model, path)
    meta = ModelMetadata(
        flavor,
        feature_names,
        feature_spec_version,
        sha256_file(path),
        base_rate,
        fallback,
        calibration,
        task,
        class_prior,
    )
    (directory / METADATA_FILE).write_text(meta.to_json(), encoding="utf-8")
    return meta


def load_artifacts(
    directory: Path,
    name: str,
    version: str,
    expected_sha256: str,
    compile_cache: Path | None = None,
    *,
    signature: str | None = None,
    signing_key: bytes | None = None,
) -> LoadedModel:
    """Verify and load a downloaded version; with ``compile_cache``, a LightGBM model is also
    compiled (or taken from that cache), LightGBM's predictor staying the fallback.

    Raises:
        ModelIntegrityError: ``artifact_digest(directory)`` is not ``expected_sha256``, or the
            model file is not the one its metadata names.
        ModelLoadError: files missing or unreadable, or untrusted types in a skops file.
    """
    if signing_key is not None and not (
        signature and hmac.compare_digest(signature, sign_digest(expected_sha256, signing_key))
    ):
        raise ModelIntegrityError(
            f"{name} v{version}: {'a wrong' if signature else 'no'} {SIGNATURE_TAG} signature "
            "(a signing key is configured): refusing to load it"
        )
    digest = artifact_digest(directory)
    if digest != expected_sha256:
        raise ModelIntegrityError(
            f"{name} v{version}: artifact sha256 {digest[:12]}... does not match the registered "
            f"{expected_sha256[:12]}...: refusing to load it"
        )
    try:
        meta = ModelMetadata.from_json((directory / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, KeyError, ValueError) as exc:
        raise ModelLoadError(f"{name} v{version}: unreadable metadata: {exc}") from exc
    path = directory / MODEL_FILES.get(meta.flavor, "?")
    if not path.is_file():
        raise ModelLoadError(f"{name} v{version}: no {path.name} in the artifact")
    actual = sha256_file(path)
    if actual != meta.sha256:
        raise ModelIntegrityError(
            f"{name} v{version}: {path.name} sha256 {actual[:12]}... is not the metadata's "
            f"{meta.sha256[:12]}...: refusing to load it"
        )
    try:
        if meta.flavor == "lightgbm":
            model: Any = lgb.Booster(model_str=path.read_text(encoding="utf-8"))
        else:
            import skops.io as sio

            untrusted = sio.get_untrusted_types(file=path)
            unsafe = [t for t in untrusted if t not in SKOPS_ALLOWED[meta.flavor]]
            if unsafe:
                raise ModelLoadError(f"{name} v{version}: untrusted types in skops file: {unsafe}")
            model = sio.load(path, trusted=untrusted)
    except (lgb.basic.LightGBMError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"{name} v{version}: cannot load {path.name}: {exc}") from exc
    compiled = None
    # lleaves is used for binary models only: their outputs are the ones its tests cover.
    if meta.flavor == "lightgbm" and compile_cache is not None and meta.task == BINARY:
        compiled = compile_lightgbm(path, meta.sha256, compile_cache)
    return LoadedModel(name, version, meta, model, compiled)
