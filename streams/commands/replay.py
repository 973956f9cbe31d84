"""`streamscore replay [run] | diff`: replay a topic range (copy, or re-score into a sandbox) and
compare predictions."""

from __future__ import annotations

import logging
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click
from confluent_kafka import Consumer
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.progress import Progress

from services.codec.factory import codec_for
from services.core.errors import NotFound
from services.domain.config import domain_of
from services.kafka.admin import list_topic_partitions
from services.kafka.config import admin_config, consumer_config
from services.kafka.ranges import committed, iter_ranges, ranges_since
from services.kafka.topics import TopicSpec, dlq_name
from services.replay.diff import Scored, diff, histogram_png, markdown
from services.replay.plan import ReplayPlan, parse_offsets, remaining, run_id
from streams.commands.common import app, emit, parse_since, table
from streams.replay import (
    Outcome,
    copier,
    ensure_targets,
    fence,
    group_of,
    resolve,
    resolve_model,
)
from streams.replay import execute as run_replay
from streams.runtime import replay_rescorer
from streams.topics import HOT_PARTITIONS, by_record, sandbox_topic, topic_table

logger = logging.getLogger(__name__)


class DefaultGroup(click.Group):
    """A group whose first argument, when it names no subcommand, belongs to ``run``:
    ``streamscore replay --from-time 1h ...`` is ``streamscore replay run --from-time 1h ...``."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=DefaultGroup)
def replay() -> None:
    """Replay a topic range: copy it, or re-score it into a sandbox; compare predictions.

    `streamscore replay ...` is `streamscore replay run ...`.
    """


def _plans_dir(home: Path) -> Path:
    return home / "replays"


@replay.command("run")
@click.option("--topic", default=None, help="Source topic [default: the input topic].")
@click.option("--from-time", default=None, help="From this time: 30m, 2h, 1d (ago), ms or ISO.")
@click.option("--to-time", default=None, help="Up to this time (exclusive) [default: the end].")
@click.option(
    "--offsets",
    "offset_ranges",
    multiple=True,
    help="PARTITION:START-END (END exclusive); repeat per partition. Instead of times.",
)
@click.option("--model", default=None, help="Re-score with this version or alias.")
@click.option("--to", "to", default=None, help="Target topic (copy: required).")
@click.option(
    "--sandbox",
    default=None,
    help="Re-score into sandbox.NAME.predictions [default: NAME is the run id].",
)
@click.option("--allow-production", is_flag=True, help="Allow a --to of the topic table.")
@click.option("--execute", is_flag=True, help="Write (default: print the plan, write nothing).")
@click.option(
    "--rate",
    default=2000.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Events per second at most (0: no limit).",
)
@click.option("--batch", default=500, show_default=True, type=click.IntRange(min=1, max=10_000))
@click.pass_context
def run(
    ctx: click.Context,
    topic: str | None,
    from_time: str | None,
    to_time: str | None,
    offset_ranges: tuple[str, ...],
    model: str | None,
    to: str | None,
    sandbox: str | None,
    allow_production: bool,
    execute: bool,
    rate: float,
    batch: int,
) -> None:
    """Replay events selected by time or offsets, in a consumer group of its own.

    Without --model the events are copied to --to (key, value, headers, timestamp). With
    --model they go through the scoring worker's stages with that version, into a sandbox
    topic (its refusals into the sandbox's .dlq). Dry run unless --execute. Each batch commits
    in one transaction with the replay's offsets: run the same command again after an
    interruption and it continues; events reach the target exactly once.
    """
    a = app(ctx)
    s = a.settings
    source = topic or s.topics.events
    if offset_ranges and (from_time or to_time):
        raise click.UsageError("give --offsets or --from-time/--to-time, not both")
    if model is None and to is None:
        raise click.UsageError("a copy needs --to TOPIC (or --model VERSION to re-score)")
    if model is None and sandbox is not None:
        raise click.UsageError("--sandbox is for re-scores (--model)")
    now = int(time.time() * 1000)
    from_ms = parse_since(from_time, now, "--from-time") if from_time else None
    to_ms = parse_since(to_time, now, "--to-time") if to_time else None
    if from_ms is not None and to_ms is not None and to_ms <= from_ms:
        raise click.BadParameter("must be after --from-time", param_hint="--to-time")
    try:
        ranges = [parse_offsets(o) for o in offset_ranges]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--offsets") from exc
    args = {
        "source": source,
        "from": from_time,
        "to_time": to_time,
        "offsets": sorted(offset_ranges),
        "model": model,
        "to": to,
        "sandbox": sandbox,
    }
    rid = run_id(args)
    target = to or sandbox_topic(sandbox or rid)
    production = {t.name for t in topic_table(s.topics)}
    if target == source:
        raise click.UsageError(f"the target {target} is the source")
    if target in production and not allow_production:
        raise click.UsageError(
            f"{target} is a production topic; name it with --to and add --allow-production"
        )
    letters = dlq_name(target) if model is not None else None
    if letters in production and not allow_production:
        raise click.UsageError(f"{letters} is a production topic; add --allow-production")
    plan_file = _plans_dir(s.home) / f"{rid}.json"
    consumer = Consumer(consumer_config(s, group_of(rid)))
    try:
        # Before the committed offsets are read: a killed run's open batch leaves them unstable
        # until it is fenced (a dry run reads them as they are).
        producer = fence(s, rid) if execute else None
        if plan_file.exists():
            plan = ReplayPlan.from_json(plan_file.read_text(encoding="utf-8"))
            notes = [f"continuing replay {rid} (plan of its first run, {plan_file})"]
        else:
            version = resolve_model(s, model) if model is not None else None
            plan, notes = resolve(
                consumer,
                rid,
                source,
                target,
                from_ms=from_ms,
                to_ms=to_ms,
                offsets=ranges,
                model=version,
                dead_letters=letters,
            )
        done = committed(consumer, source, [r.partition for r in plan.ranges])
        todo = remaining(plan, done)
        summary: dict[str, Any] = {
            "run_id": rid,
            "group": group_of(rid),
            "source": source,
            "target": plan.target,
            "dead_letters": plan.dead_letters,
            "model_version": plan.model,
            "mode": "rescore" if plan.model else "copy",
            "executed": execute,
            "ranges": [
                {
                    "partition": r.partition,
                    "start": r.start,
                    "end": r.end,
                    "offsets": r.count,
                    "left": next((t.count for t in todo if t.partition == r.partition), 0),
                }
                for r in plan.ranges
            ],
            "offsets": plan.total,
            "left": sum(t.count for t in todo),
            "notes": notes,
        }
        if not execute:
            emit(a, summary, lambda c: _render_plan(c, summary, dry=True))
            return
        if not todo:
            summary["outcome"] = Outcome().__dict__
            emit(a, summary, lambda c: c.print(f"replay {rid}: nothing left; it is complete"))
            return
        _plans_dir(s.home).mkdir(parents=True, exist_ok=True)
        if not plan_file.exists():
            plan_file.write_text(plan.to_json(), encoding="utf-8")
        if not a.json_output:
            _render_plan(a.err, summary, dry=False)
        source_parts = len(plan.ranges) and max(r.partition for r in plan.ranges) + 1
        specs = [
            TopicSpec(plan.target, max(source_parts, HOT_PARTITIONS), "string", "", "", "", "")
        ]
        if plan.dead_letters:
            specs.append(TopicSpec(plan.dead_letters, 1, "string", "", "", "", ""))
        parts = ensure_targets(s, specs)
        outputs = (
            replay_rescorer(s, plan)
            if plan.model
            else copier(plan.target, parts.get(plan.target, 0))
        )
        started = time.monotonic()

        assert producer is not None  # noqa: S101 (fenced above when executing)

        def execute_plan(progress: Any) -> Outcome:
            return run_replay(
                plan, consumer, producer, outputs, rate=rate, batch_size=batch, progress=progress
            )

        outcome = _with_progress(a, summary["left"], execute_plan)
        elapsed = time.monotonic() - started
        summary["outcome"] = outcome.__dict__ | {"seconds": round(elapsed, 3)}
        left = remaining(plan, committed(consumer, source, [r.partition for r in plan.ranges]))
        summary["left"] = sum(t.count for t in left)
        emit(a, summary, lambda c: _render_outcome(c, summary, outcome, elapsed))
    finally:
        consumer.close()


def _with_progress(a: Any, total: int, work: Any) -> Outcome:
    """A progress bar on a terminal (stderr); a log line every 5 s otherwise."""
    if sys.stderr.isatty() and not a.json_output:
        with Progress(console=a.err, transient=False) as bar:
            task = bar.add_task("replaying", total=total)
            result: Outcome = work(lambda o: bar.update(task, completed=o.read))
            return result
    last = [time.monotonic()]

    def log(o: Outcome) -> None:
        if time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            logger.info("replayed %d of about %d", o.read, total)

    result = work(log)
    return result


def _render_plan(c: Console, d: dict[str, Any], dry: bool) -> None:
    mode = f"re-score with v{d['model_version']}" if d["model_version"] else "copy"
    c.print(f"replay {d['run_id']}: {mode}, {d['source']} -> {d['target']}", highlight=False)
    columns = ("partition", "start", "end", "offsets", "left")
    if dry:  # the result
        table(c, columns, [[r[k] for k in columns] for r in d["ranges"]], right=columns)
    else:  # a run that writes: progress, on stderr
        c.print("; ".join(f"partition {r['partition']}: {r['left']} left" for r in d["ranges"]))
    for note in d["notes"]:
        c.print(f"note: {note}", highlight=False)
    if dry:
        c.print(f"dry run: {d['left']} offsets to replay; nothing written (add --execute)")


def _render_outcome(c: Console, d: dict[str, Any], o: Outcome, elapsed: float) -> None:
    rate = o.read / elapsed if elapsed > 0 else 0.0
    if d["model_version"]:
        what = f"{o.predictions} predictions to {d['target']}, {o.dead_letters} dead letters to "
        what += str(d["dead_letters"])
    else:
        what = f"{o.copied} copied to {d['target']}"
    c.print(
        f"replay {d['run_id']}: read {o.read} events in {elapsed:.1f} s ({rate:.0f}/s): {what}",
        highlight=False,
    )


def _read_predictions(
    ctx: Any, topic: str, since_ms: int | None, wanted: set[str] | None
) -> tuple[dict[str, Scored], int | None]:
    """Event id -> (score, version) of the predictions on ``topic`` (the last per event), from
    ``since_ms`` (broker time) to the end; and the earliest event time among them."""

    s = ctx.settings
    codec = codec_for(s, by_record(s.topics, "Prediction"))
    consumer = Consumer(consumer_config(s, f"streamscore-replay-diff-{uuid.uuid4().hex[:8]}"))
    try:
        ranges = ranges_since(consumer, topic, since_ms)
        messages = [m for b in iter_ranges(consumer, topic, ranges) for m in b]
    finally:
        consumer.close()
    out: dict[str, Scored] = {}
    earliest: int | None = None
    for m in messages:
        rec = codec.decode_one(m.value())
        if not isinstance(rec, dict):
            continue
        if wanted is None or rec["event_id"] in wanted:
            top = rec.get("predicted_class")  # multiclass
            out[rec["event_id"]] = Scored(
                float(rec["score"]), str(rec["model_version"]), None if top is None else str(top)
            )
            t = int(rec["event_time"])
            earliest = t if earliest is None else min(earliest, t)
    return out, earliest


def _topic_of(ctx: Any, name: str) -> str:
    """A topic name as given, or a sandbox's predictions topic."""

    existing = list_topic_partitions(AdminClient(admin_config(ctx.settings)), 10)
    for candidate in (name, sandbox_topic(name)):
        if candidate in existing:
            return candidate
    raise NotFound(f"no topic {name} and no sandbox {sandbox_topic(name)}")


# Predictions of an event are written after the event; an event's time is at most the rules'
# max_future ahead of when it was stored. Original predictions are looked for from this long
# before the earliest replayed event's time.
ORIGINAL_SLACK_MS = 15 * 60 * 1000


@replay.command("diff")
@click.argument("other")
@click.option(
    "--base",
    default=None,
    help="Topic or sandbox to compare with [default: the production predictions topic].",
)
@click.option("--threshold", default=None, type=click.FloatRange(0, 1), help="Decision threshold.")
@click.option("--worst", default=10, show_default=True, type=click.IntRange(min=0))
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--png", "png_path", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_context
def diff_cmd(
    ctx: click.Context,
    other: str,
    base: str | None,
    threshold: float | None,
    worst: int,
    md_path: Path | None,
    png_path: Path | None,
) -> None:
    """Compare the predictions of sandbox (or topic) OTHER with the original predictions of
    the same events, or with another sandbox (--base): changes, score deltas, decision flips,
    the largest changes and a per-version breakdown. Markdown on stdout (--json: JSON);
    --markdown and --png write files too."""
    a = app(ctx)
    s = a.settings
    other_topic = _topic_of(a, other)
    base_topic = _topic_of(a, base) if base else s.topics.predictions
    theirs, earliest = _read_predictions(a, other_topic, None, None)
    if not theirs or earliest is None:
        raise NotFound(f"{other_topic} holds no predictions")
    since = earliest - ORIGINAL_SLACK_MS if base is None else None
    ours, _ = _read_predictions(a, base_topic, since, set(theirs))
    binary = domain_of(s).task.kind == "binary"  # other tasks make no decision at a threshold
    report = diff(
        ours,
        theirs,
        (threshold if threshold is not None else s.model.decision_threshold) if binary else None,
        (base_topic, other_topic),
        worst,
    )
    text = markdown(report)
    if md_path is not None:
        md_path.write_text(text, encoding="utf-8")
    if png_path is not None:
        histogram_png(report, str(png_path))
    emit(a, report.to_dict(), lambda c: c.out(text, end="", highlight=False))
