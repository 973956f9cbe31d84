"""`streamscore load file`: rows/s of `streamscore score-file` against a plain pandas +
LightGBM script (``load/pandas_score.py``) scoring the same CSV with the same model and the same
Redis features, rounds interleaved, on a private stack.

Each side runs in its own process. Two figures per run: rows/s over the scoring itself (after
the model is loaded: `score-file`'s own ``rows_per_second``, and the script's, counted the same
way), and the wall time of the whole command (interpreter, imports, model load included). The
scores of the two are compared event by event after the first round.
"""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load.bench import Env
from services.core.settings import to_env
from services.synthetic.world import World, strip_private
from streams.adapters import feature_spec


def write_events(env: Env, rows: int, path: Path) -> None:
    """``rows`` events of the synthetic world (features in the stack's Redis) as CSV."""
    first = 80_000_000
    world = World(
        feature_spec(env.settings), start_time_ms=int(time.time() * 1000) - first - rows - 4_000
    )
    events = [strip_private(e) for e in world.events(rows, start_index=first)]
    names = list(dict.fromkeys(k for e in events[:100] for k in e))
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        for e in events:
            writer.writerow(
                {
                    k: ("" if v is None else str(v).lower() if isinstance(v, bool) else v)
                    for k, v in e.items()
                }
            )


def _run(argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    out = subprocess.run(argv, capture_output=True, env=env, check=False)  # noqa: S603
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{argv[2:4]} exited {out.returncode}: {out.stderr.decode()[-2000:]}")
    text = out.stdout.decode()
    return json.loads(text[text.find("{") :]), wall


def score_file_once(env: Env, source: Path, out: Path) -> dict[str, Any]:
    child = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    child |= to_env(env.settings) | {"STREAMSCORE_LOG__LEVEL": "WARNING"}
    argv = [sys.executable, "-m", "streams.cli", "--json", "score-file", str(source)]
    report, wall = _run([*argv, "--out", str(out)], child)
    return {
        "rows": report["predictions"] + report["refused"],
        "refused": report["refused"],
        "rows_per_second": report["rows_per_second"],
        "wall_seconds": round(wall, 2),
    }


def pandas_once(env: Env, source: Path, out: Path) -> dict[str, Any]:
    cfg = {
        "source": str(source),
        "out": str(out),
        "redis_url": env.peer["redis_url"],
        "key_prefix": env.peer["key_prefix"],
        "spec_file": env.peer["spec_file"],
        "model_file": env.peer["model_file"],
        "model_version": env.peer["model_version"],
    }
    path = out.with_suffix(".json")
    path.write_text(json.dumps(cfg), encoding="utf-8")
    child = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    report, wall = _run([sys.executable, "-m", "load.pandas_score", str(path)], child)
    return {
        "rows": report["rows"],
        "refused": 0,
        "rows_per_second": report["rows_per_second"],
        "wall_seconds": round(wall, 2),
        "max_rss_mb": round(report["max_rss_bytes"] / 2**20, 1),
    }


def score_diff(a: Path, b: Path) -> tuple[int, float]:
    """Events in both outputs, and the largest |score difference| between them."""
    with a.open(encoding="utf-8") as f:
        first = {r["event_id"]: float(r["score"]) for r in csv.DictReader(f)}
    worst, both = 0.0, 0
    with b.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["event_id"] in first:
                both += 1
                worst = max(worst, abs(first[r["event_id"]] - float(r["score"])))
    return both, worst


SIDES: dict[str, Callable[[Env, Path, Path], dict[str, Any]]] = {
    "streamscore score-file": score_file_once,
    "pandas + LightGBM script": pandas_once,
}


def run(env: Env, rows: int, rounds: int, tick: Callable[[str], None]) -> dict[str, Any]:
    source = env.workdir / "events.csv"
    write_events(env, rows, source)
    raw: dict[str, list[dict[str, Any]]] = {name: [] for name in SIDES}
    outs: dict[str, Path] = {}
    for rnd in range(rounds):
        for name, side in SIDES.items():
            tick(f"round {rnd + 1}/{rounds}: {name}")
            outs[name] = env.workdir / f"scored-{list(SIDES).index(name)}-{rnd}.csv"
            raw[name].append(side(env, source, outs[name]))
    both, worst = score_diff(*outs.values())
    ratios = [
        a["rows_per_second"] / b["rows_per_second"] for a, b in zip(*raw.values(), strict=True)
    ]
    walls = [b["wall_seconds"] / a["wall_seconds"] for a, b in zip(*raw.values(), strict=True)]
    return {
        "rows": rows,
        "rounds": rounds,
        "rows_table": {
            name: {
                "rows_per_second": statistics.median(r["rows_per_second"] for r in runs),
                "wall_seconds": statistics.median(r["wall_seconds"] for r in runs),
                "per_round": [(r["rows_per_second"], r["wall_seconds"]) for r in runs],
                "refused": runs[0]["refused"],
            }
            for name, runs in raw.items()
        },
        "score_file_vs_pandas_rows_per_second": round(statistics.median(ratios), 2),
        "pandas_vs_score_file_wall": round(statistics.median(walls), 2),
        "events_compared": both,
        "max_score_diff": worst,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| scorer | rows/s (scoring, median) | wall s (whole command, median) | per round "
        "(rows/s; wall s) |",
        "|---|---|---|---|",
    ]
    for name, row in result["rows_table"].items():
        rounds = ", ".join(f"{r:,.0f}; {w:.1f}" for r, w in row["per_round"])
        lines.append(
            f"| {name} | {row['rows_per_second']:,.0f} | {row['wall_seconds']:.1f} | {rounds} |"
        )
    lines += [
        "",
        f"score-file ÷ pandas, rows/s pair by pair within a round (median): "
        f"{result['score_file_vs_pandas_rows_per_second']}x; wall time pandas ÷ score-file: "
        f"{result['pandas_vs_score_file_wall']}x. Scores compared on "
        f"{result['events_compared']:,} events: largest difference {result['max_score_diff']:.2g}.",
    ]
    return "\n".join(lines) + "\n"
