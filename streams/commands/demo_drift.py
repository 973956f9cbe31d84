"""The demo's second act: concept drift on a live stream, and the loop that answers it.

The control plane (a subprocess) joins delayed labels to the stored predictions; the world turns
(concept drift) partway through; the label join's detector fires, the control plane requests a
retrain, trains a challenger on the replayed window, shadows it and promotes it when it wins;
the running scoring worker swaps. The demo produces the events and, a second later, their
labels (it plays the label producer), and reports the timeline and the live quality before the
drift, after it, and after the new champion took over.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from confluent_kafka import Consumer, Producer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from services.codec.factory import codec_for
from services.core.errors import StreamMLError
from services.core.settings import Settings, to_env
from services.domain.config import domain_of
from services.drift.report import INSTALL
from services.kafka.config import consumer_config, producer_config
from services.labels.join import log_loss_one
from services.synthetic.world import Drift, World, strip_private
from services.training.dataset import build_training_set
from services.training.train import fit, predict
from streams.adapters import feature_spec, feature_store
from streams.commands.report import drift_report
from streams.topics import by_record

CHUNK = 500
LABEL_DELAY_SECONDS = 1.0
MARKERS = {
    "concept drift": "drift detected",
    "retrain requested": "retrain requested",
    "in shadow": "challenger trained, in shadow",
    "promoted v": "challenger promoted",
    "stays challenger": "challenger kept (not better)",
}
# Faster than production so the story fits in a demo: a short shadow, fewer labels.
CONTROL_ENV = {
    "STREAMSCORE_RETRAIN__MIN_SHADOW_SECONDS": "8",
    "STREAMSCORE_RETRAIN__MIN_LABELS": "800",
    "STREAMSCORE_RETRAIN__MIN_LABELLED": "3000",
    "STREAMSCORE_RETRAIN__WINDOW_SECONDS": "300",
    "STREAMSCORE_RETRAIN__MAX_EVENTS": "2500",
    "STREAMSCORE_RETRAIN__RETRY_SECONDS": "2",
    # Act 2 is a new world: an earlier run's labels would only compete with act 1 for the CPU.
    "STREAMSCORE_RETRAIN__BOOK_SECONDS": "0",
    "STREAMSCORE_METRICS__ENABLED": "false",
}


def start_control_plane(s: Settings) -> tuple[subprocess.Popen[bytes], list[tuple[float, str]]]:
    """The control plane as a subprocess; its log lines are collected with their arrival time."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= to_env(s) | CONTROL_ENV
    proc = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "streams.cli", "worker", "control-plane"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    lines: list[tuple[float, str]] = []

    def collect() -> None:
        if proc.stderr is None:  # pragma: no cover (stderr=PIPE above)
            return
        for raw in iter(proc.stderr.readline, b""):
            lines.append((time.time(), raw.decode(errors="replace").rstrip()))

    threading.Thread(target=collect, daemon=True).start()
    return proc, lines


