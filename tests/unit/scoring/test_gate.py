"""The dependency gate, driven by a fake shell and a feature store that fails on a schedule:
retries, then degrade or hold; hold and release balanced; every input accounted for."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.errors import FeatureStoreUnavailable, SchemaRegistryUnavailable
from services.core.records import Inbound
from services.scoring.gate import FEATURE_RETRIES, FEATURE_STORE_DOWN, DependencyGate
from services.scoring.model import LoadedModel
from services.scoring.stages import Stages
from tests.unit.scoring.test_pipeline import CODEC, GOOD, NOW, RULES, SPEC, STORE


class Shell:
    """Records what the gate asked of it; gives up in ``hold`` when told to."""

    def __init__(self, give_up: bool = False, abandon_after: int | None = None) -> None:
        self.give_up, self.abandon_after = give_up, abandon_after
        self.calls: list[str] = []
        self.waits = 0

    def wait(self, seconds: float) -> None:
        assert 0 < seconds <= 5.0
        self.waits += 1
        self.calls.append("wait")

    def hold(self, dependency: str, error: Exception) -> None:
        self.calls.append(f"hold:{dependency}")
        if self.give_up:
            raise error

    def release(self) -> None:
        self.calls.append("release")

    def abandoned(self) -> bool:
        return self.abandon_after is not None and self.waits >= self.abandon_after


class Flaky:
    """A lookup that fails its first ``down`` calls, then answers from the in-memory store."""

    def __init__(self, down: int) -> None:
        self.down, self.calls = down, 0

    def __call__(self, requests: Any) -> Any:
        self.calls += 1
        if self.calls <= self.down:
            raise FeatureStoreUnavailable("redis down")
        return STORE.get_many(requests)


def _stages(model: LoadedModel, lookup: Any) -> Stages:
    return Stages.of(CODEC, RULES, SPEC, lookup, model)


def _batch(n: int = 10) -> list[Inbound]:
    return [Inbound("t", 0, i, b"k", GOOD[i]) for i in range(n)]


def test_a_short_outage_is_retried_and_scored_normally(model: LoadedModel) -> None:
    shell = Shell()
    result = DependencyGate("pause").run(_stages(model, Flaky(2)), _batch(), lambda: NOW, shell)
    assert result is not None and result.n_predictions == 10 and not result.degraded
    assert shell.calls == ["wait", "wait"]


def test_degrade_scores_with_defaults_flagged_then_recovers(model: LoadedModel) -> None:
    gate = DependencyGate("degrade")
    shell = Shell()
    down = Flaky(10**6)
    result = gate.run(_stages(model, down), _batch(), lambda: NOW, shell)
    assert result is not None and result.fallbacks == {FEATURE_STORE_DOWN: 10}
    assert all(p.record["degraded"] for p in result.predictions)
    assert down.calls == FEATURE_RETRIES and gate.degrading
    # While degrading, one failed try is enough.
    again = gate.run(_stages(model, down), _batch(), lambda: NOW, shell)
    assert again is not None and down.calls == FEATURE_RETRIES + 1
    healthy = gate.run(_stages(model, STORE.get_many), _batch(), lambda: NOW, shell)
    assert healthy is not None and not healthy.degraded and not gate.degrading
    assert "hold:redis" not in shell.calls


def test_pause_holds_once_and_releases_once(model: LoadedModel) -> None:
    shell = Shell()
    gate = DependencyGate("pause")
    result = gate.run(_stages(model, Flaky(FEATURE_RETRIES + 3)), _batch(), lambda: NOW, shell)
    assert result is not None and result.n_predictions == 10
    assert shell.calls.count("hold:redis") == 1 and shell.calls.count("release") == 1
    assert shell.calls.index("hold:redis") < shell.calls.index("release")
    assert not gate.holding


def test_an_abandoned_batch_is_dropped_and_the_hold_released(model: LoadedModel) -> None:
    shell = Shell(abandon_after=FEATURE_RETRIES + 1)
    gate = DependencyGate("pause")
    assert gate.run(_stages(model, Flaky(10**6)), _batch(), lambda: NOW, shell) is None
    assert shell.calls[-1] == "release" and not gate.holding


def test_a_shell_that_gives_up_gets_the_error_at_once(model: LoadedModel) -> None:
    shell = Shell(give_up=True)
    gate = DependencyGate("pause", retries=1)
    with pytest.raises(FeatureStoreUnavailable):
        gate.run(_stages(model, Flaky(10**6)), _batch(), lambda: NOW, shell)
    assert shell.calls == ["hold:redis", "release"] and not gate.holding


# The model fixture is read-only: sharing it across examples is safe.
@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    policy=st.sampled_from(["pause", "degrade"]),
    outages=st.lists(st.integers(0, 12), min_size=1, max_size=5),
    retries=st.integers(1, 6),
)
def test_every_input_is_accounted_for_whatever_the_outages(
    model: LoadedModel, policy: str, outages: list[int], retries: int
) -> None:
    """Batches meet outages of random length: each batch ends with every input a prediction or
    a dead letter; degraded exactly when the policy degrades and the outage outlasted the
    quick tries; holds and releases balance."""
    gate = DependencyGate(policy, retries=retries)
    shell = Shell()
    for down in outages:
        quick = 1 if gate.degrading else retries
        result = gate.run(_stages(model, Flaky(down)), _batch(), lambda: NOW, shell)
        assert result is not None
        assert result.n_predictions + len(result.dead_letters) == 10
        assert (FEATURE_STORE_DOWN in result.fallbacks) == (policy == "degrade" and down >= quick)
        calls = Counter(shell.calls)
        assert calls["release"] == sum(v for k, v in calls.items() if k.startswith("hold"))
        assert not gate.holding


def test_a_batch_abandoned_while_it_scored_is_dropped(model: LoadedModel) -> None:
    """A rebalance served while the batch was scored (no outage at all): dropped, not
    published, so no output is written for a partition this member may no longer own."""
    shell = Shell()
    shell.abandoned = lambda: True  # type: ignore[method-assign]
    assert (
        DependencyGate("pause").run(_stages(model, STORE.get_many), _batch(), lambda: NOW, shell)
        is None
    )


def test_the_schema_registry_down_is_held_even_under_degrade(model: LoadedModel) -> None:
    """Defaults stand in for features, never for a schema: without the registry nothing can
    be decoded, so the input is held whatever the Redis policy."""
    calls = {"n": 0}
    real = CODEC.decode_many

    class FlakyCodec:
        def __getattr__(self, name: str) -> Any:
            return getattr(CODEC, name)

        def decode_many(self, values: Any) -> Any:
            calls["n"] += 1
            if calls["n"] <= FEATURE_RETRIES + 1:
                raise SchemaRegistryUnavailable("registry down")
            return real(values)

    shell = Shell()
    stages = Stages.of(FlakyCodec(), RULES, SPEC, STORE.get_many, model)  # type: ignore[arg-type]
    result = DependencyGate("degrade").run(stages, _batch(), lambda: NOW, shell)
    assert result is not None and not result.degraded and result.n_predictions == 10
    assert "hold:schema_registry" in shell.calls and shell.calls[-1] == "release"
