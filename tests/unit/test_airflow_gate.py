"""deploy/airflow's DAG without Airflow: the two gates' verdicts (streamscore_gate.py, pure) for
every task, and the DAG file's shell commands, which must take every templated value from the
environment (the train task's is run by bash with a stand-in streamscore). `make airflow-test`
runs the DAG itself."""

from __future__ import annotations

import ast
import importlib.util
import json
import math
import os
import shlex
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).resolve().parents[2] / "deploy" / "airflow" / "dags"
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
LIMITS = {"min_shadow_hours": 24.0, "max_shadow_hours": 336.0, "min_shadow_labels": 1000}
NAN = math.nan


def _gate() -> Any:
    spec = importlib.util.spec_from_file_location("streamscore_gate", DAGS / "streamscore_gate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gate = _gate()


def _show(hours_ago: float | None, challenger: str | None = "7") -> dict[str, Any]:
    history = []
    if hours_ago is not None:
        at = (NOW - timedelta(hours=hours_ago)).strftime(gate.TIME_FORMAT)
        history.append(
            {"event_type": "shadow_started", "alias": "challenger", "to_version": "7", "at": at}
        )
    mode = "shadow" if challenger else "none"
    return {
        "rollout": {"champion": "6", "challenger": challenger, "mode": mode},
        "history": history,
    }


def _compare(labelled: int, shadow_loss: float, champion_loss: float = 0.40) -> dict[str, Any]:
    return {
        "variants": [
            {
                "model_version": "6",
                "variant": "champion",
                "labelled": 5000.0,
                "log_loss": champion_loss,
            },
            {
                "model_version": "7",
                "variant": "shadow",
                "labelled": float(labelled),
                "log_loss": shadow_loss,
            },
        ]
    }


def test_no_challenger_means_train() -> None:
    verdict = gate.judge(_show(None, challenger=None), None, NOW, **LIMITS)
    assert (verdict.action, verdict.trains) == ("train", True)
    assert not gate.ready_to_compare(_show(None, challenger=None), NOW, 24.0)


def test_a_challenger_shadowed_seconds_ago_is_not_judged_and_nothing_is_trained() -> None:
    """The old gate ran seconds after the shadow, with no labels: it could never promote."""
    show = _show(hours_ago=0.01)
    assert not gate.ready_to_compare(show, NOW, LIMITS["min_shadow_hours"])
    verdict = gate.judge(show, None, NOW, **LIMITS)
    assert (verdict.action, verdict.version, verdict.trains) == ("wait", "7", False)


@pytest.mark.parametrize(
    ("hours_ago", "labelled", "shadow_loss", "action"),
    [
        (30, 2000, 0.35, "promote"),  # aged, labelled, better
        (30, 2000, 0.45, "retire"),  # aged, labelled, worse
        (30, 2000, 0.40, "retire"),  # a tie does not promote
        (30, 10, 0.30, "wait"),  # aged but too few labels: keep collecting
        (400, 10, 0.30, "retire"),  # still too few after max_shadow_hours
    ],
)
def test_an_aged_challenger_is_judged_on_its_labelled_shadow_predictions(
    hours_ago: float, labelled: int, shadow_loss: float, action: str
) -> None:
    show = _show(hours_ago)
    assert gate.ready_to_compare(show, NOW, LIMITS["min_shadow_hours"])
    verdict = gate.judge(show, _compare(labelled, shadow_loss), NOW, **LIMITS)
    assert (verdict.action, verdict.version) == (action, "7")
    assert verdict.trains is (action != "wait")


def test_the_newest_shadow_start_of_that_version_counts() -> None:
    show = _show(hours_ago=500)
    later = (NOW - timedelta(hours=2)).strftime(gate.TIME_FORMAT)
    show["history"].append({"event_type": "shadow_started", "to_version": "7", "at": later})
    assert gate.judge(show, None, NOW, **LIMITS).action == "wait"


def test_the_promotion_gate_compares_with_the_current_champions_rows() -> None:
    """After a promotion the --last window still holds the previous champion's rows, and
    `models compare` sorts versions as text ("10" before "9"): the gate must compare with the
    rows of the champion the registry names, not the first champion row."""
    rows = [
        ("1", "champion", 0.10),  # long gone, a very good figure on another stream
        ("10", "champion", 0.20),  # promoted before v9 in this made-up history: still not it
        ("2", "champion", 0.50),  # the current champion
        ("3", "shadow", 0.45),
        ("9", "champion", 0.05),
    ]
    compare = {
        "task": "binary",
        "variants": [
            {"model_version": v, "variant": variant, "labelled": 2000.0, "log_loss": loss}
            for v, variant, loss in rows
        ],
    }
    at = (NOW - timedelta(hours=30)).strftime(gate.TIME_FORMAT)
    show = {
        "rollout": {"champion": "2", "challenger": "3", "mode": "shadow"},
        "history": [{"event_type": "shadow_started", "to_version": "3", "at": at}],
    }
    verdict = gate.judge(show, compare, NOW, **LIMITS)
    assert (verdict.action, verdict.version) == ("promote", "3"), verdict.reason
    assert "against the champion's 0.5000" in verdict.reason
    # The champion's rows missing from the window (just promoted, nothing labelled yet): no
    # figure to compare with, so the challenger waits rather than being judged against another.
    compare["variants"] = [r for r in compare["variants"] if r["model_version"] != "2"]
    assert gate.judge(show, compare, NOW, **LIMITS).action == "wait"


def _dag_calls() -> list[ast.Call]:
    tree = ast.parse((DAGS / "streamscore_retrain.py").read_text())
    return [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "BashOperator"
    ]


def test_no_templated_value_is_pasted_into_a_shell_command() -> None:
    """Params, run ids and XComs reach bash as environment variables, quoted there: a path
    with a quote or `$(...)` in it stays a path."""
    calls = _dag_calls()
    assert len(calls) == 4
    for call in calls:
        keywords = {k.arg: k.value for k in call.keywords}
        command = ast.unparse(keywords["bash_command"])
        assert "{{" not in command and "params." not in command, command
        assert ast.unparse(keywords["env"]) == "ENV"
        assert ast.literal_eval(keywords["append_env"]) is True  # PATH, STREAMSCORE_* kept
        # Every variable the command reads is quoted.
        assert "$" not in command.replace('"$', ""), command


def test_the_gate_comes_first_and_the_run_ends_with_the_shadow() -> None:
    text = (DAGS / "streamscore_retrain.py").read_text()
    assert (
        "gate >> validate_data >> train >> rows_checked >> score >> evaluated >> register "
        ">> shadow" in text
    )
    assert "promotion_gate" not in text


# -- any task: the loss each gate compares -------------------------------------------------------
def test_the_gates_loss_per_task_is_the_tasks_own() -> None:
    """The DAG cannot import streamscore, so it keeps the task -> loss table itself: it must be
    Task.loss's."""
    from services.core.task import TASKS, Task

    classes = ("a", "b", "c")
    assert set(gate.LOSS) == set(TASKS)
    for kind in TASKS:
        task = Task(kind, classes if kind == "multiclass" else ())
        assert gate.LOSS[kind] == task.loss, kind
        assert task.loss in gate.LOSS_NAMES


def _compare_of(task: str, quality: dict[str, tuple[float, float]]) -> dict[str, Any]:
    """A `models compare` report of ``task``: quality = metric -> (champion, shadow)."""
    rows = []
    for version, variant, at in (("6", "champion", 0), ("7", "shadow", 1)):
        row: dict[str, Any] = {"model_version": version, "variant": variant, "labelled": 2000.0}
        rows.append(row | {metric: pair[at] for metric, pair in quality.items()})
    return {"task": task, "variants": rows}


@pytest.mark.parametrize(
    ("task", "quality", "action"),
    [
        # `models compare` reports MAE and RMSE for regression, no log loss: the gate used to
        # wait for a log loss that never came, then retired every regression challenger.
        ("regression", {"mae": (3.0, 2.5), "rmse": (4.0, 3.5)}, "promote"),
        ("regression", {"mae": (3.0, 3.2), "rmse": (4.0, 3.0)}, "retire"),
        ("multiclass", {"log_loss": (0.9, 0.8), "accuracy": (0.6, 0.55)}, "promote"),
        ("multiclass", {"log_loss": (0.9, 0.95), "accuracy": (0.6, 0.7)}, "retire"),
        ("binary", {"log_loss": (0.4, 0.35), "auc": (0.7, 0.6)}, "promote"),
    ],
)
def test_the_promotion_gate_judges_by_the_tasks_loss(
    task: str, quality: dict[str, tuple[float, float]], action: str
) -> None:
    verdict = gate.judge(_show(30), _compare_of(task, quality), NOW, **LIMITS)
    assert (verdict.action, verdict.version) == (action, "7"), verdict.reason
    name = "MAE" if task == "regression" else "log loss"
    assert f"online {name} " in verdict.reason


def _evaluated(task: str, loss: str, rows: int, **metrics: float) -> dict[str, Any]:
    """A `streamscore --json evaluate-file` report."""
    return {"task": task, "loss": loss, "rows": rows, "metrics": {"rows": float(rows)} | metrics}


def test_the_holdout_gate_compares_the_tasks_loss_on_the_same_rows() -> None:
    champion = _evaluated("regression", "mae", 500, mae=2.0, rmse=2.6)
    better = _evaluated("regression", "mae", 500, mae=1.9, rmse=2.9)
    report = gate.holdout_report("7", champion, better)
    assert (report["task"], report["loss"], report["rows"]) == ("regression", "mae", 500)
    assert gate.holdout_verdict(report, 0.0) == (
        True,
        "v7: holdout MAE 1.9000 against the champion's 2.0000 (limit 2.0000): challenger",
    )
    worse = gate.holdout_report("7", champion, _evaluated("regression", "mae", 500, mae=2.1))
    assert gate.holdout_verdict(worse, 0.0)[0] is False
    assert gate.holdout_verdict(worse, 0.1)[0] is True  # 2.1 <= 2.0 * 1.1
    multi = gate.holdout_report(
        "7",
        _evaluated("multiclass", "log_loss", 9, log_loss=0.9, accuracy=0.5),
        _evaluated("multiclass", "log_loss", 9, log_loss=0.8, accuracy=0.4),
    )
    assert gate.holdout_verdict(multi, 0.0)[0] is True


def test_the_holdout_gate_refuses_uneven_rows_mixed_tasks_and_nan() -> None:
    champion = _evaluated("binary", "log_loss", 500, log_loss=0.5, auc=0.7)
    with pytest.raises(ValueError, match="unevenly: 500 rows by the champion, 499"):
        gate.holdout_report("7", champion, _evaluated("binary", "log_loss", 499, log_loss=0.4))
    with pytest.raises(ValueError, match="unevenly: 0 rows"):
        gate.holdout_report("7", champion | {"rows": 0}, champion | {"rows": 0})
    with pytest.raises(ValueError, match="binary task for the champion and as a regression"):
        gate.holdout_report("7", champion, _evaluated("regression", "mae", 500, mae=1.0))
    nan = gate.holdout_report("7", champion, _evaluated("binary", "log_loss", 500, log_loss=NAN))
    assert gate.holdout_verdict(nan, 1.0)[0] is False


def test_a_version_train_made_champion_is_not_shadowed() -> None:
    """The DAG's first run, with no champion: `train` makes the new version champion, both
    holdout scorings are of it, and `models shadow V` would refuse it ("is the champion"). The
    holdout gate stops the run instead, saying why, from train.json."""
    said = gate.made_champion({"version": "1", "champion": True, "validation": {"rows": 9}})
    assert said == "v1 became the champion (there was none): no challenger to shadow, the run ends"
    assert gate.made_champion({"version": "4", "champion": False}) is None
    # The DAG's register_challenger reads train.json from the run's work folder and asks.
    tree = ast.parse((DAGS / "streamscore_retrain.py").read_text())
    [no_worse] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "no_worse"]
    body = ast.unparse(no_worse)
    assert "made_champion(" in body and "train.json" in body, body
    [register] = [
        c
        for c in ast.walk(tree)
        if isinstance(c, ast.Call)
        and any(
            k.arg == "task_id" and ast.literal_eval(k.value) == "register_challenger"
            for k in c.keywords
        )
    ]
    keywords = {k.arg: ast.unparse(k.value) for k in register.keywords}
    assert keywords["templates_dict"] == "{'work': WORK}"


