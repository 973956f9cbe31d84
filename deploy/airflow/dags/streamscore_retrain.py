"""Scheduled retraining with streamscore's own commands, for teams that retrain on a calendar
rather than on drift (the control plane does the latter by itself).

    validate_data -> train -> evaluate -> register_challenger -> shadow -> promotion_gate

- validate_data: `streamscore features matrix` checks every event as the worker does (exit 2
  names each invalid row, and the run stops there).
- train: `streamscore train` on the events and labels files; it records the run in MLflow and
  registers a new version (never champion while one exists).
- evaluate: the champion and the new version score the same holdout file (`score-file`, labels
  kept); log loss and AUC are computed here, on exactly the same rows.
- register_challenger: the new version becomes the challenger only when its holdout log loss is
  no worse than the champion's (times 1 + `margin`); otherwise the run ends, the version stays
  registered without an alias.
- shadow: `streamscore models shadow` (alias challenger, rollout mode shadow): the workers score
  every event with it too, published as variant=shadow.
- promotion_gate: `streamscore models compare` on the live stream; promotes with
  `streamscore models promote` only with `min_shadow_labels` labelled shadow predictions and a
  lower online log loss; otherwise the challenger stays in shadow for a person (or the next run).

Airflow is not a dependency of streamscore: this file needs only Airflow 3 and its standard
provider. The tasks call the `streamscore` executable named by the environment variable
DAG_STREAMSCORE_BIN (default: `streamscore` on PATH); STREAMSCORE_* variables configure it as
everywhere else (docs/configuration.md). Files come from the run's params (`--conf`).
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import pendulum
from airflow.exceptions import AirflowFailException
from airflow.providers.standard.operators.bash import BashOperator
from airflow.providers.standard.operators.python import PythonOperator, ShortCircuitOperator
from airflow.sdk import DAG, Param

SS = os.environ.get("DAG_STREAMSCORE_BIN", "streamscore")
WORK = "{{ params.workdir }}/{{ run_id | replace(':', '_') | replace('+', '_') }}"
# The last line a BashOperator prints is its XCom: a JSON result reduced to one value.
FIELD = "python3 -c 'import json,sys; print(json.load(sys.stdin){})'"


def _read_scored(path: str, target: str) -> list[tuple[float, int]]:
    """(score, label) of each scored row of a `score-file --keep-columns` CSV."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    column = target if rows and target in rows[0] else f"input_{target}"
    return [(float(r["score"]), int(str(r[column]).lower() in ("1", "true"))) for r in rows]


def log_loss(pairs: list[tuple[float, int]]) -> float:
    eps = 1e-15
    total = 0.0
    for p, y in pairs:
        p = min(max(p, eps), 1 - eps)
        total -= math.log(p) if y else math.log(1 - p)
    return total / len(pairs)


def auc(pairs: list[tuple[float, int]]) -> float:
    """Rank AUC (ties share their ranks): the share of positive-negative pairs ordered right."""
    ranked = sorted(pairs)
    ranks = [0.0] * len(ranked)
    i = 0
    while i < len(ranked):
        j = i
        while j + 1 < len(ranked) and ranked[j + 1][0] == ranked[i][0]:
            j += 1
        for k in range(i, j + 1):
            ranks[k] = (i + j) / 2 + 1
        i = j + 1
    pos = sum(y for _, y in ranked)
    neg = len(ranked) - pos
    if not pos or not neg:
        return float("nan")
    hits = sum(r for r, (_, y) in zip(ranks, ranked, strict=True) if y)
    return (hits - pos * (pos + 1) / 2) / (pos * neg)


def evaluate(**context: Any) -> dict[str, Any]:
    params, ti = context["params"], context["ti"]
    work = Path(context["templates_dict"]["work"])
    champion = _read_scored(str(work / "champion.csv"), params["target"])
    challenger = _read_scored(str(work / "challenger.csv"), params["target"])
    if len(champion) != len(challenger) or not champion:
        raise AirflowFailException(
            f"the holdout was scored unevenly: {len(champion)} rows by the champion, "
            f"{len(challenger)} by the challenger"
        )
    result = {
        "version": ti.xcom_pull(task_ids="train"),
        "rows": len(champion),
        "champion": {"log_loss": log_loss(champion), "auc": auc(champion)},
        "challenger": {"log_loss": log_loss(challenger), "auc": auc(challenger)},
    }
    print(json.dumps(result))
    return result


