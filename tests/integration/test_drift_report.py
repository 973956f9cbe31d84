"""`streamscore report drift` on a real broker: a worker scores the champion's own holdout
events again (and refuses a few broken ones), then the same events with two inputs moved; the
first page finds no drift (its inputs are the reference's, row for row: the dead letters are
left out), the second names exactly the two moved inputs.

Skipped, loudly (NOT TESTED in the run's summary), without the extra ``report``.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.drift.reference import Reference, read_reference
from services.features.assemble import MS_PER_HOUR
from services.scoring.registry import MlflowRegistry
from services.training.train import split
from streams.runtime import scoring_worker
from tests.integration.conftest import Stack
from tests.integration.pipeline_env import Pipeline, cli_in_process, make_pipeline, world_events
from tests.unit.drift.test_report import html_verdicts

pytestmark = [
    pytest.mark.integration,
    pytest.mark.kafka_only,  # --from/--to are time lookups (offsets_for_times)
    # Two reports, each reading its window and running Evidently: 250 s here under a load
    # average of 15 to 18 on 2 cores, close to the suite's 300 s default.
    pytest.mark.timeout(900),
    pytest.mark.skipif(
        importlib.util.find_spec("evidently") is None,
        reason="NOT TESTED: the drift report needs Evidently; install it with "
        "`.venv/bin/pip install -e '.[report]'`",
    ),
]
# How make_pipeline trains its champion: 6,000 events of its world from this index, a random
# 20% holdout with seed 7; the reference is that whole holdout (fewer than 5,000 rows).
HISTORY_START, HISTORY_EVENTS, HOLDOUT_SHARE, SEED = 10_000_000, 6000, 0.2, 7
# The inputs the second window moves, far outside what training saw; every other one stays.
SHIFTED = ("session_depth", "item_age_hours")
REFUSED = 50  # dead letters in the first window


def _move(event: dict[str, Any]) -> None:
    event["session_depth"] = int(event["session_depth"]) + 40
    event["item_age_hours"] = float(event["item_age_hours"]) * 5 + 100


@pytest.fixture(scope="module")
def pipeline(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    yield from make_pipeline(stack, tmp_path_factory.mktemp("drift-report"))


def _reference(p: Pipeline) -> Reference:
    with tempfile.TemporaryDirectory() as tmp:
        MlflowRegistry(p.settings).load(alias="champion", keep=Path(tmp))
        reference = read_reference(Path(tmp))
    assert reference is not None, "the champion keeps no training reference"
    return reference


def _the_holdout_again(p: Pipeline, reference: Reference) -> list[dict[str, Any]]:
    """The champion's holdout events, in the reference's row order, with new ids and, since the
    history lies hours ahead, each at its reference row's hour of day within the last day."""
    history = world_events(p, HISTORY_EVENTS, start=HISTORY_START)
    _, hold = split(HISTORY_EVENTS, HOLDOUT_SHARE, SEED)
    assert len(hold) == len(reference.scores), "the reference is not this holdout"
    hours = reference.values[:, reference.names.index("hour_of_day")].astype(int)
    now_hour = int(time.time() * 1000) // MS_PER_HOUR
    events = []
    for i, hour in zip(hold, hours, strict=True):
        back = (now_hour - int(hour)) % 24 or 24  # hours back to the last such hour, past
        at = (now_hour - back) * MS_PER_HOUR + MS_PER_HOUR // 2
        events.append(history[i] | {"event_id": str(uuid.uuid4()), "event_time": at})
    return events


def _send(p: Pipeline, events: list[dict[str, Any]]) -> tuple[int, int]:
    """Produce ``events``; the window [from, to) of broker time that holds exactly them."""
    codec = p.codec("Interaction")
    start = int(time.time() * 1000)
    p.produce(
        [
            (e["user_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )
    end = int(time.time() * 1000) + 1
    while int(time.time() * 1000) < end:  # the next window's first timestamp is >= end
        time.sleep(0.001)
    return start, end


def _report(p: Pipeline, window: tuple[int, int], out: Path) -> dict[str, Any]:
    ran = cli_in_process(
        p, "--json", "report", "drift", "--from", str(window[0]), "--to", str(window[1]),
        "--out", str(out),
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    return dict(json.loads(ran.stdout))


def test_the_report_names_the_inputs_that_moved_and_only_those(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    reference = _reference(pipeline)
    same = _the_holdout_again(pipeline, reference)
    moved = _the_holdout_again(pipeline, reference)
    for e in moved:
        _move(e)
    # Events the worker refuses (a negative position breaks a rule) never reach the model: if
    # the report counted them, the first window would hold rows the reference does not.
    refused = [e | {"event_id": str(uuid.uuid4()), "position": -5} for e in same[:REFUSED]]
    same_window, moved_window = _send(pipeline, same + refused), _send(pipeline, moved)
    n = len(same)
    summary = scoring_worker(pipeline.settings).run(max_events=2 * n + REFUSED, idle_timeout=60)
    assert (summary.predictions, summary.dead_letters) == (2 * n, REFUSED)

    calm = _report(pipeline, same_window, tmp_path / "same.html")
    drifted = _report(pipeline, moved_window, tmp_path / "moved.html")

    # The first window's inputs are the reference's row for row (float32 apart), which shows
    # the report assembled what training did: no column is apart, nothing drifted.
    # (A p-value is 1 for identical samples, a distance 0.)
    apart = {
        c["column"]: (c["method"], c["score"])
        for c in calm["columns"]
        if abs(c["score"] - (1.0 if "p_value" in c["method"] else 0.0)) > 1e-3
    }
    assert apart == {}
    # Read from the pages themselves: Evidently's per-column verdicts.
    same_page = html_verdicts(tmp_path / "same.html")
    moved_page = html_verdicts(tmp_path / "moved.html")
    assert set(same_page) == set(moved_page) == set(reference.names)
    assert {c for c, v in same_page.items() if v == "Detected"} == set()
    assert {c for c, v in moved_page.items() if v == "Detected"} == set(SHIFTED)
    # The summary agrees with the page, and every event of each window was read and scored.
    assert (calm["drifted_columns"], sorted(drifted["drifted_columns"])) == ([], sorted(SHIFTED))
    for r, not_served in ((calm, REFUSED), (drifted, 0)):
        assert (r["current_rows"], r["scored_rows"], r["not_served"]) == (n, n, not_served)
        assert r["model_version"] == pipeline.trained.version
    assert calm["prediction_drifted"] is False
