"""The model watcher outlives any error, a registry outage keeps the serving set, a restart
during an outage serves the local copy (or refuses), and readiness tells the truth."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from services.codec.avro import AvroCodec
from services.codec.manifest import MANIFEST_FILE, Manifest, ManifestSchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core import metrics
from services.core.errors import ConfigError, RegistryUnavailable
from services.core.settings import Settings
from services.scoring.artifact_cache import ArtifactCache
from services.scoring.loader import ServingLoader
from services.scoring.model import LoadedModel, artifact_digest
from services.scoring.rollout import AliasChange, RolloutState
from services.scoring.serving import Serving
from streams.adapters import model_problem
from streams.model_watcher import ModelWatcher
from tests.waiting import wait_for

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
IDS = ManifestSchemaIds(Manifest.load(DEFAULT_SCHEMAS_DIR / MANIFEST_FILE))
EVENTS = AvroCodec(SCHEMAS["ModelEvent"], IDS, "ml.model-events.v1-value")


class Source:
    """A registry double (unit test of the loader and watcher): versions by number, a state
    that the test changes, and failures injected per call."""

    name = "engagement"

    def __init__(self, model: LoadedModel) -> None:
        self.models = {v: replace(model, version=v) for v in ("1", "2", "3")}
        self.state = RolloutState("1")
        self.fail: dict[str, BaseException] = {}  # method or "load:<version>" -> error
        self.calls = 0

    def _maybe_fail(self, what: str) -> None:
        if what in self.fail:
            raise self.fail[what]

    def load(self, alias: str | None = None, version: str | None = None) -> LoadedModel:
        self._maybe_fail(f"load:{version}")
        return self.models[version or "1"]

    def rollout_state(self) -> RolloutState:
        self.calls += 1
        self._maybe_fail("rollout_state")
        return self.state

    def history(self) -> list[AliasChange]:
        return []

    def version_numbers(self) -> list[str]:
        return list(self.models)


@pytest.fixture
def watch(
    model: LoadedModel, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Source, ModelWatcher]]:
    source = Source(model)
    loader = ServingLoader(source)
    built = loader.build(source.state, None)
    settings = Settings(model={"poll_seconds": 0.05, "compile": False})
    monkeypatch.setattr("streams.model_watcher.OUTAGE_RETRY_SECONDS", 0.05)
    watcher = ModelWatcher(settings, loader, source.state, built.serving, EVENTS)
    monkeypatch.setattr(watcher, "_subscribe", lambda: None)  # registry polling only
    watcher.start()
    yield source, watcher
    watcher.stop()


def test_the_watcher_survives_any_refresh_error_and_follows_later_changes(
    watch: tuple[Source, ModelWatcher],
) -> None:
    source, watcher = watch
    errors = metrics.WATCHER_ERRORS._value.get()
    # get_model_version's ConfigError during a swap ended the thread before.
    source.fail["load:2"] = ConfigError("model engagement has no version 2")
    source.state = RolloutState("2")
    calls = source.calls
    wait_for(lambda: source.calls > calls + 2)
    assert watcher.alive and watcher.take() is None  # v2 refused, v1 kept
    source.fail["rollout_state"] = RuntimeError("something nobody expected")
    wait_for(lambda: metrics.WATCHER_ERRORS._value.get() > errors)
    assert watcher.alive
    del source.fail["rollout_state"]
    source.state = RolloutState("3")
    wait_for(lambda: watcher._pending is not None)
    taken = watcher.take()
    assert taken is not None and taken.champion.version == "3"


def test_a_registry_outage_keeps_the_canary_and_fires_no_fallback(
    watch: tuple[Source, ModelWatcher],
) -> None:
    source, watcher = watch
    source.state = RolloutState("1", "2", "canary", 10.0)
    wait_for(lambda: watcher._pending is not None)
    serving = watcher.take()
    assert serving is not None and serving.mode == "canary"
    fallbacks = metrics.FALLBACKS.labels(reason="model_load")._value.get()
    source.fail["rollout_state"] = RegistryUnavailable("model registry unavailable: refused")
    calls = source.calls
    wait_for(lambda: source.calls > calls + 3)
    assert watcher.registry_down and metrics.REGISTRY_UP._value.get() == 0
    assert watcher.take() is None  # nothing changes: the canary goes on
    assert metrics.FALLBACKS.labels(reason="model_load")._value.get() == fallbacks
    del source.fail["rollout_state"]
    wait_for(lambda: not watcher.registry_down)
    assert watcher.take() is None and metrics.REGISTRY_UP._value.get() == 1


def test_no_champion_never_serves_an_unapproved_version(model: LoadedModel) -> None:
    source = Source(model)
    source.state = RolloutState(None)
    with pytest.raises(ConfigError, match="no champion"):
        ServingLoader(source).build(source.state, None)


def test_a_restart_during_an_outage_serves_the_local_copy_or_refuses(
    model: LoadedModel, model_dir: Path, tmp_path: Path
) -> None:
    copies = ArtifactCache(tmp_path / "cache", "engagement")
    outage = RegistryUnavailable("model registry unavailable: connection refused")
    with pytest.raises(RegistryUnavailable, match="no local copy"):
        ServingLoader(Source(model), copies).from_copies(outage)
    for version in ("3", "4"):
        copies.put(version, artifact_digest(model_dir), None, model_dir)
    loader = ServingLoader(Source(model), copies)
    loader.remember(Serving(replace(model, version="3"), replace(model, version="4"), "shadow"))
    state, built = loader.from_copies(outage)
    assert state == RolloutState("3", "4", "shadow", 0.0)
    assert (built.serving.champion.version, built.serving.mode) == ("3", "shadow")
    # A copy altered on disk is refused like a tampered download.
    (copies.dir / "3" / "artifact" / "metadata.json").write_text("{}")
    with pytest.raises(RegistryUnavailable, match="unusable"):
        loader.from_copies(outage)


def test_an_unreachable_tracking_server_is_an_outage_not_an_empty_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before, any MLflow error read as "no champion": a canary was dropped and the walk-back
    could pick any version."""
    from services.scoring.registry import MlflowRegistry

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: connection refused
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    settings = Settings(home=tmp_path, model={"tracking_uri": f"http://127.0.0.1:{port}"})
    registry = MlflowRegistry(settings)
    with pytest.raises(RegistryUnavailable):
        registry.rollout_state()
    with pytest.raises(RegistryUnavailable):
        registry.load(version="1")