def wait_until_assigned(lines: list[tuple[float, str]], proc: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any("Setting newly assigned partitions" in text for _, text in lines):
            return True
        time.sleep(0.3)
    return False


def drift_act(
    err: Console,
    s: Settings,
    make_world: Callable[..., World],
    lines: list[tuple[float, str]],
    rate: float,
    pre_drift: int = 10_000,
    max_seconds: float = 240.0,
) -> dict[str, Any]:
    """Stream until the loop decided, then 10 s more (or ``max_seconds``); returns the
    timeline and the quality per phase."""
    start_index = 100_000
    onset = start_index + pre_drift
    world = make_world(
        drift=Drift("concept", onset, 0, 1.0),
        rate_per_second=rate,
        start_time_ms=int(time.time() * 1000) - int(start_index * 1000 / rate),
    )
    codec = codec_for(s, by_record(s.topics, s.topics.event_record))
    label_codec = codec_for(s, by_record(s.topics, s.topics.label_record))
    pred_codec = codec_for(s, by_record(s.topics, s.topics.prediction_record))
    domain = domain_of(s)
    producer = Producer(producer_config(s))
    reader = Consumer(
        consumer_config(
            s, f"streamscore-demo-{uuid.uuid4().hex[:8]}", **{"auto.offset.reset": "latest"}
        )
    )
    reader.subscribe([s.topics.predictions])
    joined = time.monotonic() + 30
    while not reader.assignment() and time.monotonic() < joined:
        reader.poll(0.1)
    truth: dict[str, bool] = {}
    index_of: dict[str, int] = {}
    after_onset: dict[str, dict[str, Any]] = {}  # events of the new concept, for the oracle
    labels_sent: list[str] = []  # event ids whose label was sent, in order
    labels_at_decision: int | None = None  # how many had been sent when the loop decided
    served: dict[str, tuple[str, float]] = {}
    pending: list[tuple[float, list[dict[str, Any]]]] = []
    started = time.time()
    sent, index, decided_at = 0, start_index, None
    onset_ms: int | None = None  # broker time of the first event of the new concept
    seen_markers: dict[str, int] = {}  # marker -> events streamed after the onset when seen
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task("act 2: streaming; the world turns at event 10,000", total=None)
        while time.time() - started < max_seconds:
            raw = world.events(CHUNK, start_index=index)
            if onset_ms is None and index >= onset:
                onset_ms = int(time.time() * 1000)  # stored at or after this (CreateTime)
            index += CHUNK
            events = [strip_private(e) for e in raw]
            for e, stripped in zip(raw, events, strict=True):
                if e["_index"] >= onset:
                    after_onset[stripped["event_id"]] = stripped
            for e, v in zip(events, codec.encode_many(events), strict=True):
                producer.produce(s.topics.events, key=e[domain.key_field].encode(), value=v)
            labels = world.labels(raw)
            for e, lab in zip(raw, labels, strict=True):
                truth[lab[domain.label.join_key]] = bool(lab[domain.label.target])
                index_of[lab["event_id"]] = int(e["_index"])
            pending.append((time.time() + LABEL_DELAY_SECONDS, labels))
            while pending and pending[0][0] <= time.time():
                for lab in pending.pop(0)[1]:
                    labels_sent.append(lab["event_id"])
                    lab = lab | {"label_time": int(time.time() * 1000)}
                    producer.produce(
                        s.topics.labels,
                        key=lab["event_id"].encode(),
                        value=label_codec.encode_one(lab),
                    )
            producer.poll(0)
            sent += CHUNK
            for m in reader.consume(5000, 0.0):
                p = pred_codec.decode_one(m.value()) if m.error() is None else None
                if isinstance(p, dict):
                    served[p["event_id"]] = (p["model_version"], p["score"])
            for key, what in MARKERS.items():
                if key not in seen_markers and any(key in text for _, text in lines):
                    seen_markers[key] = index - onset
                    progress.update(task, description=f"act 2: {what} (event {index - onset:+,})")
            if {"promoted v", "stays challenger"} & set(seen_markers) and decided_at is None:
                decided_at = time.time()
                labels_at_decision = len(labels_sent)
            if decided_at is not None and time.time() - decided_at >= 10:
                break  # 10 s of stream after the decision, to measure the new champion
            time.sleep(max(0.0, started + sent / rate - time.time()))
        producer.flush(30)
        end_ms = int(time.time() * 1000) + 1
        end = time.monotonic() + 10
        while len(served) < sent and time.monotonic() < end:
            for m in reader.consume(5000, 0.2):
                p = pred_codec.decode_one(m.value()) if m.error() is None else None
                if isinstance(p, dict):
                    served[p["event_id"]] = (p["model_version"], p["score"])
    reader.close()
    available = labels_sent[: labels_at_decision or 0]
    return {
        "events": sent,
        "onset_event": pre_drift,
        "timeline": _timeline(lines, seen_markers),
        "quality": _quality(served, truth, index_of, onset),
        "healed": _against_oracle(s, served, truth, after_onset, available),
        # The events after the onset, by broker time: the drift report's window.
        "window_ms": [onset_ms, end_ms] if onset_ms is not None else None,
    }


def report_after_act(
    err: Console, s: Settings, act: dict[str, Any], version: str, out: Path
) -> dict[str, Any]:
    """Evidently's drift page (``streamscore report drift``) of the events streamed after the
    onset, against the training reference of ``version`` (the champion at the onset), at
    ``out``. Without the extra, or when the report fails, a one-line ``note`` instead: the act
    has happened either way."""
    if importlib.util.find_spec("evidently") is None:
        return {"note": f"no drift report: it needs Evidently ({INSTALL})"}
    if not act.get("window_ms"):
        return {"note": "no drift report: no event after the onset was streamed"}
    from_ms, to_ms = act["window_ms"]
    try:
        with err.status("act 2: Evidently's drift report of the events after the onset..."):
            return drift_report(s, from_ms, to_ms, out, version)
    except StreamMLError as exc:
        return {"note": f"no drift report: {exc}"}


def _timeline(lines: list[tuple[float, str]], seen: dict[str, int]) -> list[dict[str, Any]]:
    """Each step with the number of events streamed after the onset when its log line was
    seen (counted, not wall time x rate)."""
    out = []
    for key, what in MARKERS.items():
        if key not in seen:
            continue
        text = next(text for _, text in lines if key in text)
        detail = text.split("] ", 3)[-1] if "] " in text else text
        out.append({"step": what, "events_after_onset": seen[key], "detail": detail[:160]})
    return out


def _against_oracle(
    s: Settings,
    served: dict[str, tuple[str, float]],
    truth: dict[str, bool],
    after_onset: dict[str, dict[str, Any]],
    available: list[str],
) -> dict[str, Any] | None:
    """The promoted model against an oracle: a model trained offline on exactly the post-onset
    labelled events available when the loop decided, both judged on the events the promoted
    version served (sklearn's AUC against the world's labels)."""
    from sklearn.metrics import roc_auc_score

    versions = sorted({v for e, (v, _) in served.items() if e in after_onset}, key=int)
    if len(versions) < 2:
        return None  # nothing new served after the onset
    newest = versions[-1]
    judged = [e for e, (v, _) in served.items() if v == newest and e in truth]
    ys = [int(truth[e]) for e in judged]
    oracle_ids = [e for e in available if e in after_onset]
    if not judged or len(set(ys)) < 2 or len(oracle_ids) < 100:
        return None
    spec = feature_spec(s)
    store = feature_store(s, spec)
    train = build_training_set(
        spec, store, [after_onset[e] for e in oracle_ids], {e: truth[e] for e in oracle_ids}
    )
    oracle = fit(train.X, train.y, train.names, "lightgbm", 7)
    judged_events = [after_onset[e] for e in judged]
    X = build_training_set(spec, store, judged_events, dict.fromkeys(judged, True)).X
    return {
        "version": newest,
        "events": len(judged),
        "auc": float(roc_auc_score(ys, [served[e][1] for e in judged])),
        "oracle_auc": float(roc_auc_score(ys, predict(oracle, X))),
        "oracle_rows": len(oracle_ids),
    }


def _quality(
    served: dict[str, tuple[str, float]],
    truth: dict[str, bool],
    index_of: dict[str, int],
    onset: int,
) -> list[dict[str, Any]]:
    """Log loss and AUC of what was served: before the drift, after it by the old champion, and
    by each later version."""
    from sklearn.metrics import roc_auc_score

    groups: dict[str, list[tuple[float, bool]]] = {}
    for event_id, (version, score) in served.items():
        if event_id not in truth:
            continue
        phase = "before the drift" if index_of[event_id] < onset else "after the drift"
        groups.setdefault(f"{phase}, served by v{version}", []).append((score, truth[event_id]))
    rows = []
    for name, pairs in sorted(groups.items(), key=lambda kv: kv[0][:6] != "before"):
        ys = np.array([y for _, y in pairs], dtype=int)
        ps = np.array([p for p, _ in pairs])
        row = {
            "segment": name,
            "events": len(pairs),
            "log_loss": float(np.mean([log_loss_one(p, bool(y)) for p, y in pairs])),
        }
        if 0 < ys.sum() < len(ys):
            row["auc"] = float(roc_auc_score(ys, ps))
        rows.append(row)
    return rows


def render(c: Console, act: dict[str, Any]) -> None:
    c.print(
        f"act 2: concept drift injected at event {act['onset_event']:,} of {act['events']:,} "
        "streamed (labels 1 s behind)"
    )
    for step in act["timeline"]:
        c.print(f"  {step['events_after_onset']:>+8,} events: {step['step']}: {step['detail']}")
    if not act["timeline"]:
        c.print("  [yellow]the control plane reported nothing: see its log[/yellow]")
    t = Table(title="live quality of what was served (against the world's labels)")
    for col in ("segment", "events", "log loss", "AUC"):
        t.add_column(col, justify="right")
    for q in act["quality"]:
        t.add_row(
            q["segment"],
            f"{q['events']:,}",
            f"{q['log_loss']:.4f}",
            f"{q['auc']:.3f}" if "auc" in q else "",
        )
    c.print(t)
    healed = act.get("healed")
    if healed:
        c.print(
            f"healed: v{healed['version']} AUC {healed['auc']:.3f} on the {healed['events']:,} "
            f"post-drift events it served; an oracle trained offline on the "
            f"{healed['oracle_rows']:,} post-drift labels available at the decision: "
            f"{healed['oracle_auc']:.3f}"
        )
    report = act.get("report")
    if report and "note" in report:
        c.print(report["note"], style="yellow", markup=False, highlight=False)
    elif report:
        render_report(c, report)


def render_report(c: Console, r: dict[str, Any]) -> None:
    """The drift page's verdicts in two lines; concept drift moves the labels, not the inputs."""
    drifted = r["drifted_columns"]
    names = f": {', '.join(drifted)}" if drifted else ""
    p = r["prediction"]
    score = "not compared" if p is None else "drifted" if p["drifted"] else "stable"
    c.print(
        f"drift report: {r['out']} ({r['current_rows']:,} events after the onset against "
        f"v{r['model_version']}'s training reference)",
        markup=False,
        highlight=False,
    )
    why = " (concept drift moves no input: the labels showed it)" if not drifted else ""
    c.print(
        f"  {len(drifted)} of {len(r['columns'])} inputs drifted{names}; served score {score}{why}",
        markup=False,
        highlight=False,
    )
