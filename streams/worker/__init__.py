"""The scoring worker: a thin shell of IO around the scoring core (``services.scoring``).

``loop`` takes batches and publishes their outputs; ``membership`` keeps the group and commits
what Kafka acknowledged; ``flow`` keeps the pauses (backpressure, a held input) in step with
the client's; ``holding`` is the worker's side of the dependency gate; ``outputs`` and
``feeds`` write predictions, dead letters, shadow scores, drift signals and the prediction store.
"""

from __future__ import annotations

from streams.worker.loop import ScoringWorker
from streams.worker.parts import DriftOutput, WorkerTopics
from streams.worker.summary import WorkerSummary, default_worker_id

__all__ = ["DriftOutput", "ScoringWorker", "WorkerSummary", "WorkerTopics", "default_worker_id"]
