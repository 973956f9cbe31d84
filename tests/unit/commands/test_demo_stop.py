"""The demo stops its worker and control plane with SIGTERM, and with SIGKILL when one does not
stop in time: a worker that never started no longer leaves the control plane running."""

from __future__ import annotations

import subprocess
import sys

from streams.commands.demo import stack_outcome, stop

IGNORES_TERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
STOPS_ON_TERM = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *a: (print('{\"done\": 1}', flush=True), sys.exit(0)))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def _start(code: str, stdout: int) -> subprocess.Popen[bytes]:
    """Started, with its SIGTERM handler in place (it said ready on stdout, else stderr)."""
    if stdout != subprocess.PIPE:
        code = code.replace("print('ready', flush=True)", "print('ready', file=sys.stderr)")
    proc = subprocess.Popen(  # noqa: S603 (this interpreter)
        [sys.executable, "-c", code], stdout=stdout, stderr=subprocess.PIPE
    )
    said = proc.stdout if proc.stdout is not None else proc.stderr
    assert said is not None and said.readline() == b"ready\n"
    return proc


def test_a_process_that_stops_on_sigterm_hands_back_its_output() -> None:
    proc = _start(STOPS_ON_TERM, subprocess.PIPE)
    assert stop(proc, grace=30) == b'{"done": 1}\n'
    assert proc.returncode == 0


def test_one_that_ignores_sigterm_is_killed_after_the_grace() -> None:
    proc = _start(IGNORES_TERM, subprocess.PIPE)
    assert stop(proc, grace=0.5) == b""
    assert proc.returncode == -9
    quiet = _start(IGNORES_TERM, subprocess.DEVNULL)  # the control plane: stdout not piped
    assert stop(quiet, grace=0.5) == b""
    assert quiet.returncode == -9
    assert quiet.stderr is not None
    quiet.stderr.close()  # the demo's log reader owns it there


def test_a_demo_that_started_only_prometheus_does_not_say_it_stopped_the_stack() -> None:
    cluster = ["kafka-1", "kafka-2", "kafka-3", *(f"redis-{i}" for i in range(6))]
    left, line = stack_outcome(["prometheus"], [*cluster, "prometheus"], keep=False)
    assert left is True
    assert line == (
        "stopped prometheus, which the demo started; the stack it found running is left running"
    )
    assert stack_outcome(cluster, cluster, keep=False) == (False, "stack stopped again")
    assert stack_outcome([], cluster, keep=False)[0] is True
