"""Artifacts: verified by sha256 on every load, safe formats only."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ModelIntegrityError, ModelLoadError
from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.scoring.model import (
    LoadedModel,
    ModelMetadata,
    artifact_digest,
    load_artifacts,
    write_artifacts,
)
from services.training.train import fit


def test_tampered_artifact_is_refused(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    registered = artifact_digest(copy)
    text = (copy / "model.txt").read_text()
    (copy / "model.txt").write_text(text.replace("leaf_value=", "leaf_value=9", 1))
    with pytest.raises(ModelIntegrityError, match="sha256"):
        load_artifacts(copy, "engagement", "7", registered)


@pytest.mark.parametrize("change", ["edit_metadata", "add_file", "swap_model_and_metadata"])
def test_every_file_of_the_artifact_is_covered(
    model_dir: Path, tmp_path: Path, change: str
) -> None:
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    registered = artifact_digest(copy)
    meta = ModelMetadata.from_json((copy / "metadata.json").read_text())
    if change == "edit_metadata":  # e.g. reorder features or change the fallback's weights
        (copy / "metadata.json").write_text(meta.to_json().replace('"base_rate"', '"base_rate" '))
    elif change == "add_file":
        (copy / "extra.pkl").write_bytes(b"\x80\x04")
    else:  # a consistent pair (metadata names the new model's hash) is still not the registered one
        text = (copy / "model.txt").read_text().replace("leaf_value=", "leaf_value=9", 1)
        (copy / "model.txt").write_text(text)
        digest = hashlib.sha256(text.encode()).hexdigest()
        (copy / "metadata.json").write_text(meta.to_json().replace(meta.sha256, digest))
    with pytest.raises(ModelIntegrityError):
        load_artifacts(copy, "engagement", "7", registered)


def test_model_file_must_match_its_metadata(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    text = (copy / "model.txt").read_text()
    (copy / "model.txt").write_text(text.replace("leaf_value=", "leaf_value=9", 1))
    # Even if the registry tag were rewritten to match, the metadata still names the old file.
    with pytest.raises(ModelIntegrityError, match="metadata"):
        load_artifacts(copy, "engagement", "7", artifact_digest(copy))


def test_fallback_ladder_logistic_then_base_rate(model: LoadedModel) -> None:
    X = np.random.default_rng(5).normal(size=(40, len(model.metadata.feature_names)))
    scores, rung = model.predict_fallback(X)
    assert rung == "logistic" and scores.shape == (40,) and len(set(scores.round(6))) > 10
    # The logistic fallback is a usable model, not noise: it agrees in rank with the main one.
    assert np.corrcoef(scores, model.predict(X))[0, 1] > 0.5
    scores, rung = model.predict_fallback(X[:, :5])  # wrong width: the logistic rung fails
    assert rung == "base_rate" and set(scores) == {model.metadata.base_rate}


def test_registry_hash_must_match_too(model_dir: Path) -> None:
    with pytest.raises(ModelIntegrityError):
        load_artifacts(model_dir, "engagement", "7", "0" * 64)


def test_missing_file_is_a_load_error(model_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "m"
    shutil.copytree(model_dir, copy)
    (copy / "model.txt").unlink()
    with pytest.raises(ModelLoadError, match="no model.txt"):
        load_artifacts(copy, "engagement", "7", artifact_digest(copy))


def test_loaded_model_predicts_probabilities(model: LoadedModel) -> None:
    X = np.random.default_rng(3).normal(size=(50, len(model.metadata.feature_names)))
    p = model.predict(X)
    assert p.shape == (50,) and ((p > 0) & (p < 1)).all()
    assert np.array_equal(p, model.predict(X))  # deterministic


def test_sklearn_round_trips_through_skops(tmp_path: Path) -> None:
    spec = FeatureSpec.load()
    names = feature_names(spec)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, len(names)))
    y = (X[:, 1] > 0).astype(np.int64)
    trained = fit(X, y, names, "sklearn", seed=1)
    write_artifacts(tmp_path, "sklearn", trained.model, names, spec.version, 0.5)
    loaded = load_artifacts(tmp_path, "m", "1", artifact_digest(tmp_path))
    assert np.allclose(loaded.predict(X), trained.model.predict_proba(X)[:, 1])
    assert not list(tmp_path.glob("*.pkl"))


@pytest.mark.parametrize("hook", [eval, np.save], ids=["builtins.eval", "numpy.save"])
def test_skops_admits_exactly_the_types_our_trainer_writes(tmp_path: Path, hook: object) -> None:
    """A prefix list ("builtins.", "numpy.") admitted these; the exact allowlist refuses them."""
    spec = FeatureSpec.load()
    names = feature_names(spec)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, len(names)))
    trained = fit(X, (X[:, 1] > 0).astype(np.int64), names, "sklearn", seed=1)
    trained.model.hook = hook
    write_artifacts(tmp_path, "sklearn", trained.model, names, spec.version, 0.5)
    with pytest.raises(ModelLoadError, match="untrusted types"):
        load_artifacts(tmp_path, "m", "1", artifact_digest(tmp_path))
