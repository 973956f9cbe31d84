"""`services.drift.report`: Evidently's page names the columns that drifted and only those; a
missing extra is one line naming the install command."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ConfigError
from services.drift.reference import Reference
from services.drift.report import INSTALL, evidently, write_report

HAS_EVIDENTLY = importlib.util.find_spec("evidently") is not None
needs_evidently = pytest.mark.skipif(
    not HAS_EVIDENTLY,
    reason="NOT TESTED: the drift report needs Evidently; install it with "
    "`.venv/bin/pip install -e '.[report]'`",
)
NAMES = ("steady", "shifted", "also_steady")


def html_verdicts(path: Path) -> dict[str, str]:
    """Column -> "Detected"/"Not Detected" as the page's drift table shows it (read from the
    page itself, not from the summary the code returns)."""
    text = path.read_text(encoding="utf-8")
    pairs = re.findall(
        r'"column_name": "([^"]+)"[^{}]*?(?:\{[^{}]*\}[^{}]*?)*"data_drift": "([^"]+)"', text
    )
    return dict(pairs)


def _sides(seed: int = 0) -> tuple[Reference, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ref = Reference(NAMES, rng.normal(size=(2000, 3)).astype(np.float32), rng.random(2000))
    current = rng.normal(size=(1500, 3))
    current[:, 1] += 1.5  # "shifted" moves by 1.5 standard deviations; the others do not
    scores = rng.random(1500) ** 3  # the served score moves toward 0
    scores[:100] = np.nan  # rows another version scored: data drift only
    return ref, current, scores


@needs_evidently
def test_the_report_names_the_drifted_column_and_the_prediction_drift(tmp_path: Path) -> None:
    ref, current, scores = _sides()
    out = tmp_path / "sub" / "report.html"
    summary = write_report(ref, current, scores, out)
    assert summary.drifted == ["shifted"]
    assert summary.prediction is not None and summary.prediction.drifted
    assert (summary.reference_rows, summary.current_rows, summary.scored_rows) == (2000, 1500, 1400)
    assert html_verdicts(out) == {
        "steady": "Not Detected",
        "shifted": "Detected",
        "also_steady": "Not Detected",
    }
    assert "Drift in column 'score'" in out.read_text(encoding="utf-8")


@needs_evidently
def test_a_window_like_the_reference_drifts_nowhere(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    ref = Reference(NAMES, rng.normal(size=(2000, 3)).astype(np.float32), rng.random(2000))
    summary = write_report(ref, rng.normal(size=(1500, 3)), rng.random(1500), tmp_path / "r.html")
    assert summary.drifted == []
    assert summary.prediction is not None and not summary.prediction.drifted


def test_too_few_rows_and_unknown_columns_are_refused_before_evidently(tmp_path: Path) -> None:
    ref, current, scores = _sides()
    with pytest.raises(ConfigError, match="too few rows"):
        write_report(ref, current[:10], scores[:10], tmp_path / "r.html")
    with pytest.raises(ConfigError, match="not inputs of the model: nope"):
        write_report(ref, current, scores, tmp_path / "r.html", columns=["nope"])
    assert not (tmp_path / "r.html").exists()


def test_without_the_extra_the_error_is_one_line_naming_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "evidently", None)  # `import evidently` raises ImportError
    with pytest.raises(ConfigError) as caught:
        evidently()
    assert INSTALL in str(caught.value)
    assert "\n" not in str(caught.value)
