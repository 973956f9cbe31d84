"""Seeded random schedules of faults for the explorer: what happens, and when.

A schedule is a list of ``Op`` sorted by time; the same seed gives the same schedule, so a
failing seed reproduces with ``--explore-seed``. Operations come in pairs where a fault has an
end (a frozen worker is thawed, a paused Redis continues, a stopped broker starts again).

>>> a, b = make_schedule(7, 60.0), make_schedule(7, 60.0)
>>> a == b and len(a) > 3 and all(x.at <= y.at for x, y in zip(a, a[1:]))
True
>>> kinds = {op.kind for op in make_schedule(3, 900.0)}
>>> kinds >= {"join", "kill", "freeze", "thaw", "promote", "canary", "rollback", "redis_slow"}
True
"""

from __future__ import annotations

import random
from dataclasses import dataclass

# kind -> weight. Ends of faults ("thaw", "redis_continue", "redis_start", "broker_start")
# are scheduled by the faults themselves.
WEIGHTS = {
    "join": 4,
    "leave": 2,  # SIGTERM: a graceful leave
    "kill": 2,  # SIGKILL: a crash
    "freeze": 2,  # SIGSTOP for longer than the session timeout: a zombie (long GC, VM pause)
    "redis_pause": 2,  # SIGSTOP of redis-server: every call times out
    "redis_restart": 1,  # redis-server stopped, then started on its saved data
    "broker_restart": 1,  # the broker stopped, then started with its data
    "burst": 2,  # a producer over its rate limit (backpressure) for a while
    "hostile": 2,  # garbage, an oversized key, a huge header
    "redis_slow": 1,  # Redis answers late: clients paused for 40 ms of every 80, for a while
    "promote": 1,  # the other version becomes champion (workers follow the alias)
    "canary": 1,  # the other version serves a share of the entities
    "rollback": 1,  # back to the previous champion (refused when there is none: fine)
}


@dataclass(frozen=True, slots=True)
class Op:
    """One operation at ``at`` seconds into the schedule; ``arg`` picks a worker, or says how
    long a fault lasts."""

    at: float
    kind: str
    arg: float = 0.0

    def __str__(self) -> str:
        return f"{self.at:6.1f}s {self.kind}({self.arg:g})"


def make_schedule(seed: int, seconds: float, session_timeout: float = 6.0) -> list[Op]:
    """Operations over ``seconds``: one every 2-6 s on average, the first a join (the stream
    needs a worker), each fault's end scheduled with it; nothing starts in the last fifth, so
    the system has time to settle before the checks."""
    rng = random.Random(seed)  # noqa: S311 (a test schedule, reproducible by seed)
    ops = [Op(0.0, "join")]
    kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
    t = rng.uniform(1.0, 3.0)
    quiet = seconds * 0.8
    while t < quiet:
        kind = rng.choices(kinds, weights)[0]
        if kind == "freeze":
            lasts = session_timeout + rng.uniform(1.0, 6.0)
            ops += [Op(t, "freeze", rng.random()), Op(t + lasts, "thaw")]
        elif kind == "redis_pause":
            ops += [Op(t, "redis_pause"), Op(t + rng.uniform(1.0, 8.0), "redis_continue")]
        elif kind == "redis_restart":
            ops += [Op(t, "redis_stop"), Op(t + rng.uniform(0.5, 4.0), "redis_start")]
        elif kind == "broker_restart":
            ops += [Op(t, "broker_stop"), Op(t + rng.uniform(2.0, 6.0), "broker_start")]
        elif kind in ("burst", "redis_slow"):
            ops.append(Op(t, kind, rng.uniform(2.0, 6.0)))
        else:
            ops.append(Op(t, kind, rng.random()))
        t += rng.uniform(2.0, 6.0)
    return sorted(ops, key=lambda op: op.at)
