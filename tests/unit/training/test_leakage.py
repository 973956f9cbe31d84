"""Label leakage: training on the online store as it is now against training on the feature log.

In ``services.synthetic.leaky`` a rider's features move with each trip's outcome after the
trip. 20,000 trips are scored in batches (their served rows logged as the worker logs them),
then a model is trained two ways and judged on its 20% random holdout and on the next 8,000
trips as served live (rows as they were at each trip's time). After a warm-up of 4,000 trips
the world is in its steady state, so a holdout and the live stream are alike:

=====================  ===========  ========
trained on             holdout AUC  live AUC
=====================  ===========  ========
online store now       0.874        0.636
feature log            0.667        0.650
=====================  ===========  ========

(``.venv/bin/python -m pytest -q -s tests/unit/training/test_leakage.py`` prints the figures.)
The store-trained model looks excellent offline (its rows hold the outcome) and is not; the
log-trained one promises what it then delivers, and serves better.
"""

from __future__ import annotations

from services.features.log import FeatureLogIndex
from services.synthetic.leaky import SPEC, LeakyWorld
from services.training.dataset import TrainingSet, build_training_set
from services.training.train import evaluate, fit, predict, split

PARAMS = {"num_boost_round": 100}


def _aucs(ts: TrainingSet, live: TrainingSet) -> tuple[float, float]:
    train, hold = split(len(ts.y), 0.2, seed=3)
    trained = fit(ts.X[train], ts.y[train], ts.names, "lightgbm", 3, PARAMS)
    holdout = evaluate(ts.y[hold], predict(trained, ts.X[hold]))["auc"]
    return holdout, evaluate(live.y, predict(trained, live.X))["auc"]


def test_training_on_the_feature_log_closes_the_gap_that_todays_features_open() -> None:
    world = LeakyWorld()
    world.play(4_000)  # riders with a history already: the world in its steady state
    history, outcomes = world.play(20_000)
    # Training today: every historical trip joined to the rider's features as they are now.
    leaky = build_training_set(SPEC, world.store, history, outcomes)
    assert leaky.sources == {"online_store_now": 20_000}
    live_events, live_outcomes = world.play(8_000)
    log = FeatureLogIndex(SPEC, world.logged)  # the warm-up's rows too, unused
    logged = build_training_set(SPEC, world.store, history, outcomes, logged=log)
    assert logged.sources == {"feature_log": 20_000}
    # Live quality: the rows each trip was actually scored with (from the log as well).
    live = build_training_set(SPEC, world.store, live_events, live_outcomes, logged=log)
    assert live.sources == {"feature_log": 8_000}

    leaky_holdout, leaky_live = _aucs(leaky, live)
    log_holdout, log_live = _aucs(logged, live)
    print(
        f"\ntrained on the online store now: holdout AUC {leaky_holdout:.3f}, live "
        f"{leaky_live:.3f}\ntrained on the feature log:      holdout AUC {log_holdout:.3f}, "
        f"live {log_live:.3f}"
    )
    assert leaky_holdout - leaky_live > 0.15  # the offline figure lies
    assert abs(log_holdout - log_live) < 0.03  # the offline figure holds live
    assert log_live > leaky_live  # and the model trained on served rows serves better
