"""deploy/airflow's DAG without Airflow: the promotion gate's verdicts (streamscore_gate.py, pure),
and the DAG file's shell commands, which must take every templated value from the environment.
`make airflow-test` runs the DAG itself."""

from __future__ import annotations

import ast
import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

DAGS = Path(__file__).resolve().parents[2] / "deploy" / "airflow" / "dags"
NOW = datetime(2026, 3, 9, 12, 0, tzinfo=UTC)
LIMITS = {"min_shadow_hours": 24.0, "max_shadow_hours": 336.0, "min_shadow_labels": 1000}


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
    assert "gate >> validate_data >> train >> score >> evaluated >> register >> shadow" in text
    assert "promotion_gate" not in text
