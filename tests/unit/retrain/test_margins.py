"""Retrain and promotion margins follow the task's loss: amounts of log loss, but fractions of
the compared MAE for regression (MAE is in the label's units: minutes here, euros elsewhere)."""

from __future__ import annotations

from services.retrain.policy import PromotionPolicy, offline_gate, quality_trigger


def test_the_offline_gate_takes_a_fraction_of_the_champions_mae() -> None:
    # Minutes in the hundreds: 0.3 worse is 0.3% worse, within a 5% margin.
    wide = {"holdout_mae": 100.3, "champion_holdout_mae": 100.0}
    assert offline_gate(wide, 0.05, loss="mae")[0]
    # Minutes near 1: 0.04 worse is 4% worse: within 5%, not within 1%.
    near = {"holdout_mae": 1.04, "champion_holdout_mae": 1.0}
    assert offline_gate(near, 0.05, loss="mae")[0]
    passed, why = offline_gate(near, 0.01, loss="mae")
    assert not passed and "margin 0.01 of 1.0000 = 0.01" in why
    # Log loss keeps its absolute margin.
    assert not offline_gate({"holdout_log_loss": 0.56, "champion_holdout_log_loss": 0.5}, 0.05)[0]


def test_promotion_needs_the_challenger_to_win_by_a_fraction_of_the_champions_mae() -> None:
    policy = PromotionPolicy(min_shadow_ms=0, min_labels=10, margin=0.002, loss="mae")
    paired = {"count": 500, "champion_mae": 100.0, "challenger_mae": 99.9}
    decision, why = policy.decide(0, 1, paired)
    assert decision == "keep", why  # 0.1% better, 0.2% needed
    assert policy.decide(0, 1, paired | {"challenger_mae": 99.7})[0] == "promote"
    log_loss = PromotionPolicy(0, 10, margin=0.002)
    pair = {"count": 500, "champion_log_loss": 0.5, "challenger_log_loss": 0.4985}
    assert log_loss.decide(0, 1, pair)[0] == "keep"


def test_the_quality_trigger_takes_a_fraction_of_the_holdout_mae() -> None:
    assert quality_trigger({"count": 2000, "mae": 21.0}, 20.0, 1000, 0.1, "mae") is None
    why = quality_trigger({"count": 2000, "mae": 23.0}, 20.0, 1000, 0.1, "mae")
    assert why is not None and "margin 0.1 of 20.0000 = 2" in why
    # Minutes near 1: 0.1 minutes worse is 10% worse and must not pass a 5% margin.
    assert quality_trigger({"count": 2000, "mae": 1.1}, 1.0, 1000, 0.05, "mae") is not None
