"""The retraining loop, measured: from a drift's onset to detection, to a promoted model, and how
good that model is against an oracle.

    python -m load.drift_harness --loop [--seeds 5] [--plot docs/img/heal.png]

One stream per seed and scenario from ``services.synthetic.world.World`` (concept drift at
event 20,000:
abrupt, and a mild one at half the strength). The champion is trained on 15,000 pre-drift
events. Labels arrive 1,000 events after their event. The loop is the control plane's, with its
own pure parts (``services.retrain.policy``, the trainer's CUSUM refinement and newest-by-time
holdout, the offline gate, the paired promotion decision, River's detectors through
``DriftMonitor``'s ``SignalMonitor``); time is the event index (one event per millisecond).
What it leaves out: Kafka, Redis and MLflow (measured elsewhere), and the quality trigger.

Per run it reports the events from the onset to detection and to promotion, the promoted
model's AUC and log loss on 10,000 fresh post-drift events, and the same for the **oracle**: a
model trained offline on exactly the post-onset labelled events available at promotion time.
Beside ADWIN and PageHinkley run two dummy detectors, "always" (fires on every batch) and
"never", so delays and false alarms are read against them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from services.core.settings import DriftSettings, RetrainSettings
from services.drift.monitor import DetectorConfig, SignalMonitor
from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore
from services.labels.join import log_losses
from services.retrain.policy import (
    DriftAggregator,
    PromotionPolicy,
    change_index,
    offline_gate,
    retrain_request,
)
from services.synthetic.world import Drift, World
from services.training.dataset import build_training_set
from services.training.train import evaluate, fit, predict, split_by_time

ONSET = 20_000
EVENTS = 45_000  # streamed per run
TEST = 10_000  # fresh post-drift events the models are judged on (after the stream)
LABEL_DELAY = 1_000  # events between an event and its label
BATCH = 500
MIN_LABELLED = 3_000  # labelled events after the change point before training
MIN_PAIRED = 1_000  # labelled events scored by both models before deciding
COOLDOWN = 5_000  # events between retrain requests
MARGIN = 1_000  # events the request's window reaches before the detector's start
SCENARIOS = {"abrupt": 1.0, "mild (0.5)": 0.5}
DETECTORS = ("ADWIN", "PageHinkley", "always", "never")
Array = npt.NDArray[np.float64]


class _Dummy:
    """A detector that always or never flags (baselines)."""

    def __init__(self, fire: bool) -> None:
        self.drift_detected = False
        self.fire = fire

    def update(self, _x: float) -> None:
        self.drift_detected = self.fire


@dataclass(frozen=True)
class _DummyConfig:
    fire: bool
    min_events: int
    kind: str = "dummy"

    def build(self) -> _Dummy:
        return _Dummy(self.fire)

    @property
    def name(self) -> str:
        return "always" if self.fire else "never"


def detector_config(name: str) -> Any:
    d = DriftSettings()
    if name in ("always", "never"):
        return _DummyConfig(name == "always", d.min_events)
    kind = "adwin" if name == "ADWIN" else "page_hinkley"
    return DetectorConfig(kind, d.adwin_delta, d.ph_threshold, d.ph_delta, d.min_events)


@dataclass
class Stream:
    """One seed and scenario, assembled once: features, outcomes, the champion's scores."""

    X: Array
    y: npt.NDArray[np.int64]
    X_test: Array
    y_test: npt.NDArray[np.int64]
    names: tuple[str, ...]
    champion_scores: Array
    champion_test: Array


def make_stream(seed: int, strength: float) -> Stream:
    spec = FeatureSpec.load()
    world = World(
        spec, n_users=2000, n_items=800, seed=seed, drift=Drift("concept", ONSET, 0, strength)
    )
    calm = World(spec, n_users=2000, n_items=800, seed=seed)
    store = InMemoryFeatureStore(spec)
    for group in ("user", "item"):
        keys, rows = world.features(group)
        store.put_many(group, keys, rows)

    def assemble(
        w: World, n: int, start: int
    ) -> tuple[Array, npt.NDArray[np.int64], tuple[str, ...]]:
        events = w.events(n, start_index=start)
        labels = {lab["event_id"]: lab["engaged"] for lab in w.labels(events)}
        ts = build_training_set(spec, store, events, labels)
        return ts.X, ts.y, ts.names

    hx, hy, names = assemble(calm, 15_000, 5_000_000)
    champion = fit(hx, hy, names, "lightgbm", seed)
    X, y, _ = assemble(world, EVENTS, 0)
    X_test, y_test, _ = assemble(world, TEST, EVENTS + 5_000)
    return Stream(X, y, X_test, y_test, names, predict(champion, X), predict(champion, X_test))


