"""The worker's answer to Redis refusing its user (``RedisRefused``: WRONGPASS or NOPERM).

A refusal is not an outage, so the dependency gate's policy does not apply: degrading would
score with defaults and commit, for as long as nobody notices, and pausing would wait for ever.
Instead the input is held (every partition paused, as for an outage; nothing is committed
past the batch in hand), readiness fails at once (``redis`` check), the batch is tried again
every ``RETRY_SECONDS``, and a refusal that lasts ``redis.auth_failure_seconds`` (time for a
password rotation to finish) stops the worker with its one line (exit 2). A try that answers
ends the hold and the refusal.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from services.core import metrics
from services.core.errors import RedisRefused
from services.redisconn.refusal import WATCH, RefusalWatch
from services.scoring.results import BatchResult
from streams.worker.holding import HeldInput

logger = logging.getLogger("streams.worker")
RETRY_SECONDS = 1.0
SCORE = "score"  # the watch's caller: a batch's rate limits and features


class Refusals:
    """Runs a batch through Redis refusals; one per worker.

    Args:
        seconds: ``redis.auth_failure_seconds``.
        watch: the process's watch (a test's own).
    """

    def __init__(self, seconds: float, watch: RefusalWatch = WATCH) -> None:
        self.seconds = seconds
        self.watch = watch

    def raise_if_refused(self) -> None:
        """Raise the stop once any refusal (the prediction store's too) has lasted
        ``seconds``.

        Raises:
            RedisRefused: with its line and how long it lasted.
        """
        stop = self.watch.verdict(self.seconds)
        if stop is not None:
            raise stop

    def score(self, run: Callable[[], BatchResult | None], shell: HeldInput) -> BatchResult | None:
        """``run()`` (the gate), tried again while Redis refuses; None when the shell
        abandoned the batch meanwhile (a revoke, a stop).

        Raises:
            RedisRefused: the refusal lasted ``seconds`` (a refusal of the prediction store's
                too, seen after the batch: a batch that answers ends its own refusal first).
        """
        held = False
        try:
            while True:
                try:
                    result = run()
                except RedisRefused as exc:
                    self.watch.failed(SCORE, exc)
                    if not held:
                        held = True
                        shell.hold("redis", exc)
                        metrics.INPUT_HELD.set(1)
                        logger.warning(
                            "%s: input held; the worker stops in %.0f s unless Redis takes it",
                            exc,
                            self.seconds,
                        )
                    self.raise_if_refused()
                    shell.wait(RETRY_SECONDS)
                    if shell.abandoned():
                        return None
                    continue
                self.watch.answered(SCORE)
                self.raise_if_refused()
                return result
        finally:
            if held:
                shell.release()
                metrics.INPUT_HELD.set(0)
                logger.info("redis takes the worker's user again: input resumed")
