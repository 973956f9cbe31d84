"""The training reference kept with a version: written into the artifact, read back as written
(a sample when the holdout is large), absent or unreadable said so."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.core.errors import ModelLoadError
from services.drift.reference import REFERENCE_FILE, read_reference, write_reference


def test_a_small_holdout_is_kept_whole_and_read_back_as_written(tmp_path: Path) -> None:
    values = np.array([[1.0, 2.5], [np.nan, -3.0], [0.125, 7.0]])
    write_reference(tmp_path, ("a", "b"), values, np.array([0.1, 0.9, 0.5]))
    ref = read_reference(tmp_path)
    assert ref is not None
    assert ref.names == ("a", "b")
    assert ref.values.dtype == np.float32
    np.testing.assert_array_equal(ref.values, [[1.0, 2.5], [np.nan, -3.0], [0.125, 7.0]])
    assert ref.scores.tolist() == [0.1, 0.9, 0.5]


def test_a_large_holdout_is_sampled_rows_whole(tmp_path: Path) -> None:
    # Row i is (i, -i) scored i / 100: a sampled row must still be one row of the holdout.
    n = 100
    values = np.stack([np.arange(n, dtype=float), -np.arange(n, dtype=float)], axis=1)
    write_reference(tmp_path, ("i", "minus_i"), values, np.arange(n) / 100, seed=3, max_rows=10)
    ref = read_reference(tmp_path)
    assert ref is not None and len(ref.scores) == 10
    rows = ref.values[:, 0].astype(int)
    assert len(set(rows.tolist())) == 10
    assert (ref.values[:, 1] == -ref.values[:, 0]).all()
    assert ref.scores.tolist() == (rows / 100).tolist()


def test_a_version_without_a_reference_reads_none(tmp_path: Path) -> None:
    assert read_reference(tmp_path) is None


def test_an_unreadable_reference_is_a_load_error(tmp_path: Path) -> None:
    (tmp_path / REFERENCE_FILE).write_bytes(b"not a zip file")
    with pytest.raises(ModelLoadError, match=REFERENCE_FILE):
        read_reference(tmp_path)


def test_values_that_do_not_fit_the_names_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="reference"):
        write_reference(tmp_path, ("a",), np.zeros((2, 2)), np.zeros(2))
