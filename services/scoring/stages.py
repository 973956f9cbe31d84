"""The stages a batch is scored with, frozen together: codec, rules, feature spec, feature
lookup, serving set and decision threshold.

One builder makes them (``streams.adapters.build_stages``); the worker, the HTTP/file scorer
and replay hand the same object to ``process_batch``. A model swap or a degraded lookup makes a
new ``Stages`` (``with_serving``, ``with_lookup``); nothing inside one is ever mutated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from services.codec.avro import AvroCodec
from services.features.spec import FeatureSpec
from services.features.store import Lookup, defaults_matrix
from services.scoring.model import LoadedModel
from services.scoring.serving import Serving
from services.validation.rules import RecordRules

FeatureLookup = Callable[[dict[str, Sequence[str]]], Mapping[str, Lookup]]


@dataclass(frozen=True, slots=True)
class Stages:
    """Everything ``process_batch`` needs besides the messages and the time."""

    codec: AvroCodec
    rules: RecordRules
    spec: FeatureSpec
    lookup: FeatureLookup  # the feature store's ``get_many``: group -> keys -> found rows
    serving: Serving
    threshold: float = 0.5  # the decision threshold (binary tasks; flips and canary checks)
    decide: bool = False  # the domain declares the threshold: predictions carry `decision`

    @classmethod
    def of(
        cls,
        codec: AvroCodec,
        rules: RecordRules,
        spec: FeatureSpec,
        lookup: FeatureLookup,
        model: Serving | LoadedModel,
        threshold: float = 0.5,
        decide: bool = False,
    ) -> Stages:
        """``Stages`` from a serving set or a single model (served alone)."""
        serving = model if isinstance(model, Serving) else Serving(model)
        return cls(codec, rules, spec, lookup, serving, threshold, decide)

    def with_serving(self, serving: Serving) -> Stages:
        """The same stages serving another set (a hot swap between batches)."""
        return replace(self, serving=serving)

    def with_lookup(self, lookup: FeatureLookup) -> Stages:
        """The same stages with another feature lookup (the degraded defaults)."""
        return replace(self, lookup=lookup)


def defaults_only(spec: FeatureSpec) -> FeatureLookup:
    """A lookup that answers every key with its group's declared defaults, found nowhere: what
    a batch is scored with when Redis is down and the policy is ``degrade``.

    >>> from services.features.spec import FeatureDef, GroupSpec
    >>> user = GroupSpec("user", "who", (FeatureDef("a", 0.5, 0, 1),))
    >>> found = defaults_only(FeatureSpec("1", (user,)))({"user": ["u1", "u2"]})["user"]
    >>> found.values.tolist(), found.found.tolist()
    ([[0.5], [0.5]], [False, False])
    """

    def lookup(requests: dict[str, Sequence[str]]) -> dict[str, Lookup]:
        return {
            g.name: Lookup(
                defaults_matrix(g, len(requests.get(g.name, ()))),
                np.zeros(len(requests.get(g.name, ())), dtype=bool),
            )
            for g in spec.groups
            if g.name in requests
        }

    return lookup
