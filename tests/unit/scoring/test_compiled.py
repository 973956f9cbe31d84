"""Compiled LightGBM models score exactly as LightGBM does, are cached by sha256, and fall back
to LightGBM when compilation fails. The oracle is LightGBM's own Booster, trained here."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from services.scoring.compiled import cache_key, compile_lightgbm
from services.scoring.model import artifact_digest, load_artifacts, sha256_file, write_artifacts


@pytest.fixture(scope="module")
def booster() -> lgb.Booster:
    rng = np.random.default_rng(7)
    X = rng.normal(size=(4000, 12))
    X[rng.random(X.shape) < 0.05] = np.nan  # missing values take LightGBM's default branch
    y = (np.nansum(X[:, :3], axis=1) + rng.normal(scale=0.5, size=len(X)) > 0).astype(int)
    params = {"objective": "binary", "num_leaves": 15, "verbose": -1, "seed": 1}
    return lgb.train(params, lgb.Dataset(X, y), num_boost_round=60)


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    X = rng.normal(scale=2.0, size=(n, 12))
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def test_compiled_scores_equal_lightgbm(booster: lgb.Booster, tmp_path: Path) -> None:
    model_file = tmp_path / "model.txt"
    model_file.write_text(booster.model_to_string(), encoding="utf-8")
    compiled = compile_lightgbm(model_file, sha256_file(model_file), tmp_path / "cache")
    assert compiled is not None
    X = _rows(5000, 3)
    expected = booster.predict(X, num_threads=1)
    assert np.max(np.abs(compiled.predict(X) - expected)) < 1e-6


def test_the_cache_is_keyed_by_sha256_and_reused(booster: lgb.Booster, tmp_path: Path) -> None:
    from services.core import metrics

    model_file = tmp_path / "model.txt"
    model_file.write_text(booster.model_to_string(), encoding="utf-8")
    sha = sha256_file(model_file)
    cache = tmp_path / "cache"
    first = compile_lightgbm(model_file, sha, cache)
    assert first is not None and first.path == cache / cache_key(sha)
    before = metrics.MODEL_COMPILES.labels(outcome="cached")._value.get()
    second = compile_lightgbm(model_file, sha, cache)
    assert second is not None and second.path == first.path
    assert metrics.MODEL_COMPILES.labels(outcome="cached")._value.get() == before + 1
    assert [p.name for p in cache.iterdir()] == [cache_key(sha)]  # no temporary files left
    X = _rows(500, 4)
    assert np.array_equal(first.predict(X), second.predict(X))


def test_a_failed_compile_falls_back_to_lightgbm(booster: lgb.Booster, tmp_path: Path) -> None:
    artifact = tmp_path / "artifact"
    write_artifacts(artifact, "lightgbm", booster, tuple(f"f{i}" for i in range(12)), "v1", 0.5)
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("a file where the cache directory should be")
    loaded = load_artifacts(artifact, "m", "1", artifact_digest(artifact), blocked)
    assert loaded.compiled is None
    X = _rows(300, 5)
    assert np.array_equal(loaded.predict(X), booster.predict(X, num_threads=1))
    served = load_artifacts(artifact, "m", "1", artifact_digest(artifact), tmp_path / "ok")
    assert served.compiled is not None
    assert np.max(np.abs(served.predict(X) - booster.predict(X, num_threads=1))) < 1e-6