def run_loop(stream: Stream, detector: str, seed: int) -> dict[str, Any]:
    """The loop over one stream until the first promotion after the onset (or the end)."""
    r = RetrainSettings()
    monitor = SignalMonitor(detector_config(detector), "error", -1)
    aggregator = DriftAggregator(COOLDOWN, 1)
    promotion = PromotionPolicy(0, MIN_PAIRED, r.promote_margin)
    served = stream.champion_scores
    errors = log_losses(served, stream.y)
    out: dict[str, Any] = {"detector": detector, "seed": seed, "false_alarms": 0, "requests": 0}
    out |= {"detected": None, "promoted": None, "gated": 0, "kept": 0}
    pending: int | None = None  # the window start of the request being answered
    shadow: tuple[int, Any, Array] | None = None  # since, model, its scores
    fed = 0  # labelled events fed to the detector
    for end in range(BATCH, EVENTS + 1, BATCH):
        labelled = max(0, end - LABEL_DELAY)
        if labelled > fed:
            idx = list(range(fed, labelled))
            evidence = monitor.observe(errors[fed:labelled], idx, idx)
            fed = labelled
            if evidence is not None:
                if evidence.offset_end < ONSET:
                    out["false_alarms"] += 1
                elif out["detected"] is None:
                    out["detected"] = end - ONSET
                signal = {
                    "signal": "error",
                    "partition": -1,
                    "detected_at": end,
                    "time_start": evidence.time_start_ms + 1,
                }
                if pending is None and shadow is None and aggregator.add(signal, end) is not None:
                    out["requests"] += 1
                    request = retrain_request(
                        "m", "1", [signal], 0, end, "harness", margin_ms=MARGIN
                    )
                    pending = max(0, int(request["window_start"]) - 1)
        if pending is not None:
            # The trainer: the champion's errors over the window place the change.
            start = pending + change_index(errors[pending:labelled])
            if labelled - start >= MIN_LABELLED:
                rows = np.arange(start, labelled)
                tr, ho = split_by_time(rows, r.holdout_share)
                model = fit(stream.X[rows[tr]], stream.y[rows[tr]], stream.names, "lightgbm", seed)
                hy = stream.y[rows[ho]]
                metrics = {
                    "holdout_log_loss": float(
                        log_losses(predict(model, stream.X[rows[ho]]), hy).mean()
                    ),
                    "champion_holdout_log_loss": float(errors[rows[ho]].mean()),
                }
                passed, _why = offline_gate(metrics, r.offline_margin)
                pending = None
                if passed:  # as the trainer does: refit on the whole window once gated
                    model = fit(stream.X[rows], stream.y[rows], stream.names, "lightgbm", seed)
                    shadow = (end, model, predict(model, stream.X))
                    out["train_rows"], out["window_start"] = int(len(rows)), int(start)
                else:
                    out["gated"] += 1
        if shadow is not None:
            since, model, scores = shadow
            paired = np.arange(since, labelled)
            if len(paired):
                q = {
                    "count": float(len(paired)),
                    "champion_log_loss": float(errors[paired].mean()),
                    "challenger_log_loss": float(
                        log_losses(scores[paired], stream.y[paired]).mean()
                    ),
                }
                decision, _why = promotion.decide(since, end, q)
                if decision == "keep":
                    out["kept"] += 1
                    shadow = None
                elif decision == "promote" and since >= ONSET:
                    out["promoted"] = end - ONSET
                    test = predict(model, stream.X_test)
                    out |= _judged("promoted", test, stream.y_test)
                    oracle_rows = np.arange(ONSET, labelled)
                    oracle = fit(
                        stream.X[oracle_rows], stream.y[oracle_rows], stream.names, "lightgbm", seed
                    )
                    out |= _judged("oracle", predict(oracle, stream.X_test), stream.y_test)
                    out["oracle_rows"] = int(len(oracle_rows))
                    break
                elif decision == "promote":  # before the onset: a same-concept model, served on
                    served = scores
                    errors = log_losses(served, stream.y)
                    shadow = None
    out |= _judged("champion", stream.champion_test, stream.y_test)
    return out


