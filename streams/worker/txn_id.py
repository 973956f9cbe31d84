"""Whether the worker's transactional id stays the same across its restarts (exactly_once).

A restarted worker with the same transactional id fences its predecessor's producer and aborts
what it left open as it starts (``init_transactions``). Under a new id nothing does: what a
killed worker left open is aborted by the broker only after the transaction timeout, and every
``read_committed`` reader of the partitions it wrote waits meanwhile. An id derived from
something that changes per process (the default ``<hostname>-<pid>``, a random id, the name of
a Deployment's pod) is therefore warned about once, at start.
"""

from __future__ import annotations

import logging
import re

logger = logging.getLogger("streams.worker")

# A uuid, or a long run of hex digits: random per process.
_RANDOM = re.compile(
    r"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}|[0-9a-f]{16,}"
)
# A Deployment's pod: <name>-<pod-template-hash>-<5 random characters>, in Kubernetes' alphabet
# (no vowels, no 0, 1 or 3); a new pod, so a new name, on every restart.
_K8S = "bcdfghjklmnpqrstvwxz2456789"
_DEPLOYMENT_POD = re.compile(rf"-[{_K8S}]{{6,10}}-[{_K8S}]{{5}}$")


def unstable(tid: str, *, worker_id_set: bool, tid_set: bool) -> str | None:
    """Why ``tid`` changes from one process to the next, or None when nothing says it does.

    Args:
        worker_id_set: ``worker.worker_id`` was given (else the default ``<hostname>-<pid>``).
        tid_set: ``worker.transactional_id`` was given.

    >>> unstable("streamscore-scoring-host-4242", worker_id_set=False, tid_set=False)
    'it ends in the default worker id <hostname>-<pid>, whose pid changes with every start'
    >>> unstable("streamscore-scoring-scoring-0", worker_id_set=True, tid_set=False) is None
    True
    >>> unstable("streamscore-scoring-worker-7d9f8b6c4b-x2k9q", worker_id_set=True, tid_set=False)
    "it ends in a Deployment pod's name, whose last part is random for every new pod"
    >>> unstable("eos-3f2a9c1e-77aa-4b1c-9d2e-0123456789ab", worker_id_set=True, tid_set=True)
    'it holds a random id'
    """
    if not tid_set and not worker_id_set:
        return (
            "it ends in the default worker id <hostname>-<pid>, whose pid changes with every start"
        )
    if _RANDOM.search(tid.lower()):
        return "it holds a random id"
    if _DEPLOYMENT_POD.search(tid):
        return "it ends in a Deployment pod's name, whose last part is random for every new pod"
    return None


def warn_if_unstable(tid: str, *, worker_id_set: bool, tid_set: bool) -> bool:
    """Log one WARNING when ``tid`` is not stable across restarts; returns whether it did."""
    why = unstable(tid, worker_id_set=worker_id_set, tid_set=tid_set)
    if why is None:
        return False
    logger.warning(
        "exactly-once: transactional id %s is not the same across restarts (%s): a restarted "
        "worker cannot fence its predecessor or abort what it left open, and read_committed "
        "readers wait for the transaction timeout; set STREAMSCORE_WORKER__WORKER_ID (or "
        "STREAMSCORE_WORKER__TRANSACTIONAL_ID) to a stable name per instance, such as a "
        "StatefulSet's pod name (docs/reliability.md, Exactly-once)",
        tid,
        why,
    )
    return True
