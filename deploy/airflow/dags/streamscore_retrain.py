"""Scheduled retraining with streamscore's own commands, for teams that retrain on a calendar
rather than on drift (the control plane does the latter by itself). Any task the domain
declares: binary, regression or multiclass.

    judge_challenger -> validate_data -> train -> check_rows -> score_holdout -> evaluate
        -> register_challenger -> shadow

- judge_challenger: the promotion gate, for the challenger an earlier run left in shadow. It is
  judged only after `min_shadow_hours` in shadow, on the live stream's labelled shadow
  predictions (`streamscore models compare`), by the task's loss (log loss; MAE for a
  regression task): promoted (`models promote`) with at least `min_shadow_labels` of them and
  a lower online loss than the champion's; retired (`models rollback`, which ends the shadow)
  when no better, or still short of labels after `max_shadow_hours`. While it is younger or
  short of labels, this run stops here: it trains nothing and leaves the challenger collecting
  evidence (streamscore_gate.py has the rules).
  A gate after `shadow` in the same run would judge a challenger seconds old, with no labels:
  it could never promote.
- validate_data: `streamscore features matrix` checks every event as the worker does (exit 2
  names each invalid row, and the run stops there), and builds the matrix from the rows
  train will use (the `features` param below: the feature log, or Redis now).
- train: `streamscore train` on the events and labels files; it records the run in MLflow and
  registers a new version (never champion while one exists). The param `features` says where
  the events' entity features come from:
  - `log` (the default): the feature log, the rows the workers served for these events, bit
    for bit. Events the log lacks (older than its retention, never streamed, or logged more
    than an hour after the newest event's time, past the range the log is read in:
    STREAMSCORE_FEATURES__LOG_SLACK_SECONDS) are left out and counted in train.json
    (`feature_log.left_out`); when it has none of them the task fails (exit 2).
  - `now`: Redis as it is now for the events the log lacks (`train --features-now`), for a
    backfill of history the workers never served. It risks leakage: an entity feature that
    moved with the outcome after the event (a rate, a count of the last day) carries the label
    into training, and the holdout then looks better than serving will be.
- check_rows: fails the run when more than `max_left_out_share` (default 0.05) of the
  labelled events were left out for want of a feature-log row: a model trained on what is
  left may not be the model the history would give.
- score_holdout, evaluate: the champion and the new version score the same holdout file
  (`score-file`, labels kept); `streamscore evaluate-file` gives the task's metrics of each on
  exactly the same rows (log loss, AUC and ECE; MAE and RMSE; log loss and accuracy) and
  names the loss to compare. `score-file` assembles the holdout's entity features from Redis
  as it is now: the comparison is on today's features, not on those served (the training
  rows are the served ones). Both models see the same rows, so the comparison is fair between
  them, but with features that moved with the outcome after the events both look better than
  serving will be.
- register_challenger: the new version becomes the challenger only when its holdout loss is
  no worse than the champion's (times 1 + `margin`); otherwise the run ends, the version stays
  registered without an alias. On the first run, with no champion, `train` made the new version
  champion (train.json's `champion`): both holdouts were scored by it, and the run ends here,
  saying so.
- shadow: `streamscore models shadow` (alias challenger, rollout mode shadow): the workers score
  every event with it too, published as variant=shadow, until a later run judges it.

Airflow is not a dependency of streamscore: this file needs only Airflow 3 and its standard
provider, and imports nothing of streamscore. The tasks call the `streamscore` executable named
by the environment variable DAG_STREAMSCORE_BIN (default: `streamscore` on PATH); STREAMSCORE_*
variables configure it as everywhere else (docs/configuration.md), the domain (and so the task)
included. Files come from the run's params (`--conf`). Params and other templated values reach
the shell only as environment variables (`env=`), always quoted there, never as text of the
command: a path with a quote or a `$(...)` in it stays a path.

The tasks hand files to each other in `<workdir>/<run id>` (the matrix, train.json, the scored
holdouts): every task of a run must see the same `workdir`. With the LocalExecutor that is the
machine's disk; with the Celery or Kubernetes executors, mount one shared volume at `workdir` on
every worker (or pin the DAG's tasks to one worker's queue).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pendulum
from airflow.exceptions import AirflowFailException
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator
from airflow.sdk import DAG, Param
from streamscore_gate import (
    holdout_report,
    holdout_verdict,
    judge,
    left_out_verdict,
    made_champion,
    ready_to_compare,
)

STREAMSCORE = os.environ.get("DAG_STREAMSCORE_BIN", "streamscore")
SS = shlex.quote(STREAMSCORE)
WORK = "{{ params.workdir }}/{{ run_id | replace(':', '_') | replace('+', '_') }}"
# Every templated value a shell command needs, as an environment variable (see the docstring).
# append_env keeps the worker's own environment (PATH, STREAMSCORE_*).
ENV = {
    "WORK": WORK,
    "EVENTS": "{{ params.events }}",
    "LABELS": "{{ params.labels }}",
    "HOLDOUT": "{{ params.holdout }}",
    "FEATURES": "{{ params.features }}",
    "RUN_NAME": "airflow-{{ ds }}",
    "VERSION": "{{ ti.xcom_pull(task_ids='train') or '' }}",
    # Any task: the loss is log loss or MAE (register_challenger printed which, with figures).
    "REASON": "airflow {{ dag.dag_id }} {{ run_id }}: holdout loss no worse",
}
# The last line a BashOperator prints is its XCom: a JSON result reduced to one value.
FIELD = "python3 -c 'import json,sys; print(json.load(sys.stdin){})'"


def streamscore(*args: str) -> str:
    """Run streamscore with an argument list (no shell) and return its stdout."""
    argv = [STREAMSCORE, *args]
    ran = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    if ran.returncode != 0:
        raise AirflowFailException(
            f"streamscore {' '.join(args)} exited {ran.returncode}: {ran.stderr.strip()[-2000:]}"
        )
    return ran.stdout


def judge_challenger(**context: Any) -> bool:
    """The promotion gate (streamscore_gate.judge); False ends the run before training."""
    params = context["params"]
    show = json.loads(streamscore("--json", "models", "show", "--history", "500"))
    limits = {
        "min_shadow_hours": float(params["min_shadow_hours"]),
        "max_shadow_hours": float(params["max_shadow_hours"]),
        "min_shadow_labels": int(params["min_shadow_labels"]),
    }
    now = datetime.now(UTC)
    compare = None
    if ready_to_compare(show, now, limits["min_shadow_hours"]):
        last = str(int(params["compare_last"]))
        compare = json.loads(streamscore("--json", "models", "compare", "--last", last))
    verdict = judge(show, compare, now, **limits)
    print(f"gate: {verdict.action}: {verdict.reason}")
    why = f"airflow {context['dag'].dag_id} {context['run_id']}: {verdict.reason}"
    if verdict.action == "promote" and verdict.version is not None:
        print(streamscore("models", "promote", verdict.version, "-m", why))
    elif verdict.action == "retire":
        print(streamscore("models", "rollback", "-m", why))
    return verdict.trains


def evaluated_file(path: Path, target: str) -> dict[str, Any]:
    """`streamscore --json evaluate-file` of one scored holdout: the domain task's metrics, by
    the definitions training uses (the label column: ``target``, or the domain's label)."""
    by = ("--target", target) if target else ()
    report: dict[str, Any] = json.loads(streamscore("--json", "evaluate-file", str(path), *by))
    return report


def evaluate(**context: Any) -> dict[str, Any]:
    params, ti = context["params"], context["ti"]
    work = Path(context["templates_dict"]["work"])
    target = str(params.get("target") or "")
    champion = evaluated_file(work / "champion.csv", target)
    challenger = evaluated_file(work / "challenger.csv", target)
    try:
        result = holdout_report(ti.xcom_pull(task_ids="train"), champion, challenger)
    except ValueError as exc:
        raise AirflowFailException(str(exc)) from exc
    print(json.dumps(result))
    return result


def check_rows(**context: Any) -> None:
    """The rows gate (streamscore_gate.left_out_verdict): the task fails when train left out
    more than max_left_out_share of the labelled events for want of a feature-log row."""
    work = Path(context["templates_dict"]["work"])
    trained = json.loads((work / "train.json").read_text(encoding="utf-8"))
    ok, said = left_out_verdict(trained, float(context["params"]["max_left_out_share"]))
    print(said)
    if not ok:
        raise AirflowFailException(said)


def no_worse(**context: Any) -> bool:
    """The holdout gate (streamscore_gate.holdout_verdict); False ends the run unshadowed. A
    version `train` made champion (there was none) is never shadowed: it is the champion."""
    work = Path(context["templates_dict"]["work"])
    said = made_champion(json.loads((work / "train.json").read_text(encoding="utf-8")))
    if said is not None:
        print(said)
        return False
    ev = context["ti"].xcom_pull(task_ids="evaluate")
    ok, said = holdout_verdict(ev, float(context["params"]["margin"]))
    print(said)
    return ok


with DAG(
    dag_id="streamscore_retrain",
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    doc_md=__doc__,
    params={
        "events": Param("/data/streamscore/events.parquet", type="string"),
        "labels": Param("/data/streamscore/labels.parquet", type="string"),
        "holdout": Param("/data/streamscore/holdout.parquet", type="string"),
        # The holdout's label column; empty: the domain's label target (`domain show`).
        "target": Param("", type="string"),
        # Entity features for training: "log", the rows served (the feature log), or "now",
        # Redis as it is now for history never served (leakage risk: see the docstring).
        "features": Param("log", type="string", enum=["log", "now"]),
        # With features=log: the largest share of the labelled events that may be left out
        # for want of a feature-log row (check_rows fails the run above it).
        "max_left_out_share": Param(0.05, type="number", minimum=0, maximum=1),
        # Shared by every task of a run (see the docstring): a shared volume on several workers.
        "workdir": Param("/tmp/streamscore-airflow", type="string"),  # noqa: S108 (a default to override)
        "margin": Param(0.0, type="number"),
        # The gate: a challenger shadows a day at least before it is judged (a weekly schedule
        # gives it a week), on at least this many labelled shadow predictions of the newest
        # compare_last per partition; one still short of labels after two weeks is retired.
        "min_shadow_hours": Param(24.0, type="number"),
        "max_shadow_hours": Param(336.0, type="number"),
        "min_shadow_labels": Param(1000, type="integer"),
        "compare_last": Param(20000, type="integer"),
    },
    tags=["streamscore", "mlops"],
) as dag:
    gate = ShortCircuitOperator(task_id="judge_challenger", python_callable=judge_challenger)
    validate_data = BashOperator(
        task_id="validate_data",
        env=ENV,
        append_env=True,
        # The rows train will use (features matrix chooses them as train does): features=now
        # adds --features-now, else events the feature log lacks are left out, counted.
        bash_command=(
            'set -euo pipefail; mkdir -p "$WORK"; '
            'set --; if [ "$FEATURES" = now ]; then set -- --features-now; fi; '
            f'{SS} features matrix --events "$EVENTS" "$@" --out "$WORK/matrix.parquet"'
        ),
    )
    train = BashOperator(
        task_id="train",
        env=ENV,
        append_env=True,
        # features=now adds --features-now (the param's enum allows only log and now).
        bash_command=(
            'set -euo pipefail; set --; if [ "$FEATURES" = now ]; then set -- --features-now; fi; '
            f'{SS} --json train --events "$EVENTS" --labels "$LABELS" "$@" '
            '--holdout-by time --run-name "$RUN_NAME" > "$WORK/train.json"; '
            + FIELD.format('["version"]')
            + ' < "$WORK/train.json"'
        ),
    )
    rows_checked = PythonOperator(
        task_id="check_rows", python_callable=check_rows, templates_dict={"work": WORK}
    )
    score = BashOperator(
        task_id="score_holdout",
        env=ENV,
        append_env=True,
        bash_command=(
            "set -euo pipefail; "
            f'{SS} score-file "$HOLDOUT" --out "$WORK/champion.csv" --alias champion '
            "--keep-columns; "
            f'{SS} score-file "$HOLDOUT" --out "$WORK/challenger.csv" --model-version "$VERSION" '
            "--keep-columns"
        ),
    )
    evaluated = PythonOperator(
        task_id="evaluate", python_callable=evaluate, templates_dict={"work": WORK}
    )
    register = ShortCircuitOperator(
        task_id="register_challenger", python_callable=no_worse, templates_dict={"work": WORK}
    )
    shadow = BashOperator(
        task_id="shadow",
        env=ENV,
        append_env=True,
        bash_command=f'set -euo pipefail; {SS} models shadow "$VERSION" -m "$REASON"',
    )
    gate >> validate_data >> train >> rows_checked >> score >> evaluated >> register >> shadow