def _judged(who: str, p: Array, y: npt.NDArray[np.int64]) -> dict[str, float]:
    m = evaluate(y, p)
    return {f"{who}_auc": m["auc"], f"{who}_log_loss": m["log_loss"]}


def evaluate_loop(seeds: int) -> list[dict[str, Any]]:
    runs = []
    for seed in range(seeds):
        for scenario, strength in SCENARIOS.items():
            stream = make_stream(100 + seed, strength)
            for detector in DETECTORS:
                runs.append(run_loop(stream, detector, 100 + seed) | {"scenario": scenario})
    return runs


def _median(values: list[Any]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for scenario in SCENARIOS:
        for detector in DETECTORS:
            group = [r for r in runs if r["scenario"] == scenario and r["detector"] == detector]
            promoted = [r for r in group if r["promoted"] is not None]
            ratios = [r["promoted_auc"] / r["oracle_auc"] for r in promoted]
            rows.append(
                {
                    "scenario": scenario,
                    "detector": detector,
                    "runs": len(group),
                    "false_alarms": sum(r["false_alarms"] for r in group),
                    "detected": sum(r["detected"] is not None for r in group),
                    "detection_delay": _median([r["detected"] for r in group]),
                    "promoted": len(promoted),
                    "promotion_delay": _median([r["promoted"] for r in group]),
                    "promoted_auc": _median([r.get("promoted_auc") for r in promoted]),
                    "promoted_log_loss": _median([r.get("promoted_log_loss") for r in promoted]),
                    "oracle_auc": _median([r.get("oracle_auc") for r in promoted]),
                    "oracle_log_loss": _median([r.get("oracle_log_loss") for r in promoted]),
                    "auc_ratio_min": min(ratios) if ratios else None,
                    "champion_auc": _median([r["champion_auc"] for r in group]),
                }
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    def f(v: Any, spec: str) -> str:
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    head = (
        "| drift | detector | false alarms | detected | onset → detection (median) | promoted "
        "| onset → promotion (median) | promoted AUC | oracle AUC | worst ratio "
        "| promoted log loss | oracle log loss | old champion AUC |\n" + "|---" * 13 + "|\n"
    )
    lines = [
        f"| {r['scenario']} | {r['detector']} | {r['false_alarms']} | {r['detected']}/{r['runs']} "
        f"| {f(r['detection_delay'], ',.0f')} | {r['promoted']}/{r['runs']} "
        f"| {f(r['promotion_delay'], ',.0f')} | {f(r['promoted_auc'], '.3f')} "
        f"| {f(r['oracle_auc'], '.3f')} | {f(r['auc_ratio_min'], '.3f')} "
        f"| {f(r['promoted_log_loss'], '.4f')} | {f(r['oracle_log_loss'], '.4f')} "
        f"| {f(r['champion_auc'], '.3f')} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def plot(runs: list[dict[str, Any]], path: str) -> None:
    """Promoted against oracle AUC per seed, abrupt drift, per detector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5))
    for detector, marker in zip(DETECTORS[:3], "os^", strict=True):
        pts = [r for r in runs if r["detector"] == detector and r["promoted"] is not None]
        ax.scatter(
            [r["oracle_auc"] for r in pts],
            [r["promoted_auc"] for r in pts],
            marker=marker,
            label=detector,
        )
    lo, hi = 0.5, 0.85
    ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, label="= oracle")
    ax.plot([lo, hi], [0.95 * lo, 0.95 * hi], color="grey", lw=0.8, ls="--", label="0.95 x oracle")
    ax.set_xlabel("oracle AUC (post-onset labels at promotion time)")
    ax.set_ylabel("promoted model AUC")
    ax.set_title("post-drift AUC on fresh events, all seeds and scenarios", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
