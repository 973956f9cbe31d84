"""The training reference kept with a version: a sample of its holdout's model inputs and the
scores it gave them, which a drift report compares a window of served events with (pure).

The file travels in the version's artifact, so the artifact digest covers it and a report
always reads the reference of exactly the version it names. It holds the model's input matrix
(``feature_names`` order, float32) and the served scores (calibrated when the version is).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from services.core.errors import ModelLoadError

REFERENCE_FILE = "reference.npz"
# Enough rows for every test the report runs to have power; at the feed's 43 columns about
# 0.9 MB before compression, downloaded with the version.
MAX_ROWS = 5000


@dataclass(frozen=True, slots=True)
class Reference:
    """Rows of a version's holdout: model inputs and the scores the version gave them."""

    names: tuple[str, ...]
    values: npt.NDArray[np.float32]
    scores: npt.NDArray[np.float64]


def sample_rows(n: int, max_rows: int, seed: int) -> npt.NDArray[np.intp]:
    """Indices of at most ``max_rows`` of ``n`` rows, in order, the same for the same seed.

    >>> sample_rows(5, 10, 0).tolist()
    [0, 1, 2, 3, 4]
    >>> picked = sample_rows(100, 3, 7)
    >>> len(picked), picked.tolist() == sorted(picked.tolist())
    (3, True)
    >>> picked.tolist() == sample_rows(100, 3, 7).tolist()
    True
    """
    if n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def write_reference(
    directory: Path,
    names: tuple[str, ...],
    values: npt.NDArray[np.float64],
    scores: npt.NDArray[np.float64],
    seed: int = 0,
    max_rows: int = MAX_ROWS,
) -> Path:
    """Write a sample of ``values`` (rows of the model's input) and ``scores`` into
    ``directory`` (before the artifact's digest is taken); returns the file."""
    if values.shape != (len(scores), len(names)):
        raise ValueError(
            f"reference: {values.shape} values for {len(scores)} scores, {len(names)} names"
        )
    rows = sample_rows(len(scores), max_rows, seed)
    path = directory / REFERENCE_FILE
    with path.open("wb") as f:
        np.savez_compressed(
            f,
            names=np.asarray(names, dtype=np.str_),
            values=values[rows].astype(np.float32),
            scores=scores[rows].astype(np.float64),
        )
    return path


def read_reference(directory: Path) -> Reference | None:
    """The reference in a downloaded artifact; None when the version has none (registered
    before references were kept, or from outside without a holdout).

    Raises:
        ModelLoadError: the file is there but is not a reference.
    """
    path = directory / REFERENCE_FILE
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            names = tuple(str(n) for n in data["names"])
            values = np.asarray(data["values"], dtype=np.float32)
            scores = np.asarray(data["scores"], dtype=np.float64)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"unreadable {REFERENCE_FILE}: {exc}") from exc
    if values.shape != (len(scores), len(names)):
        raise ModelLoadError(f"{REFERENCE_FILE}: {values.shape} values for {len(scores)} scores")
    return Reference(names, values, scores)
