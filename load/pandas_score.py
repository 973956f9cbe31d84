"""The plain way to score a file, for `streamscore load file` to hold `score-file` against:
pandas reads the CSV in chunks, one Redis MGET per chunk fetches the user and item features,
numpy builds the matrix, LightGBM's own predictor scores it (one thread, as the bench's peers),
pandas writes the CSV. Written without streamscore's services, like ``load/bench_peers.py``
(the feature layout is the feed domain's, by hand); no validation, dead letters or
provenance beyond the model version.

    python -m load.pandas_score CONFIG.json

Prints one JSON line: rows, seconds (reading to the last row written, after the model is
loaded, as `score-file` counts), rows/s and peak RSS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pandas as pd
import redis

SURFACES = ("UNKNOWN", "HOME_FEED", "EXPLORE", "PROFILE", "SEARCH", "NOTIFICATIONS")
DEVICES = ("UNKNOWN", "IOS", "ANDROID", "WEB")
NUMBERS = ("position", "session_depth", "item_age_hours", "user_tenure_days", "network_rtt_ms")
FLAGS = ("is_following_author", "is_video", "is_sponsored")


def _vectors(blobs: list[Any], default: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    out = np.empty((len(blobs), len(default)), dtype=np.float32)
    for i, blob in enumerate(blobs):
        out[i] = np.frombuffer(blob, np.float32) if blob else default
    return out


def score(cfg: dict[str, Any]) -> dict[str, Any]:
    booster = lgb.Booster(model_file=cfg["model_file"])
    spec = json.loads(Path(cfg["spec_file"]).read_text(encoding="utf-8"))
    defaults = {
        g["name"]: np.array([f["default"] for f in g["features"]], dtype=np.float32)
        for g in spec["groups"]
    }
    prefix = f"{cfg['key_prefix']}feat:{spec['version']}:"
    r = redis.Redis.from_url(cfg["redis_url"])
    surfaces = {s: i for i, s in enumerate(SURFACES)}
    devices = {d: i for i, d in enumerate(DEVICES)}
    started, rows, header = time.perf_counter(), 0, True
    for frame in pd.read_csv(cfg["source"], chunksize=cfg.get("chunk", 5000)):
        n = len(frame)
        keys = (prefix + "user:" + frame["user_id"]).tolist()
        keys += (prefix + "item:" + frame["item_id"]).tolist()
        blobs = r.mget(keys)
        context = np.column_stack(
            [frame[c].astype(np.float64).to_numpy() for c in NUMBERS]
            + [frame[c].fillna(False).astype(np.float64).to_numpy() for c in FLAGS]
            + [
                frame["surface"].map(surfaces).fillna(0).to_numpy(np.float64),
                frame["device"].map(devices).fillna(0).to_numpy(np.float64),
                ((frame["event_time"] // 3_600_000) % 24).to_numpy(np.float64),
            ]
        )
        X = np.hstack(
            [_vectors(blobs[:n], defaults["user"]), _vectors(blobs[n:], defaults["item"]), context]
        )
        out = frame[["event_id", "user_id", "item_id"]].assign(
            score=booster.predict(X, num_threads=1), model_version=cfg["model_version"]
        )
        out.to_csv(cfg["out"], mode="w" if header else "a", header=header, index=False)
        header = False
        rows += n
    seconds = time.perf_counter() - started
    return {"rows": rows, "seconds": round(seconds, 3), "rows_per_second": round(rows / seconds, 1)}


def _hwm() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


if __name__ == "__main__":
    result = score(json.loads(Path(sys.argv[1]).read_text(encoding="utf-8")))
    print(json.dumps(result | {"max_rss_bytes": _hwm()}), flush=True)
