"""Benchmark of the Avro batch codec on Interaction events (per-event cost, batches of N).

    python -m load.bench_codec [--events 200000] [--batch 1000] [--repeats 5] [--json]

Reports the median over repeats of encode and decode cost per event, and the same for the
hostile path (values that are rejected). Pure CPU, one process; no broker involved.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
import uuid
from typing import Any

from services.codec.avro import AvroCodec
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

    def per_event_us(fn: Any, inputs: list[Any]) -> float:
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            for batch in inputs:
                fn(batch)
            runs.append((time.perf_counter() - start) / len(data) * 1e6)
        return statistics.median(runs)

    result = {
        "events": len(data),
        "batch": args.batch,
        "repeats": args.repeats,
        "bytes_per_event": round(sum(len(v) for b in encoded for v in b) / len(data), 1),
        "encode_us_per_event": round(per_event_us(codec.encode_many, batches), 2),
        "decode_us_per_event": round(per_event_us(codec.decode_many, encoded), 2),
        "decode_rejected_us_per_event": round(per_event_us(codec.decode_many, hostile), 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for key, value in result.items():
            print(f"{key:32} {value}")


if __name__ == "__main__":
    main()