def test_training_with_too_many_events_left_out_fails_after_train() -> None:
    """features=log leaves out the events the feature log lacks, counted in train.json's
    feature_log.left_out: a run that lost most of its history must fail, not train on the
    rest unseen."""
    served = {
        "version": "4",
        "validation": {"rows": 3000},
        "feature_log": {"not_logged": 0, "left_out": 0},
    }
    assert gate.left_out_verdict(served, 0.05) == (
        True,
        "v4: 0 of 3,000 labelled events left out for want of a feature-log row (0.0%; at most "
        "5.0%)",
    )
    lost = served | {"validation": {"rows": 900}, "feature_log": {"left_out": 2100}}
    ok, said = gate.left_out_verdict(lost, 0.05)
    assert ok is False
    assert said.startswith("v4: 2,100 of 3,000 labelled events left out") and "70.0%" in said
    assert "raise max_left_out_share" in said
    assert gate.left_out_verdict(lost, 0.8)[0] is True
    # features=now (Redis now for what the log lacks) or snapshots: nothing left out, no
    # left_out key; a generated history has no feature_log at all.
    now = served | {"feature_log": {"not_logged": 3000}}
    assert gate.left_out_verdict(now, 0.0)[0] is True
    assert gate.left_out_verdict({"version": "4", "validation": {"rows": 5}}, 0.0)[0] is True


