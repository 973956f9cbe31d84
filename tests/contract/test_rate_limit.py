"""Token buckets on a real Redis: burst, refill, one bucket per producer."""

from __future__ import annotations

import time
import uuid

import redis

from services.ratelimit.bucket import API_NAMESPACE, API_PRODUCER_PREFIX, RedisTokenBuckets
from tests.redis_fixtures import SecureRedis


def test_burst_then_refill_per_producer(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    buckets = RedisTokenBuckets(client, f"t:{uuid.uuid4().hex}:", rate=100.0, burst=50)
    assert buckets.take({"noisy": 80, "quiet": 10}) == {"noisy": 50, "quiet": 10}
    assert buckets.take({"noisy": 10}) == {"noisy": 0}  # empty until it refills
    time.sleep(0.2)  # 100/s for 0.2 s: about 20 tokens back
    granted = buckets.take({"noisy": 100})["noisy"]
    assert 10 <= granted <= 30
    assert buckets.take({"quiet": 40}) == {"quiet": 40}  # the quiet producer kept its own budget


def test_two_workers_share_one_bucket(redis_url: str) -> None:
    prefix = f"t:{uuid.uuid4().hex}:"
    a = RedisTokenBuckets(redis.Redis.from_url(redis_url), prefix, rate=1.0, burst=30)
    b = RedisTokenBuckets(redis.Redis.from_url(redis_url), prefix, rate=1.0, burst=30)
    assert a.take({"p": 20})["p"] + b.take({"p": 20})["p"] == 30


def test_tokens_given_back_are_taken_again_up_to_the_burst(redis_url: str) -> None:
    buckets = RedisTokenBuckets(
        redis.Redis.from_url(redis_url), f"t:{uuid.uuid4().hex}:", rate=0.001, burst=10
    )
    assert buckets.take({"p": 10}) == {"p": 10}
    buckets.give_back({"p": 4, "never-seen": 3})
    assert buckets.take({"p": 10, "never-seen": 20}) == {"p": 4, "never-seen": 10}
    buckets.give_back({"p": 100})
    assert buckets.take({"p": 100}) == {"p": 10}  # never more than the burst


def test_a_producer_claiming_an_api_id_never_touches_the_api_keys_bucket(redis_url: str) -> None:
    """The stream's buckets and the API's per-key buckets live under different names: a Kafka
    producer whose header says `api:k1` cannot drain key k1's budget."""
    prefix = f"t:{uuid.uuid4().hex}:"
    client = redis.Redis.from_url(redis_url)
    api = RedisTokenBuckets(client, prefix, rate=0.001, burst=10, namespace=API_NAMESPACE)
    stream = RedisTokenBuckets(client, prefix, rate=0.001, burst=10)
    assert stream.take({f"{API_PRODUCER_PREFIX}k1": 10, "k1": 10}) == {"api:k1": 10, "k1": 10}
    assert api.take({"k1": 10}) == {"k1": 10}  # its whole burst is still there


def test_buckets_on_the_redis_cluster_are_cut_per_slot_and_stay_exact(
    redis_cluster_secure: SecureRedis,
) -> None:
    """200 producers' buckets hash to slots on all three primaries: one batch call per slot,
    each bucket charged exactly as on one server, refunds included."""
    worker = redis_cluster_secure.client("worker")
    buckets = RedisTokenBuckets(worker, "streamscore:", rate=0.001, burst=10)
    run = uuid.uuid4().hex
    wanted = {f"{run}-{i}": i % 15 for i in range(200)}
    assert buckets.take(wanted) == {p: min(n, 10) for p, n in wanted.items()}
    buckets.give_back({p: 2 for p in wanted})
    # Left after the take: 10 - min(n, 10); the refund adds 2, never past the burst.
    assert buckets.take(dict.fromkeys(wanted, 10)) == {
        p: min(10, 12 - min(n, 10)) for p, n in wanted.items()
    }
