"""Exactly-once output (``STREAMSCORE_WORKER__PROCESSING_GUARANTEE=exactly_once``): each batch's
predictions, dead letters and consumed offsets commit in one Kafka transaction.

A read_committed consumer of the outputs then sees every input's output once, whatever
crashes: a batch is either all visible with its offsets committed, or not at all and read again.
Shadow scores, drift signals and the feature log stay outside, on the best-effort producer:
they are observations whose loss or repetition changes no decision, and a topic of theirs that
cannot be written must not abort (and so replay for ever) the batch that serving depends on.

The transactional id is one per worker process, the same across its restarts. Since KIP-447
(Kafka 2.5) the broker fences a zombie by its consumer group generation, sent with the offsets
(``consumer_group_metadata``): a member whose partitions moved on cannot commit offsets for
them, so one id per partition is not needed. The id only has to be unique among running workers
and stable per instance, so that a restarted worker aborts what its predecessor left open at
once (``init_transactions``) instead of read_committed consumers waiting for the transaction
timeout.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import TimeoutError as Waited
from typing import Any, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from services.core import metrics
from services.core.errors import BrokerUnavailable, PublishError
from services.core.records import Inbound, handled_ends
from services.core.settings import Settings
from services.kafka.config import producer_config
from services.kafka.denied import not_authorized
from services.kafka.tracker import DeliveryTracker
from services.scoring.results import BatchResult
from streams.worker.callbacks import SizeCuts
from streams.worker.caller import Caller
from streams.worker.deliveries import check_deliveries
from streams.worker.flow import TP, Flow, PausingConsumer
from streams.worker.membership import Membership
from streams.worker.outputs import Outputs
from streams.worker.summary import default_worker_id
from streams.worker.txn_id import warn_if_unstable

logger = logging.getLogger("streams.worker")
TXN_TIMEOUT_SECONDS = 30.0  # one call (init, send offsets, commit, abort) waits at most this
# librdkafka can ignore that timeout (send_offsets_to_transaction waits for ever on a group
# coordinator it cached before a broker restart): past this, the worker stops instead of hanging.
HUNG_SECONDS = TXN_TIMEOUT_SECONDS + 15.0
COMMIT_ATTEMPTS = 3  # a retriable commit error is retried this often, then the batch aborts
MAX_ABORTS_IN_A_ROW = 5  # then the worker stops: the same batch cannot commit
_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


def exactly_once(settings: Settings) -> bool:
    return settings.worker.processing_guarantee == "exactly_once"


def transactional_id(settings: Settings, worker_id: str) -> str:
    """The worker's transactional.id: the setting, else ``<scoring_group>-<worker_id>``.

    >>> transactional_id(Settings(worker={"worker_id": "pod-3"}), "pod-3")
    'streamscore-scoring-pod-3'
    """
    w = settings.worker
    return w.transactional_id or f"{w.scoring_group}-{worker_id}"


def worker_producer(settings: Settings, worker_id: str) -> Producer:
    """The worker's producer of predictions and dead letters: idempotent; under exactly_once
    transactional too, its transactions initialised (which fences an older process with the
    same id and aborts what it left open).

    Raises:
        NotAuthorized: the principal may not use the transactional id (ACL).
        BrokerUnavailable: the transaction coordinator did not answer.
    """
    if not exactly_once(settings):
        return Producer(producer_config(settings))
    tid = transactional_id(settings, worker_id)
    producer = Producer(producer_config(settings, **{"transactional.id": tid}))
    try:
        producer.init_transactions(TXN_TIMEOUT_SECONDS)
    except KafkaException as exc:
        refused = not_authorized(settings, str(exc), "Write", tid)
        if refused is not None:
            raise refused from None
        raise BrokerUnavailable(f"cannot start transactions as {tid}: {exc.args[0]}") from exc
    logger.info("exactly-once: transactional id %s", tid)
    w = settings.worker
    warn_if_unstable(tid, worker_id_set=bool(w.worker_id), tid_set=bool(w.transactional_id))
    return producer


def transactions(
    settings: Settings,
    producer: Producer,
    tracker: DeliveryTracker,
    membership: Membership,
    flow: Flow,
    beat: Callable[[], None],
) -> Transactions | None:
    """The worker's transactions under exactly_once, else None."""
    if not exactly_once(settings):
        return None
    return Transactions(
        producer,
        tracker,
        consumer=lambda: membership.consumer,
        owned=membership.owned,
        rewind=flow.restart_from_commit,
        name=transactional_id(settings, settings.worker.worker_id or default_worker_id()),
        beat=beat,
    )


