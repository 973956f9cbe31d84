"""The two gates of the streamscore_retrain DAG. Pure: streamscore's JSON reports in, a verdict
out (tests/unit/test_airflow_gate.py).

The promotion gate (``judge``): what to do with the challenger a previous run left in shadow,
before this run trains a new one, from the registry's state, its history and the `models
compare` report. A challenger is judged only once it has shadowed for ``min_shadow_hours`` (a
run that judged the challenger it had just shadowed would see no labels and never promote), and
then on the labelled shadow predictions of the live stream, by the task's loss (log loss; MAE
for a regression task):

- none in shadow: ``train``;
- too young, or too few labels while younger than ``max_shadow_hours``: ``wait`` (this run
  trains nothing; the challenger keeps collecting evidence);
- enough labels and a lower online loss than the champion: ``promote``, then train;
- enough labels and no better, or still too few labels at ``max_shadow_hours``: ``retire``
  (its shadow is stopped), then train.

The rows gate (``left_out_verdict``): after `train`, the share of labelled events left out for
want of a feature-log row must be at most ``max_left_out_share``.

The holdout gate (``holdout_report``, ``holdout_verdict``): the new version goes on to shadow
only when its loss on the holdout file, from `streamscore evaluate-file` (the task's own
metrics), is at most the champion's on the same rows times (1 + ``margin``), and never when
`train` made it the champion because there was none (``made_champion``).

Airflow parses every file of the DAG folder; this one defines no DAG and imports nothing of
Airflow's, nor of streamscore's (the DAG runs streamscore's commands).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

TIME_FORMAT = "%Y-%m-%d %H:%M:%S UTC"  # `streamscore models show --json`'s "at"
# The loss a task's models are compared by (lower is better), as services.core.task.Task.loss
# defines it; `models compare` reports per task and this file cannot import streamscore, so
# tests/unit/test_airflow_gate.py checks the two agree.
LOSS = {"binary": "log_loss", "regression": "mae", "multiclass": "log_loss"}
LOSS_NAMES = {"log_loss": "log loss", "mae": "MAE"}


def loss_of(report: dict[str, Any] | None) -> str:
    """The loss to compare in a `models compare` report (older reports, without a task, are
    of a binary task).

    >>> loss_of({"task": "regression"}), loss_of(None)
    ('mae', 'log_loss')
    """
    return LOSS[(report or {}).get("task") or "binary"]


@dataclass(frozen=True)
class Verdict:
    action: str  # train, wait, promote, retire
    version: str | None
    reason: str

    @property
    def trains(self) -> bool:
        """Whether this run goes on to train a new challenger."""
        return self.action != "wait"


def shadow_started(show: dict[str, Any], version: str) -> datetime | None:
    """When ``version``'s current shadow began: the newest shadow_started entry for it."""
    starts = [
        h["at"]
        for h in show.get("history", [])
        if h.get("event_type") == "shadow_started" and str(h.get("to_version")) == version
    ]
    if not starts:
        return None
    return datetime.strptime(starts[-1], TIME_FORMAT).replace(tzinfo=UTC)


def shadow_age_hours(show: dict[str, Any], now: datetime) -> tuple[str, float] | None:
    """The challenger in shadow and its hours in shadow (infinite when its start is unknown),
    or None when nothing shadows."""
    rollout = show.get("rollout", {})
    version = rollout.get("challenger")
    if rollout.get("mode") != "shadow" or not version:
        return None
    started = shadow_started(show, str(version))
    age = (now - started).total_seconds() / 3600 if started else float("inf")
    return str(version), age


def ready_to_compare(show: dict[str, Any], now: datetime, min_shadow_hours: float) -> bool:
    """Whether a challenger has shadowed long enough to be judged on the live stream."""
    found = shadow_age_hours(show, now)
    return found is not None and found[1] >= min_shadow_hours


def judge(
    show: dict[str, Any],
    compare: dict[str, Any] | None,
    now: datetime,
    *,
    min_shadow_hours: float,
    max_shadow_hours: float,
    min_shadow_labels: int,
) -> Verdict:
    """The verdict on the challenger in shadow, if any.

    Args:
        show: `streamscore --json models show --history N` (rollout state and alias history;
            the shadow is compared with the rows of the champion its rollout names).
        compare: `streamscore --json models compare` over the live stream, or None when the
            challenger is too young to be compared.
        now: the run's time.

    >>> show = {"rollout": {"champion": "1", "challenger": None, "mode": "none"}}
    >>> judge(show, None, datetime(2026, 1, 8, tzinfo=UTC), min_shadow_hours=24,
    ...       max_shadow_hours=336, min_shadow_labels=1000).action
    'train'
    """
    found = shadow_age_hours(show, now)
    if found is None:
        return Verdict("train", None, "no challenger in shadow")
    version, age_hours = found
    if age_hours < min_shadow_hours:
        return Verdict(
            "wait", version, f"v{version} has shadowed {age_hours:.1f} h of {min_shadow_hours:g}"
        )
    rows = (compare or {}).get("variants", [])
    shadow = next(
        (r for r in rows if str(r["model_version"]) == version and r["variant"] == "shadow"), {}
    )
    # The current champion's rows, by the version the registry names: after a promotion the
    # compare window still holds the previous champion's, and `models compare` sorts versions
    # as text ("10" before "9"), so the first champion row may be another model's.
    current = str(show.get("rollout", {}).get("champion") or "")
    champion = next(
        (r for r in rows if str(r["model_version"]) == current and r["variant"] == "champion"),
        {},
    )
    labelled = int(shadow.get("labelled") or 0)
    loss = loss_of(compare)
    # `models compare` gives a variant's quality only from 50 labels on.
    if labelled < min_shadow_labels or loss not in champion or loss not in shadow:
        if age_hours < max_shadow_hours:
            return Verdict(
                "wait",
                version,
                f"v{version}: {labelled} labelled shadow predictions, {min_shadow_labels} needed",
            )
        return Verdict(
            "retire",
            version,
            f"v{version}: only {labelled} labelled shadow predictions after {age_hours:.0f} h",
        )
    ours, theirs = float(shadow[loss]), float(champion[loss])
    figures = (
        f"online {LOSS_NAMES[loss]} {ours:.4f} against the champion's {theirs:.4f} "
        f"({labelled} labels)"
    )
    if ours < theirs:
        return Verdict("promote", version, f"v{version} won in shadow: {figures}")
    return Verdict("retire", version, f"v{version} no better in shadow: {figures}")


