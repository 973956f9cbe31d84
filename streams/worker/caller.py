"""One daemon thread that runs the transaction's blocking calls in turn (``Caller``), so that the
worker can bound a call librdkafka never returns from and beat its liveness meanwhile."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future


class Caller:
    """One daemon thread running calls in turn. Not a ``ThreadPoolExecutor``: the interpreter
    joins those at exit, so a call that never returns would keep a stopped worker alive."""

    def __init__(self) -> None:
        self._todo: queue.SimpleQueue[tuple[Callable[[], None], Future[None]]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="kafka-txn", daemon=True).start()

    def _run(self) -> None:
        while True:
            call, future = self._todo.get()
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 (handed to the caller, who raises it)
                future.set_exception(exc)
            else:
                future.set_result(None)

    def submit(self, call: Callable[[float], None], timeout: float) -> Future[None]:
        future: Future[None] = Future()
        self._todo.put((lambda: call(timeout), future))
        return future