class TxnProducer(Protocol):
    """The part of confluent-kafka's ``Producer`` the transactions use (a fake in unit tests)."""

    def begin_transaction(self) -> None: ...

    def send_offsets_to_transaction(
        self, positions: list[TopicPartition], metadata: object, timeout: float = ...
    ) -> None: ...

    def commit_transaction(self, timeout: float = ...) -> None: ...

    def abort_transaction(self, timeout: float = ...) -> None: ...

    def poll(self, timeout: float = ...) -> int: ...


class GroupConsumer(PausingConsumer, Protocol):
    def consumer_group_metadata(self) -> object: ...


class Transactions:
    """One transaction per batch around the worker's outputs.

    Args:
        consumer: the worker's consumer now (it is replaced when it had to rejoin).
        owned: the partitions the worker owns now.
        rewind: puts partitions back to the group's committed offsets.
    """

    def __init__(
        self,
        producer: TxnProducer,
        tracker: DeliveryTracker,
        consumer: Callable[[], GroupConsumer],
        owned: Callable[[], set[TP]],
        rewind: Callable[[GroupConsumer, set[TP]], None],
        name: str = "",
        beat: Callable[[], None] = lambda: None,
    ) -> None:
        self.producer, self.tracker, self.name = producer, tracker, name
        self.consumer, self.owned, self.rewind, self.beat = consumer, owned, rewind, beat
        self.aborts_in_a_row = 0
        # The calls that wait on the broker run here, so that one librdkafka never returns
        # from is bounded (``HUNG_SECONDS``) and liveness beats meanwhile.
        self._calls = Caller()

    def publish(
        self,
        outputs: Outputs,
        inbound: Sequence[Inbound],
        result: BatchResult,
        signals: Sequence[dict[str, Any]],
        now_ms: int,
    ) -> bool:
        """The batch's outputs in one transaction with its offsets; False when aborted."""
        self.begin()
        outputs.publish(inbound, result, signals, now_ms)
        return self.commit(inbound, result, outputs.cuts)

    def begin(self) -> None:
        """Open the batch's transaction (before its first output is produced)."""
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            raise self._fatal(exc.args[0]) from None

    def commit(
        self, inbound: Sequence[Inbound], result: BatchResult, cuts: SizeCuts | None = None
    ) -> bool:
        """Send the batch's offsets into its transaction and commit it. Returns False when it
        was aborted (nothing of it is visible; its partitions are back at their commit).
        ``cuts``: dead letters the topic refused for their size in it (``SizeCuts``).

        Raises:
            PublishError: the producer was fenced or failed fatally, or the same batch was
                aborted ``MAX_ABORTS_IN_A_ROW`` times.
        """
        if self.tracker.errors:
            # An output refused on the spot (produce() raised: a revoked Write, a deleted
            # topic) never entered the transaction: committing it would move the offsets
            # past an event nobody scored. Abort, then stop on the refusal.
            try:
                self._retrying(self.producer.abort_transaction, "abort")
            except KafkaException as exc:
                raise self._fatal(exc.args[0]) from None
            metrics.COMMITS.labels(outcome="aborted").inc()
            check_deliveries(self.tracker)
        ends = handled_ends(inbound, result.deferred)
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(ends.items())]
        try:
            if offsets:
                metadata = self.consumer().consumer_group_metadata()
                self._retrying(
                    lambda t: self.producer.send_offsets_to_transaction(offsets, metadata, t),
                    "offsets",
                )
            self._retrying(self.producer.commit_transaction, "commit")
        except KafkaException as exc:
            err: KafkaError = exc.args[0]
            if err.fatal():
                raise self._fatal(err) from None
            self._abort(err, {(m.topic, m.partition) for m in inbound}, cuts)
            return False
        self.aborts_in_a_row = 0
        if cuts is not None:
            cuts.committed()
        metrics.COMMITS.labels(outcome="ok").inc()
        return True

    def _retrying(self, call: Callable[[float], None], what: str) -> None:
        """``call`` again on a retriable error (the coordinator moving, a broker restarting),
        ``COMMIT_ATTEMPTS`` times in all."""
        for attempt in range(COMMIT_ATTEMPTS):
            try:
                self._bounded(call, what)
                return
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if not err.retriable() or attempt == COMMIT_ATTEMPTS - 1:
                    raise
                logger.info("transaction %s retried: %s", what, err)

    def _bounded(self, call: Callable[[float], None], what: str) -> None:
        """``call(TXN_TIMEOUT_SECONDS)``, waited for at most ``HUNG_SECONDS``.

        Raises:
            PublishError: it did not return: the client is stuck, the worker stops (the
                restarted instance aborts the open transaction when it starts).
        """
        future = self._calls.submit(call, TXN_TIMEOUT_SECONDS)
        waited = 0.0
        while True:
            try:
                future.result(timeout=1.0)
                return
            except Waited:
                waited += 1.0
                self.beat()
                if waited >= HUNG_SECONDS:
                    raise PublishError(
                        f"the Kafka client did not return from the transaction's {what} in "
                        f"{waited:.0f} s (transactional id {self.name}): stopping; the worker "
                        "started again aborts the open batch, which is then read again",
                        stage="transaction",
                    ) from None

    def _abort(self, err: KafkaError, keys: set[TP], cuts: SizeCuts | None = None) -> None:
        """Abort the batch, and put its partitions back to their commit: it is read again."""
        metrics.COMMITS.labels(outcome="aborted").inc()
        self.producer.poll(0)  # failed deliveries are recorded first (the worker stops on them)
        if cuts is not None and cuts.pending:
            # A dead letter too large for its topic doomed the transaction: read again, the
            # batch writes it cut; its other outputs' reports (purged with it) are no failure.
            self.tracker.drop_errors(keys)
        self.tracker.forget(keys)  # the abort's purge reports are no failure of ours
        try:
            self._retrying(self.producer.abort_transaction, "abort")
        except KafkaException as exc:
            raise self._fatal(exc.args[0]) from None
        self.aborts_in_a_row += 1
        logger.warning(
            "transaction aborted (%s): the batch is read again from the commit", err.name()
        )
        if self.aborts_in_a_row >= MAX_ABORTS_IN_A_ROW:
            raise PublishError(
                f"{self.aborts_in_a_row} transactions aborted in a row, last: {err}",
                stage="transaction",
            )
        try:
            self.rewind(self.consumer(), keys & self.owned())
        except (KafkaException, BrokerUnavailable) as exc:  # the latter after its retries
            raise PublishError(
                f"an aborted batch's partitions could not be put back to their commit "
                f"({exc.args[0]}): stopping, nothing past the commit was committed",
                stage="transaction",
            ) from None

    def _fatal(self, err: KafkaError) -> PublishError:
        """The worker's one line (the CLI prints it): the batch in hand is never visible."""
        fenced = err.code() in _FENCED
        why = "fenced by a newer worker with" if fenced else f"{err} with"
        return PublishError(
            f"{why} transactional id {self.name}: this worker stops; its open batch is "
            "aborted (nothing of it is visible) and read again by the partitions' next owner",
            stage="transaction",
        )
