"""deploy/docker/Dockerfile: what the image promises, checked without a Docker engine.

`make compose-test` builds and runs the image for real; these checks run in `make test`.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement

import services
from services.core.settings import SCHEMAS_DIR, Settings, domain_folder, iter_env_vars

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "docker" / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            pairs.append((word.upper(), rest.strip()))
    return pairs


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for word, rest in _instructions():
        if word == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((word, rest))
    return stages


def _image_env() -> dict[str, str]:
    """The ENV of the final stage, as the container sees it."""
    env: dict[str, str] = {}
    for word, rest in _stages()[-1]:
        if word == "ENV":
            for part in shlex.split(rest):
                name, _, value = part.partition("=")
                env[name] = value
    return env


def test_the_image_does_not_pin_the_domain_folder() -> None:
    # STREAMSCORE_SCHEMA_REGISTRY__SCHEMAS_DIR wins over STREAMSCORE_DOMAIN: an image that set
    # it served the feed to a payments deployment.
    for stage in _stages():
        for word, rest in stage:
            assert word != "ENV" or "STREAMSCORE_SCHEMA_REGISTRY__SCHEMAS_DIR" not in rest


def test_a_payments_container_serves_payments(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in _image_env().items():
        if name.startswith("STREAMSCORE_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("STREAMSCORE_DOMAIN", "payments")
    settings = Settings()
    assert settings.domain_dir == domain_folder("payments")
    assert settings.topics.events == "payments.transactions.v1"


def test_the_shipped_domains_sit_where_the_image_copies_them() -> None:
    # The build stage copies schemas/ to <folder holding the services package>/schemas, which is
    # where the settings look for the shipped domains; a wheel alone does not carry them.
    assert Path(services.__file__).resolve().parents[1] / "schemas" == SCHEMAS_DIR
    assert any(
        "services.__file__).parents[1]" in rest and 'cp -r schemas "$site/schemas"' in rest
        for word, rest in _stages()[0]
        if word == "RUN"
    )


def test_every_streamscore_variable_the_image_sets_is_a_setting() -> None:
    known = {name for name, _ in iter_env_vars()}
    set_here = {name for name in _image_env() if name.startswith("STREAMSCORE_")}
    assert set_here <= known, set_here - known
    assert set_here >= {"STREAMSCORE_HOME", "STREAMSCORE_MODEL__COMPILE_CACHE_DIR"}


def test_multi_stage_non_root_with_healthcheck_and_cache_volume() -> None:
    stages = _stages()
    assert len(stages) == 2
    first = dict(stages[0][:1])
    assert first["FROM"] == "${BASE_IMAGE} AS build"
    args = [rest for word, rest in _instructions() if word == "ARG"]
    assert "BASE_IMAGE=python:3.11-slim" in args
    final = stages[-1]
    words = dict(final)
    assert words["FROM"] == "${BASE_IMAGE}"
    assert words["USER"].split(":")[0] == "10001"
    assert "/opt/streamscore/healthcheck.py" in words["HEALTHCHECK"]
    volumes = [Path(v) for v in json.loads(words["VOLUME"])]
    cache = Path(_image_env()["STREAMSCORE_MODEL__COMPILE_CACHE_DIR"])
    assert any(cache.is_relative_to(volume) for volume in volumes), (cache, volumes)
    # No compiler or build tooling is installed in the final stage.
    runs = " ".join(rest for word, rest in final if word == "RUN")
    for tool in ("gcc", "build-essential", "g++", "python3-dev", "clang"):
        assert tool not in runs, tool


def _healthcheck() -> ModuleType:
    path = ROOT / "deploy" / "docker" / "healthcheck.py"
    spec = importlib.util.spec_from_file_location("streamscore_image_healthcheck", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("argv", "env", "port"),
    [
        (["streamscore", "worker", "scoring"], {}, 9464),
        (["streamscore", "worker", "scoring"], {"STREAMSCORE_METRICS__PORT": "9500"}, 9500),
        (["streamscore", "worker", "control-plane"], {}, 9465),
        (["streamscore", "api", "serve"], {}, 8000),
    ],
)
def test_the_healthcheck_probes_the_port_of_the_role(
    argv: list[str], env: dict[str, str], port: int
) -> None:
    assert _healthcheck().role_port(argv, env) == port


def test_the_healthcheck_reads_only_real_settings() -> None:
    known = {name for name, _ in iter_env_vars()}
    text = (ROOT / "deploy" / "docker" / "healthcheck.py").read_text()
    used = set(re.findall(r"STREAMSCORE_[A-Z_]+", text))
    assert used and used <= known, used - known


def test_the_project_is_built_offline_with_the_locked_build_backend() -> None:
    """The image installs the project with --no-build-isolation: the build backend is the one
    requirements.lock installed (hash-checked), so every build requirement must be pinned
    there, at a version the requirement accepts."""
    build = " ".join(rest for word, rest in _stages()[0] if word == "RUN")
    assert re.search(r"pip install --no-deps --no-build-isolation \. ", build), build
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    pins = dict(
        re.findall(r"^([A-Za-z0-9_.-]+)==(\S+) \\$", (ROOT / "requirements.lock").read_text(), re.M)
    )
    for requirement in map(Requirement, requires):
        assert requirement.name in pins, f"{requirement.name} is not in requirements.lock"
        assert requirement.specifier.contains(pins[requirement.name]), (requirement, pins)
