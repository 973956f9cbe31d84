"""The trainer's answers with a real embedded registry (MLflow on sqlite) and an in-memory
feature store; the window is what a replay of the topics would return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from services.codec.avro import AvroCodec
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.settings import Settings
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.retrain import trainer
from services.retrain.trainer import Codecs
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import RolloutState
from services.synthetic.world import Drift, World
from services.training.dataset import build_training_set
from services.training.pipeline import train_and_register
from services.training.train import fit, predict

SPEC = FeatureSpec.load()
ONSET = 20_000


def _codecs() -> Codecs:
    schemas = load_schemas(DEFAULT_SCHEMAS_DIR)
    ids = ManifestSchemaIds(Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE))
    event = AvroCodec(schemas["ModelEvent"], ids, "ml.model-events.v1-value")
    return Codecs(event, event, event)  # only model events are encoded (announce)


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    settings = Settings(
        home=tmp_path,
        kafka={"bootstrap_servers": "127.0.0.1:9"},  # announcing fails fast; workers would poll
        # No feature log here: the window's rows are the in-memory store's, asked for.
        retrain={"min_labelled": 2000, "change_point_margin_seconds": 0, "features_now": True},
    )
    world = World(SPEC, n_users=600, n_items=200, seed=11, drift=Drift("concept", ONSET, 0, 1.0))
    store = InMemoryFeatureStore(SPEC)
    for group in ("user", "item"):
        keys, rows = world.features(group)
        store.put_many(group, keys, rows)
    registry = MlflowRegistry(settings)
    history = world.events(15_000, start_index=0)
    labels = {lab["event_id"]: lab["engaged"] for lab in world.labels(history)}
    train_and_register(registry, SPEC, store, history, labels, seed=1)  # v1, champion
    window: dict[str, Any] = {}
    monkeypatch.setattr(
        trainer, "labelled_window", lambda *_a: (window["events"], window["labels"])
    )
    monkeypatch.setattr("services.scoring.operations.announce", lambda *_a: None)
    return {
        "settings": settings,
        "world": world,
        "store": store,
        "registry": registry,
        "window": window,
    }


def _answer(env: dict[str, Any], start: int, n: int, since_index: int) -> dict[str, Any]:
    world = env["world"]
    events = world.events(n, start_index=start)
    env["window"]["events"] = events
    env["window"]["labels"] = {lab["event_id"]: lab["engaged"] for lab in world.labels(events)}
    request = {
        "request_id": "r" * 32,
        "reason": "drift: error",
        "requested_by": "control-plane",
        "drift_signal_ids": ["s"],
        "window_start": world.start_time_ms + since_index,  # 1 event per ms at 1000/s
    }
    return trainer.answer(env["settings"], env["registry"], SPEC, env["store"], _codecs(), request)


def test_a_challenger_that_loses_offline_is_recorded_not_shadowed(env: dict[str, Any]) -> None:
    """Same concept, fewer rows: the 2,500-event challenger loses to the 15,000-event champion
    on the newest rows; it is registered with the reason, and nothing serves it."""
    out = _answer(env, 16_000, 2500, 16_000)
    registry = env["registry"]
    assert out["status"] == "gated", out
    assert out["metrics"]["holdout_log_loss"] > out["metrics"]["champion_holdout_log_loss"]
    assert registry.rollout_state() == RolloutState("1")
    tags = next(v.tags for v in registry.versions() if v.version == out["version"])
    assert tags["streamscore.decision"].startswith("not shadowed, lost offline")


def test_after_a_drift_the_window_is_cut_at_the_change_and_the_model_learns_it(
    env: dict[str, Any],
) -> None:
    """The detector placed the change 4,000 events early (ADWIN's buckets); the trainer finds
    it in the champion's errors, trains on the new concept only, and beats an offline model
    trained on the whole window on fresh post-drift events (independent oracle: sklearn AUC on
    the world's own labels)."""
    world, store = env["world"], env["store"]
    out = _answer(env, ONSET - 4000, 7500, ONSET - 4000)
    assert out["status"] == "shadowed", out
    cut = out["window_start"] - world.start_time_ms
    assert ONSET - 300 <= cut <= ONSET + 300, cut
    assert env["registry"].rollout_state() == RolloutState("1", out["version"], "shadow")
    # Fresh post-drift events: the challenger against a model trained on the uncut window.
    fresh = world.events(5000, start_index=ONSET + 20_000)
    y = np.array([lab["engaged"] for lab in world.labels(fresh)], dtype=int)
    X = build_training_set(SPEC, store, fresh, {e["event_id"]: True for e in fresh}).X
    challenger = env["registry"].load(version=out["version"])
    uncut = env["window"]
    ts = build_training_set(SPEC, store, uncut["events"], uncut["labels"])
    whole = fit(ts.X, ts.y, ts.names, "lightgbm", 1)
    mine, theirs = roc_auc_score(y, challenger.predict(X)), roc_auc_score(y, predict(whole, X))
    assert mine > theirs + 0.03, (mine, theirs)


def test_a_challenger_a_person_put_in_place_is_not_replaced(env: dict[str, Any]) -> None:
    from services.scoring.operations import apply_change
    from services.scoring.rollout import plan_rollout

    registry, world, store = env["registry"], env["world"], env["store"]
    later = world.events(4000, start_index=40_000)
    labels = {lab["event_id"]: lab["engaged"] for lab in world.labels(later)}
    v2 = train_and_register(
        registry, SPEC, store, later, labels, seed=2, make_champion_if_none=False
    )
    apply_change(
        env["settings"],
        registry,
        _codecs().model_event,
        lambda s, _r: plan_rollout(s, v2.version, "canary", 5, "trying it", "alice", 1),
    )
    out = _answer(env, ONSET, 4000, ONSET)
    assert out["status"] == "held", out  # post-drift rows: it beats the champion offline
    assert f"v{v2.version} is a challenger a person put in place" in out["why"]
    assert registry.rollout_state() == RolloutState("1", v2.version, "canary", 5.0)


def test_the_gates_compare_the_tasks_loss() -> None:
    from services.retrain.policy import PromotionPolicy, offline_gate, quality_trigger

    m = {"holdout_mae": 1.7, "champion_holdout_mae": 2.4}
    assert offline_gate(m, 0.0, None, "mae") == (
        True,
        "holdout MAE 1.7000 vs champion 2.4000 on the same rows (margin 0 of 2.4000 = 0)",
    )
    why = quality_trigger({"count": 2000, "mae": 3.1}, 1.7, 1000, 0.5, "mae")
    assert why == (
        "quality: online MAE 3.1000 over 2000 events vs holdout 1.7000 "
        "(margin 0.5 of 1.7000 = 0.85)"
    )
    policy = PromotionPolicy(0, 10, 0.1, "mae")
    paired = {"count": 50, "champion_mae": 2.0, "challenger_mae": 1.6}
    assert policy.decide(0, 1, paired)[0] == "promote"


def test_without_the_feature_log_the_window_is_not_trained_on_todays_features(
    env: dict[str, Any],
) -> None:
    """No feature log (none here) and no STREAMSCORE_RETRAIN__FEATURES_NOW: the window's events
    are not joined to the store as it is now; nothing is trained, and the reason says why."""
    settings = env["settings"]
    strict = settings.model_copy(
        update={"retrain": settings.retrain.model_copy(update={"features_now": False})}
    )
    versions = len(env["registry"].versions())
    out = _answer(env | {"settings": strict}, ONSET - 4000, 7500, ONSET - 4000)
    assert out["status"] == "waiting", out
    assert out["why"] == (
        "0 labelled events with a row in the feature log since the window start, need 2000"
    )
    assert len(env["registry"].versions()) == versions
