"""Who may do what on a secured cluster: one principal per role, each granted only its work.

Pure data from the settings (topic names, the scoring group); `local up --cluster` applies it
with an admin client, and docs/security.md explains it. A role missing here has no access at
all: the cluster runs with ``allow.everyone.if.no.acl.found=false``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.core.settings import Settings
from services.kafka.topics import dlq_name

Resource = Literal["topic", "group", "transactional_id"]
Pattern = Literal["literal", "prefixed"]

ROLES = ("worker", "control", "api", "replay", "cli")
ADMIN = "streamscore-admin"  # super user: creates topics and ACLs (`local up`), nothing else
BROKER = "streamscore-broker"  # the nodes' own certificate name (inter-broker, controllers)
# Fixed names the code uses (streams/control/app.py, streams/replay.py, streams/topics.py): kept
# here as strings because services never import streams; a test checks they agree.
CONTROL_APP = "streamscore-control"
REPLAY_PREFIX = "streamscore-replay-"
SANDBOX_PREFIX = "sandbox."
MODEL_WATCH_PREFIX = "streamscore-model-watch-"
# The feature-log reader's throwaway groups (services/training/log_reader.py): it assigns and
# never commits, but a consumer with a group still asks for its coordinator, which needs Read.
LOG_READER_PREFIX = "streamscore-log-"
CLI_GROUP_PREFIX = "streamscore-"
# The throwaway groups of one-shot commands (tail, dlq, find, lag, demo): theirs to join.
CLI_GROUPS = tuple(f"streamscore-{c}-" for c in ("tail", "dlq", "find", "lag", "demo"))


@dataclass(frozen=True, slots=True)
class Grant:
    """One allowed operation on one resource (or every resource whose name starts so)."""

    resource: Resource
    name: str
    operation: str  # READ, WRITE, DESCRIBE, CREATE
    pattern: Pattern = "literal"


def principal(role: str) -> str:
    """The SASL user name of a role.

    >>> principal("worker")
    'streamscore-worker'
    """
    return f"streamscore-{role}"


def _topics(names: tuple[str, ...], *ops: str) -> list[Grant]:
    return [Grant("topic", n, op) for n in names for op in ops]


def _transactions(settings: Settings) -> list[Grant]:
    """Under exactly_once, the worker's transactional ids: the one set, else every
    ``<scoring_group>-<worker_id>`` (streams/worker/transactional.py). None otherwise.

    >>> [(g.name, g.operation, g.pattern) for g in _transactions(
    ...     Settings(worker={"processing_guarantee": "exactly_once"}))][0]
    ('streamscore-scoring-', 'WRITE', 'prefixed')
    >>> _transactions(Settings())
    []
    """
    w = settings.worker
    if w.processing_guarantee != "exactly_once":
        return []
    if w.transactional_id:
        return [Grant("transactional_id", w.transactional_id, op) for op in ("WRITE", "DESCRIBE")]
    prefix = f"{w.scoring_group}-"
    return [Grant("transactional_id", prefix, op, "prefixed") for op in ("WRITE", "DESCRIBE")]


def grants(settings: Settings) -> dict[str, tuple[Grant, ...]]:
    """Every role's grants, by principal.

    >>> g = grants(Settings())
    >>> Grant("topic", "feed.labels.v1", "WRITE") in g["streamscore-worker"]
    False
    >>> any(x.operation == "READ" for x in g["streamscore-api"])
    False
    """
    t = settings.topics
    dlq = dlq_name(t.events)
    worker = [
        *_topics((t.events, t.model_events), "READ"),
        *_topics(
            (t.predictions, t.shadow_predictions, dlq, t.drift_signals, t.feature_log), "WRITE"
        ),
        Grant("group", settings.worker.scoring_group, "READ"),
        Grant("group", MODEL_WATCH_PREFIX, "READ", "prefixed"),
        *_transactions(settings),
    ]
    control = [
        # The retrainer it runs reads, by assignment and without committing, the window's events
        # (the event-derived columns are rebuilt from them), their labels and the features the
        # worker logged at scoring time (the log holds only the entity rows).
        *_topics(
            (
                t.events,
                t.labels,
                t.drift_signals,
                t.retrain_requests,
                t.model_events,
                t.feature_log,
            ),
            "READ",
        ),
        *_topics((t.retrain_requests, t.model_events), "WRITE"),
        # faust's own topics (leader election, changelogs) and group are named by its app id;
        # the retrainer's window reads use throwaway groups under it too.
        *(Grant("topic", CONTROL_APP, op, "prefixed") for op in ("CREATE", "READ", "WRITE")),
        Grant("group", CONTROL_APP, "READ", "prefixed"),
        Grant("group", LOG_READER_PREFIX, "READ", "prefixed"),
        Grant("group", MODEL_WATCH_PREFIX, "READ", "prefixed"),
    ]
    # The API publishes events, its shadow scores and the feature log of what it served: it
    # reads nothing, joins no group.
    api = [
        *_topics((t.events, t.shadow_predictions, t.feature_log), "WRITE"),
        *_topics((t.events,), "DESCRIBE"),
    ]
    replay = [
        *_topics((t.events, dlq, t.predictions, t.model_events), "READ"),
        # Its output goes to sandbox topics only, which it creates, in transactions of its own.
        *(Grant("topic", SANDBOX_PREFIX, op, "prefixed") for op in ("CREATE", "READ", "WRITE")),
        Grant("group", REPLAY_PREFIX, "READ", "prefixed"),
        *(Grant("transactional_id", REPLAY_PREFIX, op, "prefixed") for op in ("WRITE", "DESCRIBE")),
    ]
    # One-shot commands a person runs: read every table topic, look at groups and lag, put
    # dead letters back on the input, write labels and registry events; no topic creation.
    table = (
        t.events,
        t.predictions,
        t.shadow_predictions,
        t.labels,
        dlq,
        t.drift_signals,
        t.retrain_requests,
        t.model_events,
        t.feature_log,
    )
    cli = [
        *_topics(table, "READ", "DESCRIBE_CONFIGS"),
        *_topics((t.events, t.labels, t.retrain_requests, t.model_events), "WRITE"),
        *(Grant("group", g, "READ", "prefixed") for g in CLI_GROUPS),
        # Seeing every group's committed offsets (lag) is not joining it.
        Grant("group", CLI_GROUP_PREFIX, "DESCRIBE", "prefixed"),
    ]
    by_role = {"worker": worker, "control": control, "api": api, "replay": replay, "cli": cli}
    return {principal(role): tuple(by_role[role]) for role in ROLES}


def super_users() -> str:
    """The brokers' ``super.users``: the admin and the nodes themselves, nobody else.

    >>> super_users()
    'User:streamscore-admin;User:streamscore-broker'
    """
    return f"User:{ADMIN};User:{BROKER}"
