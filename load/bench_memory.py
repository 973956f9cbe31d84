"""`streamscore load memory`: what imports cost in resident memory, and the worker's memory with
River's package import (as it ships) and with only the two detector modules it uses, in one run.

1. Imports, each in a fresh interpreter: the peak resident memory (``VmHWM``: ``ru_maxrss``
   carries the parent's peak across exec) after the statement, and which of the heavy
   libraries it brought along (pandas, scikit-learn, scipy, MLflow).
2. The scoring worker, ``--max-events 1`` on a private stack (the bench's: the feed domain,
   its features, a LightGBM model registered in MLflow, a fresh consumer group per run): its
   summary's ``max_rss_bytes`` and ``rss_bytes``, as it ships and with ``DETECTORS_ONLY`` run
   first. That prelude puts a bare ``river.drift`` package in ``sys.modules`` (its real folder,
   its ``__init__`` not run) holding River's own ``ADWIN`` and ``PageHinkley`` from their
   modules: ``services/drift/monitor.py``'s ``from river import drift`` then gets the same two
   classes without KSWIN's scipy.stats, the drift datasets and the rest. Detections are River's
   own by construction. Rounds interleaved.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable
from typing import Any

from load.bench import Env, _finish, add_topics, launch_worker
from load.bench import _worker_settings as worker_settings
from services.core.settings import Settings, to_env

DETECTORS_ONLY = (
    "import os, sys, types, river; "
    "_drift = types.ModuleType('river.drift'); "
    "_drift.__path__ = [os.path.join(os.path.dirname(river.__file__), 'drift')]; "
    "sys.modules['river.drift'] = river.drift = _drift; "
    "from river.drift.adwin import ADWIN; from river.drift.page_hinkley import PageHinkley; "
    "_drift.ADWIN, _drift.PageHinkley = ADWIN, PageHinkley"
)
HEAVY = ("pandas", "sklearn", "scipy", "scipy.stats", "mlflow", "lightgbm", "river.drift.kswin")
IMPORTS: dict[str, str] = {
    "python alone": "pass",
    "numpy": "import numpy",
    "River's __init__ only": "import river",
    "River's drift package, as services/drift/monitor.py imports it": "from river import drift",
    "River's two detector modules only": DETECTORS_ONLY,
    "lightgbm": "import lightgbm",
    "mlflow": "import mlflow",
    "the worker's command module, as it ships": "import streams.commands.worker",
    "the worker's command module, River's two detector modules only": (
        f"{DETECTORS_ONLY}; import streams.commands.worker"
    ),
}
_PROBE = """
import json, sys
{statement}
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
print(json.dumps({{"hwm": hwm(), "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""


def import_cost(statement: str) -> dict[str, Any]:
    """Peak RSS (bytes) of a fresh interpreter that ran ``statement``, and the heavy modules
    it loaded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    out = subprocess.run(  # noqa: S603 (our own interpreter)
        [sys.executable, "-c", _PROBE.format(statement=statement, heavy=HEAVY)],
        capture_output=True,
        check=True,
        env=env,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def imports(rounds: int, tick: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Per import, the median peak RSS (MB) over ``rounds`` interleaved rounds."""
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in IMPORTS}
    for rnd in range(rounds):
        for name, statement in IMPORTS.items():
            tick(f"imports, round {rnd + 1}/{rounds}: {name}")
            raw[name].append(import_cost(statement))
    return {
        name: {
            "statement": IMPORTS[name],
            "peak_rss_mb": round(statistics.median(r["hwm"] for r in runs) / 2**20, 1),
            "rounds_mb": [round(r["hwm"] / 2**20, 1) for r in runs],
            "brings": runs[0]["heavy"],
        }
        for name, runs in raw.items()
    }


def launch_worker_after(prelude: str, settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    """``launch_worker`` (``load/bench.py``), with ``prelude`` run in the worker's interpreter
    before the CLI starts (an import, or a configuration changed for a measure)."""
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    child_env |= to_env(settings)
    argv = ["streamscore", "--json", "--log-level", "WARNING", "worker", "scoring", *args]
    code = f"{prelude}\nimport runpy, sys\nsys.argv = {argv!r}\n" + (
        "runpy.run_module('streams.cli', run_name='__main__')"
    )
    return subprocess.Popen(  # noqa: S603 (our own CLI)
        [sys.executable, "-c", code],
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _worker_once(env: Env, prelude: str) -> dict[str, Any]:
    """One bounded worker run (one event scored) on the pre-filled input, in a fresh group;
    ``prelude`` runs in the worker's interpreter before the CLI."""
    env.counter += 1
    out = f"bench.mem-out-{env.counter}.v1"
    add_topics(env.settings, {out: "Prediction"})
    s = worker_settings(env, env.settings.topics.events, out, f"bench-mem-{uuid.uuid4().hex[:6]}")
    args = ("--max-events", "1", "--timeout", "60")
    proc = launch_worker_after(prelude, s, *args) if prelude else launch_worker(s, *args)
    (report,) = _finish([proc], 300)
    return report


WORKER_VARIANTS = {
    "as it ships (River's drift package)": "",
    "River's two detector modules only": DETECTORS_ONLY,
}


def worker_memory(env: Env, rounds: int, tick: Callable[[str], None]) -> dict[str, Any]:
    """The worker's peak and end RSS after one event, per variant, rounds interleaved."""
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in WORKER_VARIANTS}
    for rnd in range(rounds):
        for name, prelude in WORKER_VARIANTS.items():
            tick(f"worker, round {rnd + 1}/{rounds}: {name}")
            report = _worker_once(env, prelude)
            if report.get("predictions", 0) + report.get("dead_letters", 0) < 1:
                raise RuntimeError(f"the worker ({name}) scored nothing: {report}")
            raw[name].append(report)
    rows = {
        name: {
            "max_rss_mb": round(statistics.median(r["max_rss_bytes"] for r in runs) / 2**20, 1),
            "rss_mb": round(statistics.median(r["rss_bytes"] for r in runs) / 2**20, 1),
            "rounds_max_rss_mb": [round(r["max_rss_bytes"] / 2**20, 1) for r in runs],
        }
        for name, runs in raw.items()
    }
    ships, only = (rows[n]["max_rss_mb"] for n in WORKER_VARIANTS)
    pairs = [
        (a["max_rss_bytes"] - b["max_rss_bytes"]) / 2**20
        for a, b in zip(*raw.values(), strict=True)
    ]
    return {"rows": rows, "saved_mb_median_of_pairs": round(statistics.median(pairs), 1)} | {
        "saved_mb_of_medians": round(ships - only, 1)
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| import, fresh interpreter | peak RSS MB (median) | rounds | brings along |",
        "|---|---|---|---|",
    ]
    for name, row in result["imports"].items():
        rounds = ", ".join(f"{x:.1f}" for x in row["rounds_mb"])
        brings = ", ".join(row["brings"]) or "–"
        lines.append(f"| {name} | {row['peak_rss_mb']:.1f} | {rounds} | {brings} |")
    if "worker" in result:
        lines += [
            "",
            "| worker, `--max-events 1` | peak RSS MB | end RSS MB | peak per round |",
            "|---|---|---|---|",
        ]
        for name, row in result["worker"]["rows"].items():
            rounds = ", ".join(f"{x:.1f}" for x in row["rounds_max_rss_mb"])
            lines.append(f"| {name} | {row['max_rss_mb']:.1f} | {row['rss_mb']:.1f} | {rounds} |")
        lines.append("")
        lines.append(
            f"Saved by importing only the two detector modules (pair by pair within a round, "
            f"median): {result['worker']['saved_mb_median_of_pairs']} MB"
        )
    return "\n".join(lines) + "\n"
