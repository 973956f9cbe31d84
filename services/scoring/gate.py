"""The dependency gate: a batch's result once Redis and the schema registry answer.

One decision, shared by the worker, the HTTP/file scorer and replay: a dependency that does not
answer is transient, so the batch is retried with backoff (``retries`` quick tries); then, for
Redis under the ``degrade`` policy, it is scored with the declared defaults and flagged
degraded (``feature_store_down``); otherwise the shell *holds*: the worker pauses its input and
retries until the dependency answers, replay waits, the HTTP scorer gives up with the error (the
client gets 503 and retries). What a shell does while waiting is its own (``GateShell``); what
is decided is here, and a unit test drives it with a fake shell.

While degrading, one failed try is enough: no batch waits for retries until Redis answers again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from services.core import metrics
from services.core.errors import FeatureStoreUnavailable, SchemaRegistryUnavailable
from services.core.records import Inbound
from services.ratelimit.bucket import ChargeOnce, Limiter
from services.scoring.pipeline import Start, process_batch, run_now
from services.scoring.results import BatchResult
from services.scoring.stages import Stages, defaults_only

logger = logging.getLogger(__name__)
FEATURE_RETRIES = 5
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 5.0
# The fallback reason of a batch scored with defaults because Redis did not answer.
FEATURE_STORE_DOWN = "feature_store_down"
WARN_EVERY_SECONDS = 10.0


class GateShell(Protocol):
    """What the shell around the gate does while a dependency does not answer."""

    def wait(self, seconds: float) -> None:
        """A bounded wait between tries (the worker keeps polling its consumer meanwhile)."""

    def hold(self, dependency: str, error: Exception) -> None:
        """The dependency stays down after the quick retries: hold the input (the worker
        pauses every partition), or raise ``error`` to give up (the HTTP scorer)."""

    def release(self) -> None:
        """The held input goes on (the worker resumes what it paused for the hold)."""

    def abandoned(self) -> bool:
        """True when the batch must be dropped unfinished (stopping, partitions revoked)."""


def flag_degraded(result: BatchResult, reason: str) -> BatchResult:
    """Every prediction of ``result`` marked degraded, and counted under ``reason``."""
    served = result.served
    if served is None:
        return result
    fallbacks = dict(result.fallbacks)
    fallbacks[reason] = fallbacks.get(reason, 0) + len(served)
    return replace(
        result,
        served=replace(served, degraded=[True] * len(served)),
        degraded=True,
        fallbacks=fallbacks,
    )


class DependencyGate:
    """Runs ``process_batch`` through dependency outages; keeps whether it is degrading or
    holding between batches (one gate per shell instance)."""

    def __init__(
        self, policy: Literal["pause", "degrade"] | str, *, retries: int = FEATURE_RETRIES
    ) -> None:
        self.policy = policy
        self.retries = max(1, retries)
        self.degrading = False  # Redis down under ``degrade``: batches score with defaults
        self.holding = False  # the shell holds its input until the dependency answers
        self._warned_at = -WARN_EVERY_SECONDS

    def _should_warn(self, attempt: int) -> bool:
        """One warning per outage rhythm, not one per request or batch: a batch's first
        failure, at most every ``WARN_EVERY_SECONDS``, and every 20th retry of a held one."""
        now = time.monotonic()
        if attempt % 20 == 0 or (attempt == 1 and now - self._warned_at >= WARN_EVERY_SECONDS):
            self._warned_at = now
            return True
        return False

    def run(
        self,
        stages: Stages,
        messages: Sequence[Inbound],
        clock_ms: Callable[[], int],
        shell: GateShell,
        *,
        limiter: Limiter | None = None,
        backpressure: bool = False,
        start: Start = run_now,
        validate_at: Callable[[Sequence[Inbound]], npt.NDArray[np.int64]] | None = None,
    ) -> BatchResult | None:
        """The batch's result; None when the shell abandoned it while waiting (nothing of it
        may be committed: it is read again).

        Raises:
            FeatureStoreUnavailable | SchemaRegistryUnavailable: the shell gave up in ``hold``.
        """
        delay = FIRST_BACKOFF_SECONDS
        # Tokens are charged (and refunded) once per batch, however often it is retried.
        once = ChargeOnce(limiter) if limiter is not None else None
        degraded = held = False
        attempt = 0
        try:
            while True:
                attempt += 1
                try:
                    result = process_batch(
                        stages,
                        messages,
                        clock_ms(),
                        limiter=once,
                        backpressure=backpressure,
                        start=start,
                        validate_at=validate_at,
                    )
                    break
                except (FeatureStoreUnavailable, SchemaRegistryUnavailable) as exc:
                    redis_down = isinstance(exc, FeatureStoreUnavailable)
                    dependency = "redis" if redis_down else "schema_registry"
                    metrics.DEPENDENCY_FAILURES.labels(dependency=dependency).inc()
                    if redis_down:
                        metrics.FEATURE_LOOKUPS.labels(outcome="error").inc()
                    if self._should_warn(attempt):
                        logger.warning("%s unavailable (attempt %d): %s", dependency, attempt, exc)
                    quick = 1 if redis_down and self.degrading else self.retries
                    if attempt < quick:
                        shell.wait(delay)
                        delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                        continue
                    if redis_down and self.policy == "degrade":
                        if not self.degrading:
                            logger.warning("redis unavailable: scoring with declared defaults")
                        self.degrading = degraded = True
                        stages = stages.with_lookup(defaults_only(stages.spec))
                        once = None  # the limiter's tokens live in the same Redis
                        continue
                    if not self.holding:
                        self.holding = True  # released in ``finally``, whatever ``hold`` does
                        shell.hold(dependency, exc)
                        held = True
                        metrics.INPUT_HELD.set(1)
                        logger.warning(
                            "%s unavailable: input held, retrying (backoff up to %.0f s)",
                            dependency,
                            MAX_BACKOFF_SECONDS,
                        )
                    shell.wait(delay)
                    delay = min(delay * 2, MAX_BACKOFF_SECONDS)
                    if shell.abandoned():
                        return None
        finally:
            if self.holding:
                self.holding = False
                shell.release()
                if held:
                    metrics.INPUT_HELD.set(0)
                    logger.info("input resumed")
        if shell.abandoned():
            return None
        if degraded:
            return flag_degraded(result, FEATURE_STORE_DOWN)
        if self.degrading:
            self.degrading = False
            logger.info("redis answers again: scoring with stored features")
        return result
