"""The loader's failure branches: the start-up walk-back when the champion cannot be loaded (never
to a version newer than the champion), and a start during a registry outage whose local record
of what was served (``served.json``) is unreadable or malformed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from services.core.errors import (
    ConfigError,
    ModelIntegrityError,
    RegistryUnavailable,
)
from services.scoring.artifact_cache import STATE_FILE, ArtifactCache
from services.scoring.loader import ServingLoader
from services.scoring.model import LoadedModel, artifact_digest
from services.scoring.rollout import AliasChange, RolloutState
from services.scoring.serving import Serving

OUTAGE = RegistryUnavailable("model registry unavailable: connection refused")


class Registry:
    """A registry double: versions by number, each loadable unless the test breaks it; a
    champion history; every load asked for is recorded."""

    name = "engagement"

    def __init__(self, model: LoadedModel, versions: list[str], champion: str) -> None:
        self.models = {v: replace(model, version=v) for v in versions}
        self.state = RolloutState(champion)
        self.changes: list[AliasChange] = []
        self.broken: set[str] = set()
        self.loads: list[str] = []

    def load(self, alias: str | None = None, version: str | None = None) -> LoadedModel:
        assert version is not None
        self.loads.append(version)
        if version in self.broken:
            raise ModelIntegrityError(f"{self.name} v{version}: artifact sha256 does not match")
        return self.models[version]

    def rollout_state(self) -> RolloutState:
        return self.state

    def history(self) -> list[AliasChange]:
        return self.changes

    def version_numbers(self) -> list[str]:
        return list(self.models)


def promoted(from_version: str, to_version: str, at: int) -> AliasChange:
    return AliasChange("promoted", "champion", from_version, to_version, "", "ops", at)


def test_an_unloadable_champion_walks_back_to_the_newest_older_version_never_a_newer_one(
    model: LoadedModel,
) -> None:
    registry = Registry(model, [str(v) for v in range(1, 13)], champion="10")
    registry.broken = {"10"}
    built = ServingLoader(registry).build(registry.state, None)
    # Compared as numbers: "9" is older than "10", "11" and "12" are newer and unapproved.
    assert built.serving.champion.version == "9" and built.fell_back
    assert "11" not in registry.loads and "12" not in registry.loads
    assert registry.loads == ["10", "9"]
    assert [(r.version, r.role, r.reason) for r in built.refusals] == [
        ("10", "champion", "integrity")
    ]


def test_when_every_older_version_fails_the_newer_ones_are_still_never_served(
    model: LoadedModel,
) -> None:
    registry = Registry(model, ["1", "2", "3", "4", "5"], champion="3")
    registry.broken = {"1", "2", "3"}
    with pytest.raises(ConfigError, match="no loadable version") as raised:
        ServingLoader(registry).build(registry.state, None)
    assert sorted(registry.loads) == ["1", "2", "3"]
    assert "sha256" in str(raised.value)


def test_earlier_champions_come_before_older_versions_and_a_newer_one_is_never_taken(
    model: LoadedModel,
) -> None:
    registry = Registry(model, ["1", "2", "3", "4", "5", "6"], champion="4")
    # 1 -> 4 -> 6 -> back to 4: 6 was champion once, but it is newer than the champion now.
    registry.changes = [
        promoted("1", "4", 1),
        promoted("4", "6", 2),
        AliasChange("rolled_back", "champion", "6", "4", "", "ops", 3),
    ]
    registry.broken = {"4"}
    built = ServingLoader(registry).build(registry.state, None)
    assert built.serving.champion.version == "1"  # the champion before 4, not 3
    assert registry.loads == ["4", "1"]
    # With the earlier champion broken too, the newest version older than the champion.
    registry = Registry(model, ["1", "2", "3", "4", "5", "6"], champion="4")
    registry.changes = [promoted("1", "4", 1)]
    registry.broken = {"4", "1"}
    built = ServingLoader(registry).build(registry.state, None)
    assert built.serving.champion.version == "3"
    assert registry.loads == ["4", "1", "3"]


def test_a_worker_serving_a_champion_keeps_it_and_walks_nowhere(model: LoadedModel) -> None:
    registry = Registry(model, ["1", "2", "3", "4"], champion="3")
    registry.broken = {"3"}
    current = Serving(replace(model, version="2"))
    built = ServingLoader(registry).build(registry.state, current)
    assert built.serving.champion is current.champion and built.fell_back
    assert registry.loads == ["3"]


# A start during a registry outage reads served.json. Whatever is wrong with it, the worker
# must refuse to start with RegistryUnavailable (a decided exit), never serve a guess.


@pytest.fixture
def copies(model_dir: Path, tmp_path: Path) -> ArtifactCache:
    cache = ArtifactCache(tmp_path / "cache", "engagement")
    for version in ("3", "4"):
        cache.put(version, artifact_digest(model_dir), None, model_dir)
    return cache


def loader(model: LoadedModel, copies: ArtifactCache) -> ServingLoader:
    return ServingLoader(Registry(model, ["3", "4"], champion="3"), copies)


def test_a_well_formed_served_json_serves_its_state(
    model: LoadedModel, copies: ArtifactCache
) -> None:
    served = {"champion": "3", "challenger": "4", "mode": "canary", "canary_percent": 10.0}
    (copies.dir / STATE_FILE).write_text(json.dumps(served))
    state, built = loader(model, copies).from_copies(OUTAGE)
    assert state == RolloutState("3", "4", "canary", 10.0)
    assert built.serving.describe() == "champion v3, canary v4 at 10%"


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"{",
        b'{"champion": "3", "challenger": ',
        b"\xff\xfe\x00",
        b'{"champion": null, "canary_percent": 0}',
    ],
    ids=["empty", "brace", "truncated", "not-utf8", "no-champion"],
)
def test_an_unreadable_served_json_refuses_to_start(
    model: LoadedModel, copies: ArtifactCache, body: bytes
) -> None:
    (copies.dir / STATE_FILE).write_bytes(body)
    with pytest.raises(RegistryUnavailable, match="no local copy of a served version"):
        loader(model, copies).from_copies(OUTAGE)


def test_a_served_json_naming_a_version_without_a_copy_refuses_to_start(
    model: LoadedModel, copies: ArtifactCache
) -> None:
    (copies.dir / STATE_FILE).write_text(json.dumps({"champion": "9", "canary_percent": 0}))
    with pytest.raises(RegistryUnavailable, match="local copy of v9 is unusable"):
        loader(model, copies).from_copies(OUTAGE)


def test_an_unknown_mode_in_served_json_serves_the_champion_alone(
    model: LoadedModel, copies: ArtifactCache
) -> None:
    served = {"champion": "3", "challenger": "4", "mode": "bogus", "canary_percent": 50}
    (copies.dir / STATE_FILE).write_text(json.dumps(served))
    _, built = loader(model, copies).from_copies(OUTAGE)
    assert built.serving.mode == "none" and built.serving.challenger is None


# Valid JSON of the wrong shape: the start refuses, decided (it once ended in a traceback).
@pytest.mark.parametrize(
    "body",
    [
        "{}",
        "[]",
        "null",
        '"3"',
        '{"champion": "3"}',
        '{"champion": "3", "canary_percent": "ten"}',
        '{"champion": "3", "canary_percent": null}',
        '{"champion": 3, "canary_percent": 0}',
        '{"champion": "3", "canary_percent": 250}',
        '{"champion": "../../x", "canary_percent": 0}',
    ],
    ids=[
        "empty-object",
        "list",
        "null",
        "string",
        "no-percent",
        "percent-text",
        "percent-null",
        "champion-number",
        "percent-over-100",
        "champion-path",
    ],
)
def test_a_served_json_of_the_wrong_shape_refuses_to_start(
    model: LoadedModel, copies: ArtifactCache, body: str
) -> None:
    (copies.dir / STATE_FILE).write_text(body)
    with pytest.raises(RegistryUnavailable, match="refusing to start"):
        loader(model, copies).from_copies(OUTAGE)