def no_worse(**context: Any) -> bool:
    ev = context["ti"].xcom_pull(task_ids="evaluate")
    limit = ev["champion"]["log_loss"] * (1 + float(context["params"]["margin"]))
    ok = bool(ev["challenger"]["log_loss"] <= limit)
    print(
        f"v{ev['version']}: holdout log loss {ev['challenger']['log_loss']:.4f} against the "
        f"champion's {ev['champion']['log_loss']:.4f} (limit {limit:.4f}): "
        + ("challenger" if ok else "not better: stays registered without an alias")
    )
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
        "target": Param("clicked", type="string"),
        "workdir": Param("/tmp/streamscore-airflow", type="string"),
        "margin": Param(0.0, type="number"),
        "min_shadow_labels": Param(1000, type="integer"),
    },
    tags=["streamscore", "mlops"],
) as dag:
    validate_data = BashOperator(
        task_id="validate_data",
        bash_command=(
            f"set -euo pipefail; mkdir -p {WORK}; "
            f"{SS} features matrix --events '{{{{ params.events }}}}' --out {WORK}/matrix.parquet"
        ),
    )
    train = BashOperator(
        task_id="train",
        bash_command=(
            f"set -euo pipefail; {SS} --json train --events '{{{{ params.events }}}}' "
            "--labels '{{ params.labels }}' --holdout-by time --run-name 'airflow-{{ ds }}' "
            f"> {WORK}/train.json; " + FIELD.format('["version"]') + f" < {WORK}/train.json"
        ),
    )
    score = BashOperator(
        task_id="score_holdout",
        bash_command=(
            f"set -euo pipefail; "
            f"{SS} score-file '{{{{ params.holdout }}}}' --out {WORK}/champion.csv "
            "--alias champion --keep-columns; "
            f"{SS} score-file '{{{{ params.holdout }}}}' --out {WORK}/challenger.csv "
            "--model-version {{ ti.xcom_pull(task_ids='train') }} --keep-columns"
        ),
    )
    evaluated = PythonOperator(
        task_id="evaluate", python_callable=evaluate, templates_dict={"work": WORK}
    )
    register = ShortCircuitOperator(task_id="register_challenger", python_callable=no_worse)
    shadow = BashOperator(
        task_id="shadow",
        bash_command=(
            f"{SS} models shadow {{{{ ti.xcom_pull(task_ids='train') }}}} "
            "-m 'airflow {{ dag.dag_id }} {{ run_id }}: holdout log loss no worse'"
        ),
    )
    gate = BashOperator(
        task_id="promotion_gate",
        bash_command=(
            "set -euo pipefail; v={{ ti.xcom_pull(task_ids='train') }}; "
            f"{SS} --json models compare > {WORK}/compare.json; "
            "verdict=$(python3 - "
            + WORK
            + "/compare.json $v {{ params.min_shadow_labels }} <<'EOF'\n"
            "import json, sys\n"
            "rows = json.load(open(sys.argv[1]))\n"
            "rows = rows.get('variants', rows) if isinstance(rows, dict) else rows\n"
            "by = {(str(r.get('model_version')), r.get('variant')): r for r in rows}\n"
            "s = by.get((sys.argv[2], 'shadow'), {})\n"
            "c = next((r for (v, k), r in by.items() if k == 'champion'), {})\n"
            "n = int(s.get('labelled') or 0)\n"
            "ok = n >= int(sys.argv[3]) and (s.get('log_loss') or 1e9) < (c.get('log_loss') or 0)\n"
            "print('promote' if ok else f'keep shadowing ({n} labelled shadow predictions)')\n"
            "EOF\n"
            '); echo "gate: $verdict"; '
            'if [ "$verdict" = promote ]; then '
            f"{SS} models promote $v -m 'airflow {{{{ run_id }}}}: won in shadow'; fi; "
            'echo "$verdict"'
        ),
    )
    validate_data >> train >> score >> evaluated >> register >> shadow >> gate
