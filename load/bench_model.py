"""Model scoring cost per row: LightGBM's own predictor against the lleaves-compiled model.

    python -m load.bench_model [--rows 1000] [--batches 50] [--repeats 5] [--json]

Trains a model with streamscore's LightGBM parameters (``services/training/train.py``) on
synthetic rows of the scoring matrix's width, compiles it with lleaves (a temporary cache), checks
the two give the same scores (|diff| < 1e-6), then times predict per row on batches of ``--rows``,
the two alternatives in turn within each repeat; medians. One thread each, as in the worker.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np

from services.scoring.compiled import compile_lightgbm
from services.scoring.model import sha256_file
from services.training.train import LIGHTGBM_PARAMS, NUM_BOOST_ROUND

WIDTH = 43  # 16 user + 16 item + 11 context features


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--batches", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(3)
    X = rng.normal(size=(30_000, WIDTH))
    y = (X[:, :5].sum(axis=1) + rng.normal(size=len(X)) > 0).astype(int)
    booster = lgb.train(
        LIGHTGBM_PARAMS | {"seed": 1, "verbose": -1},
        lgb.Dataset(X, y),
        num_boost_round=NUM_BOOST_ROUND,
    )
    batches = [rng.normal(size=(args.rows, WIDTH)) for _ in range(args.batches)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.txt"
        path.write_text(booster.model_to_string(), encoding="utf-8")
        start = time.perf_counter()
        compiled = compile_lightgbm(path, sha256_file(path), Path(tmp) / "cache")
        compile_seconds = time.perf_counter() - start
        if compiled is None:
            raise SystemExit("lleaves could not compile the model")
        worst = max(
            float(np.max(np.abs(compiled.predict(b) - booster.predict(b, num_threads=1))))
            for b in batches
        )
        alternatives = {
            "lightgbm": lambda b: booster.predict(b, num_threads=1),
            "lleaves": compiled.predict,
        }
        runs: dict[str, list[float]] = {k: [] for k in alternatives}
        for _ in range(args.repeats):
            for name, fn in alternatives.items():
                t = time.perf_counter()
                for b in batches:
                    fn(b)
                runs[name].append((time.perf_counter() - t) / (args.rows * args.batches) * 1e6)
    med = {k: statistics.median(v) for k, v in runs.items()}
    result = {
        "trees": booster.num_trees(),
        "features": WIDTH,
        "rows_per_batch": args.rows,
        "compile_seconds": round(compile_seconds, 2),
        "max_abs_diff": worst,
        "lightgbm_us_per_row": round(med["lightgbm"], 2),
        "lleaves_us_per_row": round(med["lleaves"], 2),
        "speedup": round(med["lightgbm"] / med["lleaves"], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:24} {value}")


if __name__ == "__main__":
    main()
