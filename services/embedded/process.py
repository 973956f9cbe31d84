"""Start, find and stop the stack's subprocesses, remembering each in a JSON record under home."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from services.core.errors import EmbeddedStackError


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    """A subprocess we started: enough to find it again and to stop exactly it."""

    name: str  # component: "broker" or "redis"
    kind: str  # "kafka", "tansu" or "redis"
    pid: int
    argv: tuple[str, ...]
    address: str
    log_path: str
    started_at: float
    start_ticks: int  # kernel start time of the pid: tells our process from a reused pid

    def save(self, state_dir: Path) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        path = state_dir / f"{self.name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: Path, name: str) -> ProcessRecord | None:
        path = state_dir / f"{name}.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        try:
            data["argv"] = tuple(data["argv"])
            return cls(**data)
        except (KeyError, TypeError):  # written by another version: treat as not ours
            return None

    @staticmethod
    def forget(state_dir: Path, name: str) -> None:
        (state_dir / f"{name}.json").unlink(missing_ok=True)


# Children started by this process, kept so they are reaped (waited for) when stopped rather
# than left as zombies or garbage-collected while still running.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(argv: Sequence[str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` detached in its own session, output appended to ``log_path``.

    Its own session means the process outlives the CLI that started it, and that ``stop`` can
    signal its whole process group.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        try:
            proc = subprocess.Popen(  # noqa: S603 (argv is built by us, never from input)
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise EmbeddedStackError(f"cannot start {argv[0]}: {exc}") from exc
    _CHILDREN[proc.pid] = proc
    return proc


def start_ticks(pid: int) -> int | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None when it is gone.

    Process titles cannot identify a process (redis-server rewrites its own), but the start time
    cannot change and differs for a process that later reuses the pid.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, waiting to be reaped
        return None
    return int(fields[19])  # field 22 of stat; fields[0] is field 3


def is_running(record: ProcessRecord) -> bool:
    """True when ``record.pid`` is alive and is the very process we started."""
    return start_ticks(record.pid) == record.start_ticks


def _reap(pid: int, wait: float = 0.0) -> None:
    """Collect the exit status of ``pid`` if it is our child (so no zombie or warning remains)."""
    child = _CHILDREN.get(pid)
    if child is not None:
        try:
            child.wait(timeout=wait) if wait else child.poll()
        except subprocess.TimeoutExpired:
            return
        if child.returncode is not None:
            del _CHILDREN[pid]
        return
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass  # not our child: init reaps it


def stop(record: ProcessRecord, timeout: float = 20.0) -> bool:
    """Stop the process group of ``record`` (SIGTERM, then SIGKILL after ``timeout``).

    Returns:
        True when something was stopped, False when it was not running.
    """
    return bool(stop_all([record], timeout))


def _signal(record: ProcessRecord, sig: signal.Signals) -> None:
    try:
        os.killpg(record.pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(record.pid, sig)


def stop_all(records: Sequence[ProcessRecord], timeout: float = 20.0) -> list[ProcessRecord]:
    """Stop several process groups at once: SIGTERM to all, then SIGKILL to those still running
    after ``timeout``. Returns those that were running.

    Together, not one after another: the nodes of a cluster each wait for the others while they
    shut down (a KRaft node that outlives its quorum waits until it is killed), so stopping them
    in turn costs the sum of those waits.
    """
    running = []
    for record in records:
        if is_running(record):
            running.append(record)
        else:
            _reap(record.pid)
    left = list(running)
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for record in left:
            _signal(record, sig)
        deadline = time.monotonic() + wait
        while left and time.monotonic() < deadline:
            for record in left:
                _reap(record.pid)
            left = [r for r in left if is_running(r)]
            if left:
                time.sleep(0.05)
        if not left:
            break
    for record in running:
        _reap(record.pid, wait=5.0)  # it may have exited between the two checks
    stuck = [r for r in running if is_running(r)]
    if stuck:
        raise EmbeddedStackError(
            ", ".join(f"{r.kind} (pid {r.pid})" for r in stuck) + " did not stop"
        )
    return running


def tail(path: Path, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])