def test_the_shadows_reason_names_no_tasks_loss() -> None:
    """The reason `models shadow` records serves every task: a regression challenger is no
    worse by MAE, not log loss."""
    env = _module_value("ENV")
    assert isinstance(env, ast.Dict)
    [reason] = [
        ast.literal_eval(v)
        for k, v in zip(env.keys, env.values, strict=True)
        if isinstance(k, ast.Constant) and k.value == "REASON"
    ]
    assert reason.endswith(": holdout loss no worse"), reason


def test_the_rows_check_runs_after_train_with_its_param() -> None:
    text = (DAGS / "streamscore_retrain.py").read_text()
    assert '"max_left_out_share": Param(0.05, type="number"' in text
    tree = ast.parse(text)
    [check] = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check_rows"]
    body = ast.unparse(check)
    assert "left_out_verdict(" in body and "AirflowFailException" in body, body


# -- the train task's shell command, run by bash without Airflow ------------------------------
def _module_value(name: str) -> ast.expr:
    tree = ast.parse((DAGS / "streamscore_retrain.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [
            name
        ]:
            return node.value
    raise AssertionError(f"no {name} in the DAG")


def _train_command(streamscore: Path, task: str = "train") -> str:
    """The ``task``'s bash_command as the DAG builds it, for ``streamscore``."""
    [call] = [
        c
        for c in _dag_calls()
        if any(k.arg == "task_id" and ast.literal_eval(k.value) == task for k in c.keywords)
    ]
    command = next(k.value for k in call.keywords if k.arg == "bash_command")
    names = {"SS": shlex.quote(str(streamscore)), "FIELD": ast.literal_eval(_module_value("FIELD"))}
    return str(eval(compile(ast.Expression(command), "dag", "eval"), names))  # noqa: S307


def test_the_features_param_is_log_by_default_and_reaches_bash_as_a_variable() -> None:
    env = _module_value("ENV")
    assert isinstance(env, ast.Dict)
    pairs = {ast.literal_eval(k): v for k, v in zip(env.keys, env.values, strict=True) if k}
    assert ast.literal_eval(pairs["FEATURES"]) == "{{ params.features }}"
    tree = ast.parse((DAGS / "streamscore_retrain.py").read_text())
    [param] = [
        v
        for node in ast.walk(tree)
        if isinstance(node, ast.Dict)
        for k, v in zip(node.keys, node.values, strict=True)
        if isinstance(k, ast.Constant) and k.value == "features" and isinstance(v, ast.Call)
    ]
    assert isinstance(param, ast.Call)
    assert ast.literal_eval(param.args[0]) == "log"
    keywords = {k.arg: ast.literal_eval(k.value) for k in param.keywords}
    assert keywords["enum"] == ["log", "now"]


@pytest.mark.parametrize(("features", "now"), [("log", False), ("now", True)])
def test_train_reads_the_feature_log_unless_features_is_now(
    tmp_path: Path, features: str, now: bool
) -> None:
    """bash runs the train task's command with a stand-in streamscore that records its
    arguments: --features-now only for features=now, and a path with `$(...)` stays a path."""
    argv_file = tmp_path / "argv.json"
    fake = tmp_path / "streamscore"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"open({str(argv_file)!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        "print(json.dumps({'version': '9'}))\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    odd = str(tmp_path / "ev $(touch pwned) 'x'.csv")
    env = {
        "PATH": os.environ["PATH"],
        "WORK": str(tmp_path),
        "EVENTS": odd,
        "LABELS": str(tmp_path / "labels.csv"),
        "RUN_NAME": "airflow-2026-03-09",
        "FEATURES": features,
    }
    ran = subprocess.run(  # noqa: S603 (bash, on the DAG's own command)
        ["/bin/bash", "-c", _train_command(fake)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "9"  # the version, the task's XCom
    argv = json.loads(argv_file.read_text())
    assert argv[:5] == ["--json", "train", "--events", odd, "--labels"]
    assert ("--features-now" in argv) is now
    assert argv[argv.index("--holdout-by") :] == [
        "--holdout-by",
        "time",
        "--run-name",
        "airflow-2026-03-09",
    ]
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize(("features", "now"), [("log", False), ("now", True)])
def test_validate_data_builds_the_matrix_from_the_rows_train_uses(
    tmp_path: Path, features: str, now: bool
) -> None:
    """`features matrix` chooses rows as train does (the feature log unless --features-now):
    validate_data passes --features-now exactly when train does, or a backfill (features=now)
    would be refused for want of logged rows."""
    argv_file = tmp_path / "argv.json"
    fake = tmp_path / "streamscore"
    fake.write_text(
        "#!/usr/bin/env python3\nimport json, sys\n"
        f"open({str(argv_file)!r}, 'w').write(json.dumps(sys.argv[1:]))\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    env = {
        "PATH": os.environ["PATH"],
        "WORK": str(tmp_path / "work"),
        "EVENTS": str(tmp_path / "events.csv"),
        "FEATURES": features,
    }
    ran = subprocess.run(  # noqa: S603 (bash, on the DAG's own command)
        ["/bin/bash", "-c", _train_command(fake, "validate_data")],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    argv = json.loads(argv_file.read_text())
    assert argv[:4] == ["features", "matrix", "--events", env["EVENTS"]]
    assert ("--features-now" in argv) is now
    assert argv[-2:] == ["--out", f"{env['WORK']}/matrix.parquet"]
