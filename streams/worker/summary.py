"""What a bounded worker run did (``WorkerSummary``), and the worker's default id."""

from __future__ import annotations

import os
import socket
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from services.scoring.results import BatchResult


@dataclass
class WorkerSummary:
    """What a bounded run did; the same numbers are in the Prometheus counters."""

    consumed: int = 0
    predictions: int = 0
    dead_letters: int = 0
    batches: int = 0
    degraded_batches: int = 0
    swaps: int = 0  # serving-set changes applied between batches
    shadow_predictions: int = 0
    deferred: int = 0  # backpressure: messages re-read later (not yet counted as consumed)
    commits: int = 0
    commit_failures: int = 0
    rebalances: int = 0
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    elapsed_seconds: float = 0.0
    # Wall-clock window of the work itself (benchmarks): the first message taken, and the last
    # acknowledgement of an output; CPU seconds of this process since the first message.
    first_message_at: float | None = None
    last_acked_at: float | None = None
    busy_cpu_seconds: float = 0.0

    def add(self, taken: int, result: BatchResult, *, shadow_published: bool) -> None:
        """Count one handled batch of ``taken`` messages (its deferred ones are not consumed
        yet: they are read again)."""
        self.deferred += len(result.deferred)
        self.consumed += taken - len(result.deferred)
        self.predictions += result.n_predictions
        self.dead_letters += len(result.dead_letters)
        if result.shadowed is not None and shadow_published:
            self.shadow_predictions += len(result.shadowed)
        self.batches += 1
        self.degraded_batches += int(result.degraded)
        if result.dead_letters:
            self.rejected_by_reason.update(d.rejected.reason.value for d in result.dead_letters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "predictions": self.predictions,
            "dead_letters": self.dead_letters,
            "batches": self.batches,
            "degraded_batches": self.degraded_batches,
            "swaps": self.swaps,
            "shadow_predictions": self.shadow_predictions,
            "deferred": self.deferred,
            "commits": self.commits,
            "commit_failures": self.commit_failures,
            "rebalances": self.rebalances,
            "rejected_by_reason": dict(self.rejected_by_reason),
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "first_message_at": self.first_message_at,
            "last_acked_at": self.last_acked_at,
            "busy_cpu_seconds": round(self.busy_cpu_seconds, 3),
            "max_rss_bytes": _proc_status_bytes("VmHWM:"),
            "rss_bytes": _proc_status_bytes("VmRSS:"),
        }


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


def _proc_status_bytes(field: str) -> int:
    """This process's resident memory now (``VmRSS:``) or at its peak (``VmHWM:``; not
    ``ru_maxrss``, which carries the parent's peak across exec); 0 where /proc is not there."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith(field):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
