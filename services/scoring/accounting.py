"""One accounting step for a scored batch, the same whichever shell scored it (worker, HTTP or
file scorer, replay): predictions per version and variant, refusals per stage and reason,
feature lookups, fallbacks, and the champion/shadow agreement.

What is specific to a way out stays in its shell: messages produced per topic and the
event-to-prediction latency are counted by the worker when Kafka acknowledges them.
"""

from __future__ import annotations

from collections import Counter

from services.core import metrics
from services.scoring.gate import FEATURE_STORE_DOWN
from services.scoring.results import BatchResult


def account(result: BatchResult, *, shadow_published: bool = True) -> None:
    """Count ``result`` in the shared metrics (per batch: a handful of label updates).

    Args:
        result: the batch, as the dependency gate returned it.
        shadow_published: the shadow scores go somewhere (a shadow topic); when not, they are
            neither counted as predictions nor compared.
    """
    served = result.served
    if served is not None:
        pairs = Counter(zip(served.versions, served.variants, strict=True))
        for (version, variant), n in pairs.items():
            metrics.PREDICTIONS.labels(model_version=version, variant=variant).inc(n)
        if FEATURE_STORE_DOWN not in result.fallbacks:
            metrics.FEATURE_LOOKUPS.labels(outcome="batch_ok").inc()
    shadow = result.shadowed
    if shadow is not None and shadow_published and len(shadow):
        metrics.PREDICTIONS.labels(model_version=shadow.versions[0], variant="shadow").inc(
            len(shadow)
        )
    if result.dead_letters:
        rejected = Counter(
            (d.rejected.stage.value, d.rejected.reason.value) for d in result.dead_letters
        )
        for (stage, reason), n in rejected.items():
            metrics.MESSAGES_REJECTED.labels(stage=stage, reason=reason).inc(n)
    for group, n in result.missing.items():
        metrics.FEATURE_LOOKUPS.labels(outcome=f"missing_{group}").inc(n)
    for reason, n in result.fallbacks.items():
        metrics.FALLBACKS.labels(reason=reason).inc(n)
    agreement = result.agreement
    if agreement is not None and agreement.n and shadow_published:
        metrics.SHADOW_COMPARED.inc(agreement.n)
        metrics.SHADOW_ABS_DIFF.inc(agreement.mean_abs_diff * agreement.n)
        metrics.SHADOW_DECISION_FLIPS.inc(agreement.decision_flips)
        if agreement.rank_correlation == agreement.rank_correlation:  # not NaN
            metrics.SHADOW_RANK_CORRELATION.set(agreement.rank_correlation)
