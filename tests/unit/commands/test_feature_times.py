"""Times in entity feature files and ``--as-of``, converted by their unit: an ISO text, a
Parquet datetime column and an offset all land on the same epoch milliseconds, and seconds are
refused (read as milliseconds they would make every snapshot valid since 1970)."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
import pandas as pd
import pytest

from services.core.errors import ConfigError
from streams.commands.history import _as_of, _milliseconds

MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z


@pytest.mark.parametrize(
    "values",
    [
        pd.Series(["2026-01-01T00:00:00Z", "2026-01-01T02:00:01+02:00"]),
        pd.Series(pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"]).as_unit("us")),
        pd.Series(pd.to_datetime(["2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z"]).as_unit("s")),
        pd.Series([MS, MS + 1000]),
    ],
    ids=["iso-text", "datetime-us", "datetime-s", "epoch-ms"],
)
def test_valid_from_is_epoch_milliseconds_whatever_its_unit(values: pd.Series) -> None:
    got = _milliseconds(values, Path("f.csv"))
    assert got.tolist() == [MS, MS + 1000]
    assert got.dtype == np.int64


def test_valid_from_in_seconds_is_refused() -> None:
    with pytest.raises(ConfigError, match="epoch milliseconds"):
        _milliseconds(pd.Series([MS // 1000, MS // 1000 + 1]), Path("f.csv"))


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("2026-01-01T00:00:00Z", MS),
        ("2026-01-01T01:00:00+01:00", MS),
        ("2026-01-01T00:00:00", MS),  # no offset: UTC
        (str(MS), MS),
    ],
)
def test_as_of_reads_offsets(text: str, want: int) -> None:
    ctx = click.Context(click.Command("x"))
    assert _as_of(ctx, click.Option(["--as-of"]), text) == want
