"""`streamscore demo`: the whole scoring loop on the embedded stack, shown to a newcomer.

Stack up → features loaded → model trained and registered in MLflow (a champion, and a new
version) → scoring worker started → events streamed at a rate (1% deliberately broken) while the
new version goes through shadow, a 10% canary and promotion, hot-swapped by the running worker →
predictions and dead letters read back → summary: counts (they must add up), throughput,
produce→prediction latency, predictions per version and variant, shadow agreement, online AUC
against the labels → worker stopped → stack left as it was found.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import click
import numpy as np
from confluent_kafka import Consumer, Producer, TopicPartition
from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sklearn.metrics import roc_auc_score

from services.codec.factory import codec_for
from services.core.errors import EmbeddedStackError, StreamMLError
from services.core.settings import Settings, to_env
from services.core.task import Task
from services.domain.config import domain_of
from services.embedded import prometheus
from services.embedded.kafka_cluster import as_role
from services.embedded.stack import EmbeddedStack
from services.kafka.config import consumer_config, producer_config
from services.scoring.compare import compare_report
from services.scoring.operations import Plan, apply_change
from services.scoring.registry import MlflowRegistry
from services.scoring.rollout import AliasChange, RolloutState, plan_promote, plan_rollout
from services.synthetic.hostile import any_domain_hostile_values
from services.synthetic.world import strip_private
from services.training.pipeline import train_and_register
from streams.adapters import feature_spec, feature_store
from streams.commands.common import app, emit, json_option
from streams.commands.demo_drift import (
    drift_act,
    report_after_act,
    start_control_plane,
    wait_until_assigned,
)
from streams.commands.demo_drift import render as render_drift
from streams.commands.ml import HISTORY_START_INDEX, make_world
from streams.commands.models import render_compare
from streams.topics import by_record, topic_table

HOSTILE_EVERY = 100  # one broken message per hundred
# The worker loads and compiles the newly trained model before it joins: 90 s was not enough
# twice on this 2-core machine at a load average of 10 to 15 (compiling alone takes minutes).
WORKER_START_SECONDS = 300


def _pct(values: list[float], p: float) -> float:
    return float(np.percentile(values, p)) if values else float("nan")


def stack_outcome(started: Sequence[str], services: Sequence[str], keep: bool) -> tuple[bool, str]:
    """Whether the stack is left running when the demo ends, and the line that says what it
    stopped: only what it started (Prometheus alone, on a cluster a person had started, leaves
    that cluster running).

    >>> stack_outcome(["broker", "redis"], ["broker", "redis"], keep=False)
    (False, 'stack stopped again')
    >>> stack_outcome(["prometheus"], ["kafka-1", "redis-0", "prometheus"], keep=False)[1]
    'stopped prometheus, which the demo started; the stack it found running is left running'
    >>> stack_outcome([], ["broker", "redis"], keep=False)
    (True, 'stack left running (it was running before the demo)')
    >>> stack_outcome(["broker", "redis"], ["broker", "redis"], keep=True)
    (True, 'stack left running')
    """
    if keep:
        return True, "stack left running"
    if not started:
        return True, "stack left running (it was running before the demo)"
    if set(services) <= set(started):
        return False, "stack stopped again"
    return True, (
        f"stopped {', '.join(started)}, which the demo started; the stack it found running is "
        "left running"
    )


@click.command()
@click.option(
    "--events",
    "n_events",
    default=20_000,
    type=click.IntRange(min=1),
    show_default=True,
    help="Events to stream.",
)
@click.option("--rate", default=2000.0, show_default=True, help="Events per second.")
@click.option("--keep-stack", is_flag=True, help="Leave the stack running afterwards.")
@click.option(
    "--drift/--no-drift",
    default=True,
    show_default=True,
    help="Act 2: concept drift and the retraining loop (control plane).",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="On the secured cluster of `local up --cluster`: the worker runs as "
    "streamscore-worker, the control plane as streamscore-control, the rest as the admin.",
)
@json_option
@click.pass_context
def demo(
    ctx: click.Context, n_events: int, rate: float, keep_stack: bool, drift: bool, cluster: bool
) -> None:
    """Run the whole loop once on the embedded stack and summarise what happened."""
    a = app(ctx)
    s = a.settings
    stack = EmbeddedStack(s)
    with a.err.status("starting the embedded stack..."):
        # Prometheus too, where Debian's package is installed: the demo ends with a query.
        status = stack.up(
            topic_table(s.topics), with_prometheus=bool(shutil.which("prometheus")), cluster=cluster
        )
    a.err.print(f"stack: {status.broker} on {status.bootstrap_servers}, Redis {status.redis_url}")

    def roles(role: str) -> Settings:
        return as_role(a.settings, role) if cluster else a.settings

    try:
        summary = _run(a.err, roles("admin"), n_events, rate, drift, roles)
    finally:
        if status.started and not keep_stack:
            stack.down(only=status.started)  # what this demo started, and nothing else
    names = [c.name for c in status.components]
    left, line = stack_outcome(status.started, names, keep_stack)
    stopped = [] if keep_stack else list(status.started)
    summary["stack"] = {
        "broker": status.broker,
        "left_running": left,
        "stopped": stopped,
        "line": line,
    }
    emit(a, summary, lambda c: _render(c, summary))
    if summary["unaccounted"] != 0 or summary["worker_exit_code"] != 0:
        ctx.exit(1)


def _run(
    err: Console,
    s: Settings,
    n: int,
    rate: float,
    drift: bool,
    roles: Callable[[str], Settings] | None = None,
) -> dict[str, Any]:
    """The demo with ``s``; the worker and the control plane with ``roles(role)`` (their own
    principals on the cluster), else ``s`` too."""
    as_ = roles or (lambda _role: s)
    spec = feature_spec(s)
    label = domain_of(s).label
    task = domain_of(s).task
    world = make_world(s, 42, start_time_ms=int(time.time() * 1000), rate_per_second=rate)
    store = feature_store(s, spec)
    with err.status(f"loading {', '.join(g.name for g in spec.groups)} features into Redis..."):
        first = spec.groups[0].name
        keys, rows = world.features(first)
        # The rarest entities of the first group (about 2% of traffic) get no features, to show
        # that such events are scored with the spec's defaults and flagged, not dropped.
        weights = world.weights(first)
        order = np.argsort(weights)
        cut = int(np.searchsorted(np.cumsum(weights[order]), 0.02))
        keep = np.sort(order[cut:])
        store.put_many(first, [keys[i] for i in keep], rows[keep])
        for g in spec.groups[1:]:
            store.put_many(g.name, *world.features(g.name))
    registry = MlflowRegistry(s)
    with err.status("training a model on 40,000 historical events (MLflow run + registry)..."):
        history = make_world(s, 42, start_time_ms=int(time.time() * 1000) - 400_000)
        past = history.events(40_000, start_index=HISTORY_START_INDEX)
        labels = {x[label.join_key]: x[label.target] for x in history.labels(past)}
        trained = train_and_register(registry, spec, store, past, labels, seed=42, task=task)
    challenger = trained
    if not trained.alias_set and _retrained_for_drift(registry):
        # Act 2 of an earlier run promoted a model of the drifted world: act 1 starts again
        # from a model of this world (verified, recorded and announced like any promotion).
        apply_change(
            s,
            registry,
            codec_for(s, by_record(s.topics, "ModelEvent")),
            lambda st, _r: plan_promote(
                st, trained.version, "demo: a fresh baseline after act 2", "demo", _now()
            ),
        )
    if trained.alias_set or registry.alias_version("champion") == trained.version:
        # That model is champion (the first run, or a fresh baseline): train a newcomer.
        with err.status("training a second version on other history (the newcomer)..."):
            past = history.events(40_000, start_index=HISTORY_START_INDEX + 10_000_000)
            labels = {x[label.join_key]: x[label.target] for x in history.labels(past)}
            challenger = train_and_register(registry, spec, store, past, labels, seed=43, task=task)
    served = registry.alias_version("champion")
    primary = f"holdout_{task.primary[0]}"
    err.print(
        f"model {s.model.name}: champion v{served}; newcomer v{challenger.version} "
        f"(holdout {METRIC_NAMES[task.primary[0]]} {challenger.metrics[primary]:.3f}) will go "
        "shadow -> canary 10% -> champion"
    )
    steps = _rollout_steps(challenger.version)

    generator = importlib.import_module(str(domain_of(s).generator))
    if drift and not getattr(generator, "SUPPORTS_DRIFT", False):
        err.print(f"act 2 (drift) skipped: the {domain_of(s).name} generator has no concept drift")
        drift = False
    control = start_control_plane(as_("control")) if drift else None
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    worker_env |= to_env(as_("worker")) | {"STREAMSCORE_METRICS__PORT": "0"}
    worker = subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-m", "streams.cli", "--json", "worker", "scoring"],
        env=worker_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    ready = threading.Event()
    log_tail: list[str] = []

    def watch(stream: Any) -> None:
        for line in iter(stream.readline, b""):
            text = line.decode(errors="replace").rstrip()
            log_tail[:] = [*log_tail[-20:], text]
            if "partitions assigned" in text:
                ready.set()

    threading.Thread(target=watch, args=(worker.stderr,), daemon=True).start()
    at_onset: str | None = None
    try:
        # Inside the try: a worker that never starts stops the control plane too (below).
        with err.status("starting the scoring worker (waits for its partitions)..."):
            if not ready.wait(WORKER_START_SECONDS):
                raise EmbeddedStackError("scoring worker did not start:\n" + "\n".join(log_tail))
        result = _stream(err, s, world, n, rate, steps)
        result["prometheus"] = _ask_prometheus(err, s, result)
        if control is not None:
            proc, lines = control
            with err.status("waiting for the control plane to join its group..."):
                joined = wait_until_assigned(lines, proc, 90)
            if joined:

                def act_world(**kw: Any) -> Any:
                    return make_world(s, 42, **kw)

                at_onset = registry.alias_version("champion")  # what serves when it turns
                # Slower than act 1: the label join, the trainer and the worker share 2 cores.
                result["drift"] = drift_act(err, s, act_world, lines, min(rate, 1000.0))
            else:
                result["drift"] = {
                    "error": "the control plane did not start",
                    "log": [t for _, t in lines[-20:]],
                }
    finally:
        if control is not None:
            stop(control[0])
        out = stop(worker)
    act = result.get("drift")
    if act and "error" not in act and at_onset is not None:
        # After the worker and the control plane stopped: Evidently has the 2 cores to itself.
        act["report"] = report_after_act(err, s, act, at_onset, s.home / "drift-report.html")
    result["worker_exit_code"] = worker.returncode
    if worker.returncode != 0:
        err.print("[red]the scoring worker exited with an error; its last log lines:[/red]")
        err.print("\n".join(log_tail), markup=False, highlight=False)
    try:
        result["worker"] = json.loads(out.decode() or "{}")
    except json.JSONDecodeError:
        result["worker"] = {}
    result["model"] = {
        "name": s.model.name,
        "champion_before": served,
        "newcomer": challenger.version,
        "champion_after": registry.alias_version("champion"),
        primary: challenger.metrics[primary],  # holdout_auc, holdout_mae, holdout_log_loss
    }
    return result


def stop(proc: subprocess.Popen[bytes], grace: float = 60.0) -> bytes:
    """SIGTERM (the process finishes its batch and commits), SIGKILL after ``grace`` seconds;
    returns what it wrote to stdout when that is piped (its stderr may have a reader of its
    own, which is left to it)."""
    proc.send_signal(signal.SIGTERM)
    piped = proc.stdout is not None
    try:
        out = proc.communicate(timeout=grace)[0] if piped else proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        out = proc.communicate()[0] if piped else proc.wait()
    return out if isinstance(out, bytes) else b""


Step = tuple[float, str, Plan]


def _rollout_steps(version: str) -> list[Step]:
    """The newcomer's way in, as fractions of the stream: the same calls `streamscore models`
    makes, so each is verified, recorded in the history and announced to the worker."""

    def shadow(state: RolloutState, _r: MlflowRegistry) -> tuple[RolloutState, AliasChange]:
        return plan_rollout(state, version, "shadow", 0, "demo: compare first", "demo", _now())

    def canary(state: RolloutState, _r: MlflowRegistry) -> tuple[RolloutState, AliasChange]:
        return plan_rollout(state, version, "canary", 10, "demo: shadow agreed", "demo", _now())

    def promote(state: RolloutState, _r: MlflowRegistry) -> tuple[RolloutState, AliasChange]:
        return plan_promote(state, version, "demo: canary healthy", "demo", _now())

    return [(0.2, "shadow", shadow), (0.45, "canary 10%", canary), (0.7, "promote", promote)]


def _retrained_for_drift(registry: MlflowRegistry) -> bool:
    """The champion is one the control plane promoted (act 2 of an earlier run)."""
    moves = [h for h in registry.history() if h.event_type in ("promoted", "rolled_back")]
    return bool(moves) and moves[-1].actor == "control-plane"


def _now() -> int:
    return int(time.time() * 1000)


def _stream(
    err: Console, s: Settings, world: Any, n: int, rate: float, steps: list[Step]
) -> dict[str, Any]:
    codec = codec_for(s, by_record(s.topics, s.topics.event_record))
    pred_codec = codec_for(s, by_record(s.topics, s.topics.prediction_record))
    key_field = domain_of(s).key_field
    dlq_codec = codec_for(s, by_record(s.topics, "DeadLetter"))
    raw = world.events(n)
    events = [strip_private(e) for e in raw]
    generator = importlib.import_module(str(domain_of(s).generator))
    hostile = getattr(generator, "hostile_values", any_domain_hostile_values)(codec, events[0])
    run = uuid.uuid4().hex[:12]
    messages: list[tuple[bytes, bytes, str | None]] = []  # key, value, event id when valid
    for i, (event, value) in enumerate(zip(events, codec.encode_many(events), strict=True)):
        messages.append((event[key_field].encode(), value, event["event_id"]))
        if i % HOSTILE_EVERY == HOSTILE_EVERY - 1:
            messages.append((b"hostile", hostile[(i // HOSTILE_EVERY) % len(hostile)][0], None))
    seq_of_event = {eid: i for i, (_, _, eid) in enumerate(messages) if eid is not None}

    producer = Producer(producer_config(s))
    reader = Consumer(consumer_config(s, f"streamscore-demo-{run}"))
    # Read from each partition's end as it is now, assigned explicitly: "latest" with a
    # subscription resolves its start asynchronously, and a fast worker's first predictions
    # could land before it did (and never be read).
    start_at = []
    for topic in (
        s.topics.predictions,
        s.topics.shadow_predictions,
        by_record(s.topics, "DeadLetter").name,
    ):
        for p in reader.list_topics(topic, timeout=10).topics[topic].partitions:
            high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            start_at.append(TopicPartition(topic, p, high))
    reader.assign(start_at)
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    scores: dict[str, float] = {}
    served: dict[str, dict[str, Any]] = {}
    shadow: dict[str, dict[str, Any]] = {}
    reasons: Counter[str] = Counter()
    degraded = missing = 0

    def drain(timeout: float) -> None:
        nonlocal degraded, missing
        for m in reader.consume(2000, timeout):
            if m.error() is not None:
                continue
            now = time.perf_counter()
            if m.topic() == s.topics.shadow_predictions:
                p = pred_codec.decode_one(m.value())
                if isinstance(p, dict) and p["event_id"] in seq_of_event:
                    shadow[p["event_id"]] = p
            elif m.topic() == s.topics.predictions:
                p = pred_codec.decode_one(m.value())
                if (
                    isinstance(p, dict)
                    and p["event_id"] in seq_of_event
                    and seq_of_event[p["event_id"]] in sent_at  # not a backlog's (same world)
                    and p["event_id"] not in scores
                ):
                    scores[p["event_id"]] = p["score"]
                    served[p["event_id"]] = p
                    latencies.append((now - sent_at[seq_of_event[p["event_id"]]]) * 1000)
                    degraded += int(p["degraded"])
                    missing += int(bool(p["missing_features"]))
            else:
                d = dlq_codec.decode_one(m.value())
                if isinstance(d, dict):
                    h = {x["key"]: x["value"] for x in d["original_headers"]}
                    if h.get("demo-run") == run.encode():
                        seq = int(h["seq"])
                        if seq not in sent_at or seq in seen_dead:
                            continue
                        seen_dead.add(seq)
                        reasons[d["reason"]] += 1
                        latencies.append((now - sent_at[seq]) * 1000)

    seen_dead: set[int] = set()
    timeline: list[dict[str, Any]] = []
    pending = list(steps)
    registry = MlflowRegistry(s)
    event_codec = codec_for(s, by_record(s.topics, "ModelEvent"))

    def run_step(label: str, plan: Plan, at_event: int) -> None:
        try:
            done = apply_change(s, registry, event_codec, plan)
            timeline.append(
                {
                    "step": label,
                    "at_event": at_event,
                    "now": done.after.describe(),
                    "announced": done.announce_error is None,
                    "applied_at_ms": _now(),
                    "version": done.change.to_version,
                }
            )
        except (ValueError, StreamMLError) as exc:
            timeline.append({"step": label, "at_event": at_event, "error": str(exc)})

    threads: list[threading.Thread] = []
    start = time.perf_counter()
    per_tick = max(1, int(rate / 20))
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(
            f"streaming {len(messages):,} events at {rate:,.0f}/s", total=len(messages)
        )
        for first in range(0, len(messages), per_tick):
            tick = start + first / rate
            for i in range(first, min(first + per_tick, len(messages))):
                key, value, _ = messages[i]
                sent_at[i] = time.perf_counter()
                producer.produce(
                    s.topics.events,
                    key=key,
                    value=value,
                    headers=[("demo-run", run.encode()), ("seq", str(i).encode())],
                )
            producer.poll(0)
            if pending and first >= pending[0][0] * len(messages):
                _, label, plan = pending.pop(0)
                threads.append(threading.Thread(target=run_step, args=(label, plan, first)))
                threads[-1].start()
            drain(max(0.0, tick + 1 / 20 - time.perf_counter()))
            progress.update(task, completed=len(scores) + len(seen_dead))
        producer.flush(30)
        deadline = time.monotonic() + 60
        while len(scores) + len(seen_dead) < len(messages) and time.monotonic() < deadline:
            drain(0.2)
            progress.update(task, completed=len(scores) + len(seen_dead))
    elapsed = time.perf_counter() - start
    for t in threads:
        t.join(60)
    drain(0.5)  # the last shadow predictions
    reader.close()

    truth = world.labels(raw)
    truth_of = domain_of(s).label
    domain_task = domain_of(s).task
    quality = _quality(domain_task, world, raw, truth, truth_of, served)
    return {
        "events_in": len(messages),
        "valid_sent": len(events),
        "hostile_sent": len(messages) - len(events),
        "predictions": len(scores),
        "dead_letters": len(seen_dead),
        "dead_letters_by_reason": dict(reasons),
        "unaccounted": len(messages) - len(scores) - len(seen_dead),
        "degraded_predictions": degraded,
        "predictions_with_missing_features": missing,
        "throughput_per_second": len(messages) / elapsed,
        "latency_ms": {q: _pct(latencies, v) for q, v in (("p50", 50), ("p95", 95), ("p99", 99))},
        **quality,
        "rollout": _took_effect(timeline, list(served.values()), list(shadow.values())),
        "variants": compare_report(
            list(served.values()),
            list(shadow.values()),
            {lab[truth_of.join_key]: lab[truth_of.target] for lab in truth},
            s.model.decision_threshold,
            domain_task,
        ),
    }


# How a task's primary metric is named in the demo's lines.
METRIC_NAMES = {"auc": "AUC", "mae": "MAE", "log_loss": "log loss"}
# The oracle's row in the summary, per task: what the world's truth scores.
ORACLE_NAMES = {
    "binary": "true-probability ceiling",
    "regression": "truth without its noise (floor)",
    "multiclass": "true-probability floor",
}


def _quality(
    task: Task,
    world: Any,
    raw: list[dict[str, Any]],
    truth: list[dict[str, Any]],
    label: Any,
    served: dict[str, dict[str, Any]],
) -> dict[str, float]:
    """The task's primary metric of what was served (``online_<metric>``) and of the world's
    own truth over every event sent (``oracle_<metric>``): AUC, MAE or multi-class log loss."""
    metric = task.primary[0]
    got = [lab for lab in truth if lab[label.join_key] in served]
    y = task.target(lab[label.target] for lab in got)
    y_all = task.target(lab[label.target] for lab in truth)
    if task.kind == "binary":
        p = np.array([served[lab[label.join_key]]["score"] for lab in got])
        return {
            "online_auc": float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan"),
            "oracle_auc": float(roc_auc_score(y_all, world.probabilities(raw))),
        }
    if task.kind == "regression":
        outputs = np.array([served[lab[label.join_key]]["score"] for lab in got])
        oracle = world.expected(raw)
    else:
        outputs = np.array(
            [[served[lab[label.join_key]]["probabilities"][c] for c in task.classes] for lab in got]
        )
        oracle = world.class_probabilities(raw)
    online = task.evaluate(y, outputs)[metric] if len(y) else float("nan")
    return {f"online_{metric}": online, f"oracle_{metric}": task.evaluate(y_all, oracle)[metric]}


def _ask_prometheus(err: Console, s: Settings, result: dict[str, Any]) -> dict[str, Any] | None:
    """What the local Prometheus scraped from the worker: the same counts, and any alert."""
    port = s.local.prometheus_port
    if not prometheus.answers(port):
        return None
    queries = {
        "predictions": 'sum(streamscore_predictions_total{variant!="shadow"})',
        "dead_letters": "sum(streamscore_messages_rejected_total)",
        "latency_p99_seconds": "histogram_quantile(0.99, sum by (le) "
        "(rate(streamscore_event_to_prediction_seconds_bucket[1m])))",
    }
    answers: dict[str, Any] = {}
    deadline = time.monotonic() + 15
    with err.status("asking Prometheus what it scraped..."):
        while time.monotonic() < deadline:
            answers = {k: _query(port, q) for k, q in queries.items()}
            if (answers["predictions"], answers["dead_letters"]) == (
                result["predictions"],
                result["dead_letters"],
            ):
                break
            time.sleep(1)  # the next scrape (every 2 s) has the final counts
        firing = _query_labels(port, 'ALERTS{alertstate="firing"}', "alertname")
    return answers | {"firing_alerts": firing, "url": f"http://127.0.0.1:{port}"}


def _query(port: int, promql: str) -> float | None:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback)
        data = json.loads(r.read())["data"]["result"]
    return float(data[0]["value"][1]) if data else None


def _query_labels(port: int, promql: str, label: str) -> list[str]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as r:  # noqa: S310 (loopback)
        return sorted(x["metric"].get(label, "?") for x in json.loads(r.read())["data"]["result"])


def _render(c: Console, r: dict[str, Any]) -> None:
    t = Table(title="streamscore demo")
    t.add_column("what")
    t.add_column("value", justify="right")
    rows = [
        (
            "events in (valid + deliberately broken)",
            f"{r['events_in']:,} ({r['valid_sent']:,} + {r['hostile_sent']:,})",
        ),
        ("predictions out", f"{r['predictions']:,}"),
        ("dead letters", f"{r['dead_letters']:,}"),
        ("unaccounted (must be 0)", f"{r['unaccounted']:,}"),
    ]
    rows += [
        (f"  dead letters: {k}", str(v)) for k, v in sorted(r["dead_letters_by_reason"].items())
    ]
    rows += [
        (
            "predictions with missing features (defaults, flagged)",
            f"{r['predictions_with_missing_features']:,}",
        ),
        ("degraded (fallback scorer)", f"{r['degraded_predictions']:,}"),
        ("throughput, in to scored (events/s)", f"{r['throughput_per_second']:,.0f}"),
        (
            "latency produce -> prediction readable p50 / p95 / p99 (ms)",
            " / ".join(f"{r['latency_ms'][q]:.1f}" for q in ("p50", "p95", "p99")),
        ),
        (
            f"model {r['model']['name']}: champion before -> after",
            f"v{r['model']['champion_before']} -> v{r['model']['champion_after']}",
        ),
        _quality_row(r),
        ("worker exit code", str(r["worker_exit_code"])),
        ("model swaps by the running worker", str(r["worker"].get("swaps", "?"))),
    ]
    for k, v in rows:
        t.add_row(k, v)
    c.print(t)
    _render_rollout(c, r)
    act = r.get("drift")
    if act and "error" not in act:
        render_drift(c, act)
    elif act:
        c.print(f"[red]act 2 failed[/red]: {act['error']}")
    p = r.get("prometheus")
    if p:

        def fmt(v: float | None) -> str:
            return f"{v:,.0f}" if v is not None else "none"

        c.print(
            f"Prometheus ({p['url']}) scraped: {fmt(p['predictions'])} predictions, "
            f"{fmt(p['dead_letters'])} dead letters; firing alerts: "
            f"{', '.join(p['firing_alerts']) or 'none'}"
        )
    c.print(r["stack"]["line"])


def _took_effect(
    timeline: list[dict[str, Any]], served: list[dict[str, Any]], shadow: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """When each step first showed in a prediction: the worker's swap delay, end to end."""
    for step in timeline:
        if "applied_at_ms" not in step:
            continue
        kind = step["step"].split()[0]
        pool = shadow if kind == "shadow" else served
        variant = {"shadow": "shadow", "canary": "challenger", "promote": "champion"}[kind]
        times = [
            p["scored_at"]
            for p in pool
            if p["model_version"] == step["version"] and p["variant"] == variant
        ]
        if times:
            step["took_effect_ms"] = max(0, min(times) - step["applied_at_ms"])
    return timeline


def _render_rollout(c: Console, r: dict[str, Any]) -> None:
    for step in r["rollout"]:
        what = step.get("now") or f"[red]failed[/red]: {step.get('error')}"
        took = step.get("took_effect_ms")
        after = (
            f" (in predictions {took:,} ms after the registry change)"
            if took is not None
            else " (not seen in predictions: the stream ended first; use more --events)"
            if "now" in step
            else ""
        )
        c.print(f"at event {step['at_event']:>6,}: {step['step']:<11} -> {what}{after}")
    render_compare(c, r["variants"], "this run's stream (quality against the world's labels)")


def _quality_row(r: dict[str, Any]) -> tuple[str, str]:
    """The summary's quality line: online / holdout / oracle, in the task's primary metric."""
    metric = next(k.removeprefix("online_") for k in r if k.startswith("online_"))
    task = r.get("variants", {}).get("task", "binary")
    return (
        f"{METRIC_NAMES.get(metric, metric)} against labels: online / holdout / "
        f"{ORACLE_NAMES.get(task, 'oracle')}",
        f"{r[f'online_{metric}']:.3f} / {r['model'][f'holdout_{metric}']:.3f} / "
        f"{r[f'oracle_{metric}']:.3f}",
    )
