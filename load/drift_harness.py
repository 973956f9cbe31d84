"""Detector evaluation on synthetic streams: detection delay and false alarms at default settings.

    python -m load.drift_harness [--stationary 1000000] [--seeds 5] [--plot docs/img/drift.png]
    python -m load.drift_harness --loop [--seeds 5] [--plot docs/img/heal.png]

``--loop`` measures the whole retraining loop instead (``load.heal_harness``): onset to
detection and to promotion, and the promoted model against an oracle.

Streams come from ``services.synthetic.world.World`` with its drift knobs (abrupt or ramped;
covariate or
concept). The "model" is the world's own pre-drift truth, i.e. a perfect model trained before
the change, so what is measured is the detectors, not a model's quality. Signals, as in
production: the served score and watched features (the scoring worker; covariate drift), and the
per-event log loss once labels arrive (the label join; concept drift). One partition, batches of
500, the settings' defaults (ADWIN, delta 1e-5, at least 1,000 events between firings).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from load import heal_harness
from services.core.settings import DriftSettings
from services.drift.monitor import DetectorConfig, DriftMonitor
from services.features.spec import FeatureSpec
from services.labels.join import log_losses
from services.synthetic.world import Drift, World

BATCH = 500
ONSET = 20_000
SIGNALS_COVARIATE = ("score", "feature:position", "feature:item_age_hours", "feature:session_depth")


@dataclass(frozen=True)
class Outcome:
    scenario: str
    seed: int
    signal: str
    events: int
    false_alarms: int  # firings before the onset (or anywhere, when stationary)
    delay: int | None  # events from onset to the first firing at or after it


def default_config() -> DetectorConfig:
    d = DriftSettings()
    return DetectorConfig(d.detector, d.adwin_delta, d.ph_threshold, d.ph_delta, d.min_events)


def signals_of(
    world: World, truth: World, n: int, start: int
) -> dict[str, npt.NDArray[np.float64]]:
    """Score, features and per-event log loss for events ``start .. start+n``.

    ``truth`` is the pre-drift world (same seed, no drift): its probabilities are the model's
    scores; labels come from ``world`` (which may drift).
    """
    events = world.events(n, start_index=start)
    scores = truth.probabilities(events)
    labels = np.array([lab["engaged"] for lab in world.labels(events)], dtype=np.float64)
    out = {
        "score": scores,
        "error": log_losses(scores, labels),
    }
    for name in ("position", "item_age_hours", "session_depth"):
        out[f"feature:{name}"] = np.array([float(e[name]) for e in events])
    return out


def run(
    world: World, truth: World, n: int, signals: tuple[str, ...], onset: int | None
) -> list[tuple[str, int, int | None]]:
    """(signal, false alarms, delay) for one stream, generated and fed in chunks."""
    monitor = DriftMonitor({"default": default_config()})
    false_alarms = dict.fromkeys(signals, 0)
    delay: dict[str, int | None] = dict.fromkeys(signals)
    chunk = 20_000
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        values = signals_of(world, truth, size, start)
        for b in range(0, size, BATCH):
            offsets = list(range(start + b, start + min(b + BATCH, size)))
            for signal in signals:
                e = monitor.observe(0, signal, values[signal][b : b + BATCH], offsets, offsets)
                if e is None:
                    continue
                if onset is None or e.offset_end < onset:
                    false_alarms[signal] += 1
                elif delay[signal] is None:
                    delay[signal] = e.offset_end - onset
    return [(s, false_alarms[s], delay[s]) for s in signals]


def evaluate(stationary: int, seeds: int, drifted: int) -> list[Outcome]:
    spec = FeatureSpec.load()
    outcomes: list[Outcome] = []
    scenarios = {
        "abrupt concept": Drift("concept", ONSET, 0, 1.0),
        "abrupt concept, mild (0.25)": Drift("concept", ONSET, 0, 0.25),
        "gradual concept": Drift("concept", ONSET, 20_000, 1.0),
        "abrupt covariate": Drift("covariate", ONSET, 0, 1.0),
        "abrupt covariate, mild (0.25)": Drift("covariate", ONSET, 0, 0.25),
        "gradual covariate": Drift("covariate", ONSET, 20_000, 1.0),
    }
    for seed in range(seeds):
        truth = World(spec, n_users=2000, n_items=800, seed=100 + seed)
        for name, knob in scenarios.items():
            world = World(spec, n_users=2000, n_items=800, seed=100 + seed, drift=knob)
            signals = ("error",) if knob.kind == "concept" else SIGNALS_COVARIATE
            for signal, fa, delay in run(world, truth, drifted, signals, ONSET):
                outcomes.append(Outcome(name, seed, signal, drifted, fa, delay))
    truth = World(spec, n_users=2000, n_items=800, seed=99)
    for signal, fa, _ in run(truth, truth, stationary, ("error", *SIGNALS_COVARIATE), None):
        outcomes.append(Outcome("stationary", 99, signal, stationary, fa, None))
    return outcomes


def summarise(outcomes: list[Outcome]) -> list[dict[str, Any]]:
    rows = []
    keys = sorted({(o.scenario, o.signal) for o in outcomes})
    for scenario, signal in keys:
        group = [o for o in outcomes if (o.scenario, o.signal) == (scenario, signal)]
        delays = [o.delay for o in group if o.delay is not None]
        events = sum(o.events if scenario == "stationary" else ONSET for o in group)
        alarms = sum(o.false_alarms for o in group)
        rows.append(
            {
                "scenario": scenario,
                "signal": signal,
                "runs": len(group),
                "detected": len(delays) if scenario != "stationary" else None,
                "delay_median": float(np.median(delays)) if delays else None,
                "delay_max": max(delays) if delays else None,
                "false_alarms": alarms,
                "false_alarms_per_million": alarms / events * 1e6 if events else math.nan,
                "pre_onset_events": events,
            }
        )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | signal | runs | detected | delay median | delay max | false alarms "
        "(events watched) |\n|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for r in rows:
        det = "" if r["detected"] is None else f"{r['detected']}/{r['runs']}"
        med = "" if r["delay_median"] is None else f"{r['delay_median']:,.0f}"
        mx = "" if r["delay_max"] is None else f"{r['delay_max']:,}"
        lines.append(
            f"| {r['scenario']} | {r['signal']} | {r['runs']} | {det} | {med} | {mx} | "
            f"{r['false_alarms']} ({r['pre_onset_events']:,}) |"
        )
    return head + "\n".join(lines)


def plot(path: str) -> None:
    """One abrupt-concept stream: the rolling log loss and where the detector fired."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spec = FeatureSpec.load()
    truth = World(spec, n_users=2000, n_items=800, seed=100)
    fig, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for ax, (title, knob, signal) in zip(
        axes,
        [
            (
                "abrupt concept drift at 20,000: per-event log loss",
                Drift("concept", ONSET, 0),
                "error",
            ),
            (
                "gradual covariate drift from 20,000 (ramp 20,000): item age (hours)",
                Drift("covariate", ONSET, 20_000),
                "feature:item_age_hours",
            ),
        ],
        strict=True,
    ):
        world = World(spec, n_users=2000, n_items=800, seed=100, drift=knob)
        values = signals_of(world, truth, 50_000, 0)[signal]
        monitor = DriftMonitor({"default": default_config()})
        fired = []
        for b in range(0, len(values), BATCH):
            offsets = list(range(b, min(b + BATCH, len(values))))
            e = monitor.observe(0, signal, values[b : b + BATCH], offsets, offsets)
            if e is not None:
                fired.append(e.offset_end)
        rolling = np.convolve(values, np.ones(500) / 500, mode="valid")
        ax.plot(np.arange(len(rolling)) + 500, rolling, lw=0.8, label="rolling mean (500)")
        ax.axvline(ONSET, color="grey", ls="--", label="onset")
        for i, f in enumerate(fired):
            ax.axvline(f, color="red", label="ADWIN fired" if i == 0 else None)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    axes[-1].set_xlabel("event index")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--stationary", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--events", type=int, default=60_000, help="Per drifted stream.")
    parser.add_argument("--plot", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--loop", action="store_true", help="Measure the retraining loop.")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.loop:
        runs = heal_harness.evaluate_loop(args.seeds)
        if args.plot:
            heal_harness.plot(runs, args.plot)
        rows = heal_harness.summarise(runs)
        if args.json:
            print(json.dumps({"summary": rows, "runs": runs}, indent=2))
        else:
            print(heal_harness.markdown(rows))
            print(f"\n({time.perf_counter() - started:.0f} s)")
        return
    rows = summarise(evaluate(args.stationary, args.seeds, args.events))
    if args.plot:
        plot(args.plot)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(markdown(rows))
        print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