def left_out_verdict(trained: dict[str, Any], max_share: float) -> tuple[bool, str]:
    """Whether training left out few enough labelled events: with the feature log's rows
    (features=log), events the log lacks (older than its retention, never streamed, scored
    late) are left out, counted in train.json's ``feature_log.left_out``; the share is of the
    labelled events (those left out and the rows trained on, ``validation.rows``).

    Args:
        trained: `streamscore --json train`'s report (train.json).
        max_share: the largest share left out that still trains (0 to 1).

    >>> t = {"version": "4", "validation": {"rows": 950}, "feature_log": {"left_out": 50}}
    >>> left_out_verdict(t, 0.05)[0], left_out_verdict(t, 0.04)[0]
    (True, False)
    """
    left = int((trained.get("feature_log") or {}).get("left_out") or 0)
    labelled = left + int(trained["validation"]["rows"])
    share = left / labelled if labelled else 0.0
    ok = share <= max_share
    said = (
        f"v{trained['version']}: {left:,} of {labelled:,} labelled events left out for want of "
        f"a feature-log row ({share:.1%}; at most {max_share:.1%})"
    )
    if ok:
        return True, said
    return False, said + (
        ": the version stays registered without an alias; give the run history the log holds, "
        "or features=now for a backfill, or raise max_left_out_share"
    )


def made_champion(trained: dict[str, Any]) -> str | None:
    """Why the new version cannot become the challenger when `streamscore train` made it the
    champion (there was none: the DAG's first run): both holdout scorings were then of it, and
    `models shadow` refuses the champion. None when it was registered without an alias.

    Args:
        trained: `streamscore --json train`'s report (train.json).

    >>> made_champion({"version": "1", "champion": True})
    'v1 became the champion (there was none): no challenger to shadow, the run ends'
    >>> made_champion({"version": "4", "champion": False}) is None
    True
    """
    if not trained.get("champion"):
        return None
    return (
        f"v{trained['version']} became the champion (there was none): no challenger to "
        "shadow, the run ends"
    )


def holdout_report(
    version: str | None, champion: dict[str, Any], challenger: dict[str, Any]
) -> dict[str, Any]:
    """The evaluate task's result from the two `streamscore --json evaluate-file` reports of
    the holdout, scored by the champion and by the new version.

    Raises:
        ValueError: the two are of different tasks, or of different (or no) rows.

    >>> r = {"task": "regression", "loss": "mae", "rows": 2, "metrics": {"mae": 1.5}}
    >>> holdout_report("4", r, r | {"metrics": {"mae": 1.2}})["challenger"]
    {'mae': 1.2}
    """
    if champion["task"] != challenger["task"] or champion["loss"] != challenger["loss"]:
        raise ValueError(
            f"the holdout was evaluated as a {champion['task']} task for the champion and as a "
            f"{challenger['task']} task for the new version"
        )
    if champion["rows"] != challenger["rows"] or not champion["rows"]:
        raise ValueError(
            f"the holdout was scored unevenly: {champion['rows']} rows by the champion, "
            f"{challenger['rows']} by the challenger"
        )
    return {
        "version": version,
        "task": champion["task"],
        "loss": champion["loss"],
        "rows": champion["rows"],
        "champion": champion["metrics"],
        "challenger": challenger["metrics"],
    }


def holdout_verdict(report: dict[str, Any], margin: float) -> tuple[bool, str]:
    """Whether the new version becomes the challenger: its holdout loss (the task's, lower is
    better) at most the champion's times (1 + ``margin``); and the line that says so. A loss
    that is not a number (NaN) never passes.

    >>> r = {"version": "4", "loss": "mae", "champion": {"mae": 2.0}, "challenger": {"mae": 2.1}}
    >>> holdout_verdict(r, 0.0)[0], holdout_verdict(r, 0.1)[0]
    (False, True)
    """
    loss = report["loss"]
    ours, theirs = float(report["challenger"][loss]), float(report["champion"][loss])
    limit = theirs * (1 + margin)
    ok = ours <= limit
    return ok, (
        f"v{report['version']}: holdout {LOSS_NAMES.get(loss, loss)} {ours:.4f} against the "
        f"champion's {theirs:.4f} (limit {limit:.4f}): "
        + ("challenger" if ok else "not better: stays registered without an alias")
    )
