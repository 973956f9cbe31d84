"""The test run cannot pass green without Apache Kafka where Java could run it: with Java on
the machine and no Kafka jars, `--broker=auto` falls back to tansu and the run fails, saying
why; STREAMSCORE_TEST_ALLOW_TANSU=1 accepts the fallback knowingly."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.core.settings import LocalSettings
from services.embedded.kafka import java_path

ROOT = Path(__file__).resolve().parents[2]


def _collect(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSCORE_")}
    env |= {"STREAMSCORE_LOCAL__KAFKA_JARS_DIR": str(tmp_path / "no-jars"), **extra}
    return subprocess.run(  # noqa: S603 (pytest itself)
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "--collect-only",
            "-q",
            "--broker=auto",
            "tests/integration/test_kafka_semantics.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.skipif(java_path(LocalSettings()) is None, reason="needs Java on this machine")
def test_java_without_kafka_fails_the_run(tmp_path: Path) -> None:
    ran = _collect(tmp_path)
    assert ran.returncode == 1, ran.stdout[-2000:]
    assert "Java is present but Apache Kafka could not run" in ran.stdout
    assert "no Kafka jars in" in ran.stdout


@pytest.mark.skipif(java_path(LocalSettings()) is None, reason="needs Java on this machine")
def test_the_fallback_can_be_accepted_knowingly(tmp_path: Path) -> None:
    ran = _collect(tmp_path, STREAMSCORE_TEST_ALLOW_TANSU="1")
    assert ran.returncode == 0, ran.stdout[-2000:]
    assert "could not run" not in ran.stdout
