"""Training history for a synthetic world: events spread over the whole day before a given time.

A world's truth may depend on the hour of day (the delivery world's rush hours, the feed's daily
cycle). History drawn from a few seconds of one hour trains a model that never saw the other
hours, and its quality on a stream then depends on when the test runs. History from
``history_world`` covers every hour of the day, whatever the clock says.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from services.features.spec import FeatureSpec
from services.features.store import InMemoryFeatureStore, Lookup

DAY_MS = 86_400_000


def history_world(
    make: Callable[..., Any],
    spec: FeatureSpec,
    now_ms: int,
    n: int,
    start_index: int,
    **kw: Any,
) -> Any:
    """The world ``make`` builds (a generator's ``make``), with its clock set so that the ``n``
    events from ``start_index`` are spread evenly over the 24 hours before ``now_ms``.

    Same seed and entities (``kw``), same features and event ids as the stream's world: only
    the event times differ.

    >>> from types import SimpleNamespace
    >>> w = history_world(lambda spec, **kw: SimpleNamespace(**kw), None, DAY_MS, 24, 1000)
    >>> w.rate_per_second * 3600, w.start_time_ms + int(1000 * 1000 / w.rate_per_second)
    (1.0, 0)
    """
    rate = n / (DAY_MS / 1000)  # events per second
    start = now_ms - DAY_MS - int(start_index * 1000 / rate)
    return make(spec, rate_per_second=rate, start_time_ms=start, **kw)


def training_history(
    make: Callable[..., Any],
    spec: FeatureSpec,
    now_ms: int,
    n: int,
    start_index: int,
    **kw: Any,
) -> list[dict[str, Any]]:
    """The ``n`` events of ``history_world`` (generator fields included: labels need them)."""
    events: list[dict[str, Any]] = history_world(make, spec, now_ms, n, start_index, **kw).events(
        n, start_index=start_index
    )
    return events


class WorldFeatures:
    """A synthetic world's entity features as a feature source: the rows ``features load``
    puts in Redis, which the world never changes, so they are the rows as of any time."""

    kind = "synthetic_world"

    def __init__(self, world: Any, spec: FeatureSpec) -> None:
        self._store = InMemoryFeatureStore(spec)
        for g in spec.groups:
            self._store.put_many(g.name, *world.features(g.name))

    def as_of(
        self, requests: dict[str, Sequence[str]], times: npt.NDArray[np.int64]
    ) -> dict[str, Lookup]:
        return self._store.get_many(requests)
