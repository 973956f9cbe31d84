"""A canary serves each user the scores of the model it routes them to.

The other rollout tests route between two copies of one model, so they can only check labels.
Here the challenger is a different model (fit on the flipped labels, another seed) whose scores
differ from the champion's on every row, so a row scored by the wrong model, or labelled with
the wrong version, is seen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.features.assemble import feature_names
from services.features.spec import FeatureSpec
from services.scoring.model import LoadedModel, artifact_digest, load_artifacts, write_artifacts
from services.scoring.rollout import in_canary
from services.scoring.serving import Serving, score_rows
from services.training.train import fit, fit_fallback

SPEC = FeatureSpec.load()
USERS = [f"user-{i}" for i in range(5_000)]


@pytest.fixture(scope="module")
def challenger(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """Version 8: the conftest champion's data with its labels flipped, fit with another seed."""
    rng = np.random.default_rng(0)
    names = feature_names(SPEC)
    X = rng.normal(size=(2000, len(names)))
    y = 1 - (X[:, 0] + X[:, 20] + rng.normal(size=2000) > 0).astype(np.int64)
    trained = fit(X, y, names, "lightgbm", seed=2)
    directory: Path = tmp_path_factory.mktemp("challenger")
    fallback = fit_fallback(X, y, seed=2)
    write_artifacts(
        directory, "lightgbm", trained.model, names, SPEC.version, float(y.mean()), fallback
    )
    return load_artifacts(directory, "engagement", "8", artifact_digest(directory))


@pytest.mark.parametrize("percent", [10.0, 50.0, 90.0])
def test_canary_rows_carry_the_challengers_own_scores_and_the_rest_the_champions(
    model: LoadedModel, challenger: LoadedModel, percent: float
) -> None:
    X = np.random.default_rng(7).normal(size=(len(USERS), len(model.metadata.feature_names)))
    # The oracle: each model's own predict, on the whole matrix (row-wise, so any subset of
    # rows scores the same), computed outside score_rows.
    champion_scores = model.predict(X)
    challenger_scores = challenger.predict(X)
    # The test has power only if the two models disagree on the rows it routes.
    assert np.all(champion_scores != challenger_scores)
    assert np.abs(champion_scores - challenger_scores).mean() > 0.1

    scored = score_rows(Serving(model, challenger, "canary", percent), X, USERS, 0.5)

    on_canary = np.asarray(in_canary(USERS, percent), dtype=bool)
    assert 0 < on_canary.sum() < len(USERS)
    labelled = np.asarray([v == "challenger" for v in scored.variants], dtype=bool)
    assert np.array_equal(labelled, on_canary)
    assert [v == "8" for v in scored.versions] == on_canary.tolist()
    # Exactly the challenger's scores on its rows and the champion's on the others.
    assert np.array_equal(scored.scores[on_canary], challenger_scores[on_canary])
    assert np.array_equal(scored.scores[~on_canary], champion_scores[~on_canary])
    assert not any(scored.degraded) and not scored.fallbacks
    assert scored.shadow_scores is None


def test_a_full_canary_serves_only_the_challenger_and_none_serves_only_the_champion(
    model: LoadedModel, challenger: LoadedModel
) -> None:
    X = np.random.default_rng(8).normal(size=(500, len(model.metadata.feature_names)))
    users = USERS[:500]
    full = score_rows(Serving(model, challenger, "canary", 100.0), X, users, 0.5)
    assert np.array_equal(full.scores, challenger.predict(X))
    assert set(full.versions) == {"8"}
    empty = score_rows(Serving(model, challenger, "canary", 0.0), X, users, 0.5)
    assert np.array_equal(empty.scores, model.predict(X))
    assert set(empty.versions) == {"7"}
