"""A Redis Cluster none of whose nodes answers holds the worker's input under the `pause`
policy, as any Redis outage does: the worker pauses every partition and keeps trying, it does
not die of redis-py's ``RedisClusterException``."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from services.features.redis_store import RedisFeatureStore
from services.redisconn import slots
from services.scoring import gate
from services.scoring.model import LoadedModel
from tests.unit.redisconn.test_cluster_failures import DeadCluster
from tests.unit.scoring.conftest import model, model_dir  # noqa: F401 (fixtures)
from tests.unit.scoring.test_pipeline import SPEC
from tests.unit.worker.test_loop import _assign, _messages, _revoke, _take_and_handle, _worker


def test_every_cluster_node_down_holds_the_input_instead_of_stopping_the_worker(
    model: LoadedModel,  # noqa: F811
) -> None:
    store = RedisFeatureStore(DeadCluster(redis.ConnectionError("Connection refused")), SPEC, "x:")
    paused_while_held: list[set[int]] = []

    def lookup(requests: Any) -> Any:
        paused_while_held.append(set(fake.paused))
        if len(paused_while_held) == 8:  # while held: the group takes both partitions away
            _revoke(worker, fake, 0, 1)
        return store.get_many(requests)

    worker, fake = _worker(model, lookup)
    assert worker.settings.redis.unavailable_policy == "pause"
    _assign(worker, fake, 0, 1)
    fake.batches = [_messages(0, 5, 2) + _messages(1, 9, 2)]
    with pytest.MonkeyPatch.context() as mp:  # the real waits, made short
        mp.setattr(gate, "FIRST_BACKOFF_SECONDS", 0.001)
        mp.setattr(gate, "MAX_BACKOFF_SECONDS", 0.002)
        mp.setattr(slots, "RETRY_PAUSE_SECONDS", 0.0)
        _take_and_handle(worker)  # before: RedisClusterException out of the worker (exit 1)
    # The quick retries, then every partition paused while the outage lasted.
    assert paused_while_held[: gate.FEATURE_RETRIES] == [set()] * gate.FEATURE_RETRIES
    assert paused_while_held[gate.FEATURE_RETRIES :] == [{0, 1}] * (8 - gate.FEATURE_RETRIES)
    assert not worker.flow.holding and fake.paused == set()  # the hold was released
    assert worker.summary.consumed == 0 and worker.summary.predictions == 0
