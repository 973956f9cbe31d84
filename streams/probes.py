"""One HTTP port per worker: ``/metrics`` (Prometheus), ``/healthz`` (alive), ``/readyz`` (can do
its job: broker and Redis reachable, model loaded).

Liveness is cheap and local (the worker loop turned recently), so an orchestrator restarts a
stuck worker but not one whose dependencies are down; readiness asks the dependencies, with a
short timeout and a cache, so probes cannot overload them.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

logger = logging.getLogger(__name__)

Check = Callable[[], str | None]  # None: fine; else what is wrong, one line
CHECK_SECONDS = 3.0  # a readiness check that takes longer is "not ready"


class Probes:
    """What the endpoints answer; pure apart from calling the checks."""

    def __init__(
        self,
        liveness: Check,
        readiness: dict[str, Check],
        cache_seconds: float = 2.0,
        check_seconds: float = CHECK_SECONDS,
    ) -> None:
        self.liveness = liveness
        self.readiness = readiness
        self.cache_seconds = cache_seconds
        self.check_seconds = check_seconds
        self._cached: tuple[float, int, bytes] | None = None
        self._lock = threading.Lock()
        # A thread per run of a check (daemon: a hung check never holds the process at exit);
        # a check that hangs holds its own thread, never the probe, and is not started again
        # until it answers.
        self._running: dict[str, _Answer] = {}

    def healthz(self) -> tuple[int, bytes]:
        problem = _run(self.liveness)
        body = {"status": "ok" if problem is None else "fail", "detail": problem}
        return (200 if problem is None else 503), json.dumps(body).encode()

    def readyz(self) -> tuple[int, bytes]:
        with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.cache_seconds:
                return self._cached[1], self._cached[2]
            checks = self._answers(now)
            ok = all(v is None for v in checks.values())
            body = {
                "status": "ready" if ok else "not ready",
                "checks": {k: v or "ok" for k, v in checks.items()},
            }
            self._cached = (now, 200 if ok else 503, json.dumps(body).encode())
            return self._cached[1], self._cached[2]

    def _answers(self, now: float) -> dict[str, str | None]:
        """Every check's answer, each waited for at most ``check_seconds`` in all."""
        for name, check in self.readiness.items():
            pending = self._running.get(name)
            if pending is None or pending.done.is_set():
                self._running[name] = _Answer.start(check, now)
        deadline = now + self.check_seconds
        out: dict[str, str | None] = {}
        for name, answer in self._running.items():
            if answer.done.wait(max(0.0, deadline - time.monotonic())):
                out[name] = answer.value
            else:
                out[name] = f"no answer for {time.monotonic() - answer.since:.0f} s"
        return out


class _Answer:
    """One run of a check on a thread of its own."""

    def __init__(self, since: float) -> None:
        self.since = since
        self.done = threading.Event()
        self.value: str | None = None

    @classmethod
    def start(cls, check: Check, now: float) -> _Answer:
        answer = cls(now)

        def run() -> None:
            answer.value = _run(check)
            answer.done.set()

        threading.Thread(target=run, name="probe-check", daemon=True).start()
        return answer


def _run(check: Check) -> str | None:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 (a failing check is an answer, not a crash)
        return f"{type(exc).__name__}: {exc}"


def serve(probes: Probes, host: str, port: int) -> ThreadingHTTPServer:
    """Start the endpoints on a daemon thread; returns the server (``server_address`` has the
    port actually bound, useful with port 0)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                code, body, ctype = 200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST
            elif path == "/healthz":
                code, body = probes.healthz()
                ctype = "application/json"
            elif path == "/readyz":
                code, body = probes.readyz()
                ctype = "application/json"
            else:
                code, body, ctype = 404, b'{"error": "not found"}', "application/json"
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib name)
            logger.debug("probe %s", format % args)

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="probes", daemon=True).start()
    return server