def test_readiness_fails_without_a_scoring_model_or_a_live_watcher(
    model: LoadedModel, watch: tuple[Source, ModelWatcher]
) -> None:
    _, watcher = watch
    assert model_problem(Serving(model), watcher) is None
    broken = replace(model, model=None, compiled=None)
    assert "cannot score" in (model_problem(Serving(broken), None) or "")
    watcher.stop()
    wait_for(lambda: not watcher.alive)
    assert "watcher stopped" in (model_problem(Serving(model), watcher) or "")


def test_signed_versions_are_required_when_a_key_is_set(model_dir: Path, tmp_path: Path) -> None:
    from services.core.errors import ModelIntegrityError
    from services.scoring.model import load_artifacts, sign_digest

    digest = artifact_digest(model_dir)
    good = sign_digest(digest, b"key")
    assert load_artifacts(model_dir, "m", "1", digest, signature=good, signing_key=b"key")
    for signature in (None, sign_digest(digest, b"another key")):
        with pytest.raises(ModelIntegrityError, match="signature"):
            load_artifacts(model_dir, "m", "1", digest, signature=signature, signing_key=b"key")


def test_a_signing_key_signs_at_registration_and_is_required_at_load(
    model_dir: Path, tmp_path: Path
) -> None:
    """Through the registry (MLflow on sqlite in a temporary home): a version registered with
    the key loads with it; registered without a signature it is refused once a key is set,
    and a different key refuses it too."""
    from pydantic import SecretStr

    from services.core.errors import ModelIntegrityError
    from services.scoring.registry import MlflowRegistry

    def registry(key: str | None) -> MlflowRegistry:
        model = {"name": "signed", "compile": False, "signing_key": SecretStr(key) if key else None}
        return MlflowRegistry(Settings(home=tmp_path, model=model))

    digest = artifact_digest(model_dir)
    versions = {}
    for key in ("k1", None):
        r = registry(key)
        run_id, uri = r.log_run({}, {}, {}, model_dir, "signing")
        versions[key] = r.register(run_id, uri, digest, {})
    assert registry("k1").load(version=versions["k1"]).version == versions["k1"]
    with pytest.raises(ModelIntegrityError, match="no artifact_hmac"):
        registry("k1").load(version=versions[None])
    with pytest.raises(ModelIntegrityError, match="wrong artifact_hmac"):
        registry("k2").load(version=versions["k1"])
    assert registry(None).load(version=versions[None]).version == versions[None]
