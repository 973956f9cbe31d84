"""Rollout rules: canary share and stickiness, shadow agreement, promote/rollback plans, and
scoring a batch under each rollout mode with the fallback ladder."""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from services.scoring.model import LoadedModel
from services.scoring.rollout import (
    AliasChange,
    RolloutState,
    agreement,
    in_canary,
    plan_promote,
    plan_rollback,
    plan_rollout,
)
from services.scoring.serving import Serving, score_rows

USERS = [f"user-{i}" for i in range(10_000)]


def test_canary_at_10_percent_over_10000_users_lands_within_one_point() -> None:
    share = sum(in_canary(USERS, 10.0)) / len(USERS)
    assert 0.09 <= share <= 0.11, share
    # Random ids too, not only our naming scheme.
    random_ids = [
        uuid.UUID(int=int(x)).hex for x in np.random.default_rng(1).integers(0, 2**62, 10_000)
    ]
    assert 0.09 <= sum(in_canary(random_ids, 10.0)) / 10_000 <= 0.11


def test_a_user_never_flips_between_variants() -> None:
    first = in_canary(USERS, 10.0)
    # Same answer in any batch composition and order, and growing the canary only adds users.
    shuffled = list(reversed(USERS))
    assert list(reversed(in_canary(shuffled, 10.0))) == first
    wider = in_canary(USERS, 25.0)
    assert all(w for f, w in zip(first, wider, strict=True) if f)


def test_agreement_of_identical_and_opposite_scores() -> None:
    a = np.linspace(0.01, 0.99, 101)
    same = agreement(a, a.copy(), 0.5)
    assert (same.mean_abs_diff, same.decision_flips) == (0.0, 0)
    assert same.rank_correlation == pytest.approx(1.0)
    opposite = agreement(a, 1 - a, 0.5)
    assert opposite.rank_correlation == pytest.approx(-1.0)
    assert opposite.decision_flips == 100  # all but the one at exactly 0.5


def test_promote_rollback_round_trip_through_history() -> None:
    s0 = RolloutState("1")
    s1, c1 = plan_rollout(s0, "2", "canary", 10, "try v2", "ops", 1)
    s2, c2 = plan_promote(s1, None, "canary healthy", "ops", 2)
    assert s2 == RolloutState("2") and (c2.from_version, c2.to_version) == ("1", "2")
    s3, c3 = plan_rollback(s2, [c1, c2], None, "AUC dropped", "ops", 3)
    assert s3 == RolloutState("1") and c3.event_type == "rolled_back"
    assert AliasChange.from_json(c3.to_json()) == c3
    with pytest.raises(ValueError, match="no earlier champion"):
        plan_rollback(s3, [c1, c2, c3], None, "again", "ops", 4)  # v1 was never promoted to
    with pytest.raises(ValueError, match="already champion"):
        plan_promote(s2, "2", "", "ops", 5)
    with pytest.raises(ValueError, match="percent"):
        plan_rollout(s2, "3", "canary", 0, "", "ops", 6)


def _versions(model: LoadedModel) -> tuple[LoadedModel, LoadedModel]:
    return model, replace(model, version="8")


def test_canary_routes_by_user_and_labels_each_row(model: LoadedModel) -> None:
    champ, chall = _versions(model)
    X = np.random.default_rng(2).normal(size=(len(USERS), len(model.metadata.feature_names)))
    scored = score_rows(Serving(champ, chall, "canary", 10.0), X, USERS, 0.5)
    expected = in_canary(USERS, 10.0)
    assert [v == "8" for v in scored.versions] == expected
    assert [v == "challenger" for v in scored.variants] == expected
    assert scored.shadow_scores is None and not any(scored.degraded)


def test_shadow_scores_everything_but_serves_nothing(model: LoadedModel) -> None:
    champ, chall = _versions(model)
    X = np.random.default_rng(3).normal(size=(50, len(model.metadata.feature_names)))
    scored = score_rows(Serving(champ, chall, "shadow"), X, USERS[:50], 0.5)
    assert set(scored.versions) == {"7"} and set(scored.variants) == {"champion"}
    assert scored.shadow_version == "8" and scored.shadow_scores is not None
    assert scored.agreement is not None and scored.agreement.n == 50


class _Broken:
    def predict(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError("boom")


def test_a_failing_challenger_never_affects_what_is_served(model: LoadedModel) -> None:
    champ = model
    broken = replace(model, version="8", model=_Broken())
    X = np.random.default_rng(4).normal(size=(2000, len(model.metadata.feature_names)))
    users = USERS[:2000]
    canary = score_rows(Serving(champ, broken, "canary", 50.0), X, users, 0.5)
    assert set(canary.versions) == {"7"} and not any(canary.degraded)
    assert canary.fallbacks["challenger_error"] == sum(in_canary(users, 50.0))
    assert np.array_equal(canary.scores, champ.predict(X))
    shadow = score_rows(Serving(champ, broken, "shadow"), X, users, 0.5)
    assert shadow.shadow_scores is None and shadow.fallbacks == {"shadow_error": 2000}


def test_canary_rows_of_a_failing_champion_are_counted_once(model: LoadedModel) -> None:
    broken = replace(model, model=_Broken())
    chall = replace(model, version="8")
    X = np.random.default_rng(5).normal(size=(1000, len(model.metadata.feature_names)))
    scored = score_rows(Serving(broken, chall, "canary", 10.0), X, USERS[:1000], 0.5)
    on_canary = sum(in_canary(USERS[:1000], 10.0))
    assert scored.fallbacks == {"logistic": 1000 - on_canary}
    assert sum(scored.degraded) == 1000 - on_canary
