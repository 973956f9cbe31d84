"""Benchmark of the Avro batch codec (per-event cost, batches of N), alternatives interleaved.

    python -m load.bench_codec [--events 200000] [--batch 1000] [--repeats 5] [--json]

Reports the median over repeats of: decoding Interaction events one by one with fastavro
(``decode_one``) against the batch path (``decode_many``: cavro with a nonce, fastavro for what
it does not read); encoding Prediction records from dicts with fastavro (the dicts built too, as
the old worker did) against ``encode_columns``; and the rejected path. Each repeat runs every
alternative once, in turn, so a machine that drifts affects all alike. Pure CPU, one process.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from typing import Any

import numpy as np

from services.codec.avro import AvroCodec
from services.codec.columns import Const
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas


def events(n: int, seed: int = 7) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    surfaces = ["HOME_FEED", "EXPLORE", "PROFILE", "SEARCH"]
    devices = ["IOS", "ANDROID", "WEB"]
    return [
        {
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "event_time": 1763798400000 + i,
            "user_id": f"u-{rng.randrange(100_000):06d}",
            "item_id": f"i-{rng.randrange(50_000):06d}",
            "surface": rng.choice(surfaces),
            "device": rng.choice(devices),
            "country": rng.choice(["DE", "US", "BR", "IN", "JP"]),
            "position": rng.randrange(50),
            "session_depth": rng.randrange(200),
            "item_age_hours": rng.random() * 72,
            "user_tenure_days": rng.randrange(3000),
            "network_rtt_ms": rng.random() * 200 if rng.random() < 0.8 else None,
            "is_following_author": rng.random() < 0.3,
            "is_video": rng.random() < 0.4,
            "is_sponsored": rng.random() < 0.05,
        }
        for i in range(n)
    ]


def _prediction_columns(batch: list[dict[str, Any]]) -> dict[str, Any]:
    n = len(batch)
    return {
        "prediction_id": [e["event_id"].replace("-", "") for e in batch],
        "event_id": [e["event_id"] for e in batch],
        "user_id": [e["user_id"] for e in batch],
        "item_id": [e["item_id"] for e in batch],
        "score": np.linspace(0.01, 0.99, n),
        "model_name": Const("engagement"),
        "model_version": Const("3"),
        "variant": Const("champion"),
        "degraded": Const(False),
        "missing_features": Const([]),
        "event_time": [e["event_time"] for e in batch],
        "scored_at": Const(1763798400000),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    schemas = load_schemas(DEFAULT_SCHEMAS_DIR)
    manifest = Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE)
    codec = AvroCodec(
        schemas["Interaction"], ManifestSchemaIds(manifest), "feed.interactions.v1-value"
    )
    data = events(args.events)
    batches = [data[i : i + args.batch] for i in range(0, len(data), args.batch)]
    encoded = [codec.encode_many(b) for b in batches]
    hostile = [[v[:-3] for v in b] for b in encoded]

    pcodec = AvroCodec(
        schemas["Prediction"], ManifestSchemaIds(manifest), "feed.predictions.v1-value"
    )
    columns = [_prediction_columns(b) for b in batches]

    def as_dicts(cols: dict[str, Any]) -> list[dict[str, Any]]:
        n = len(cols["event_id"])
        wide = {k: [v.value] * n if isinstance(v, Const) else v for k, v in cols.items()}
        return [dict(zip(wide, row, strict=True)) for row in zip(*wide.values(), strict=True)]

    alternatives: dict[str, tuple[Any, list[Any]]] = {
        "decode_fastavro_one_by_one": (lambda b: [codec.decode_one(v) for v in b], encoded),
        "decode_many_batch": (codec.decode_many, encoded),
        "decode_rejected": (codec.decode_many, hostile),
        "encode_predictions_dicts_fastavro": (lambda c: pcodec.encode_many(as_dicts(c)), columns),
        "encode_predictions_columns": (
            lambda c: pcodec.encode_columns(c, len(c["event_id"])),
            columns,
        ),
        "encode_interactions_fastavro": (codec.encode_many, batches),
    }
    runs: dict[str, list[float]] = {name: [] for name in alternatives}
    for _ in range(args.repeats):
        for name, (fn, inputs) in alternatives.items():
            start = time.perf_counter()
            for batch in inputs:
                fn(batch)
            runs[name].append((time.perf_counter() - start) / len(data) * 1e6)

    result: dict[str, Any] = {
        "events": len(data),
        "batch": args.batch,
        "repeats": args.repeats,
        "bytes_per_event": round(sum(len(v) for b in encoded for v in b) / len(data), 1),
    }
    result |= {f"{k}_us_per_event": round(statistics.median(v), 2) for k, v in runs.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
