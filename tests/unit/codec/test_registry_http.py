"""The Schema Registry adapter over HTTP, against a stand-in that speaks the registry's REST API
for the calls we make (lookup, get by id, compatibility). No real Confluent Schema Registry can
be installed here (it is not on PyPI or Maven Central); this pins the wire-level behaviour."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest

from services.codec.registry import RegistrySchemaIds
from services.codec.schemas import DEFAULT_SCHEMAS_DIR, load_schemas
from services.core.errors import ConfigError, SchemaRegistryUnavailable, UnknownSchemaIdError
from services.core.settings import SchemaRegistrySettings

SCHEMAS = load_schemas(DEFAULT_SCHEMAS_DIR)
SEEN: list[tuple[str, str]] = []


class StandIn(BaseHTTPRequestHandler):
    compatible = True

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        length = int(self.headers.get("Content-Length", 0))
        self.rfile.read(length)
        SEEN.append(("POST", self.path))
        if self.path.startswith("/compatibility/"):
            self._send(200, {"is_compatible": StandIn.compatible})
        elif self.path.startswith("/subjects/feed.interactions.v1-value"):
            self._send(
                200,
                {
                    "subject": "feed.interactions.v1-value",
                    "id": 41,
                    "version": 1,
                    "schema": json.dumps(SCHEMAS["Interaction"].source),
                },
            )
        else:
            self._send(404, {"error_code": 40401, "message": "Subject not found"})

    def do_GET(self) -> None:  # noqa: N802
        SEEN.append(("GET", self.path))
        if self.path.startswith("/schemas/ids/41"):
            self._send(200, {"schema": json.dumps(SCHEMAS["Interaction"].source)})
        else:
            self._send(404, {"error_code": 40403, "message": "Schema not found"})

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), StandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_lookup_get_and_compatibility_over_http(url: str) -> None:
    ids = RegistrySchemaIds.from_settings(SchemaRegistrySettings(url=url))
    assert ids.id_for("feed.interactions.v1-value", SCHEMAS["Interaction"]) == 41
    assert ids.writer_source(41) == SCHEMAS["Interaction"].source
    with pytest.raises(UnknownSchemaIdError):
        ids.writer_source(7)
    with pytest.raises(ConfigError, match="schemas register"):
        ids.id_for("feed.labels.v1-value", SCHEMAS["Label"])
    StandIn.compatible = True
    assert ids.compatible("feed.interactions.v1-value", SCHEMAS["Interaction"]) is True
    StandIn.compatible = False
    assert ids.compatible("feed.interactions.v1-value", SCHEMAS["Interaction"]) is False
    assert any(p.startswith("/compatibility/subjects/feed.interactions.v1-value") for _, p in SEEN)


def test_unreachable_registry_is_transient() -> None:
    ids = RegistrySchemaIds.from_settings(SchemaRegistrySettings(url="http://127.0.0.1:9"))
    with pytest.raises(SchemaRegistryUnavailable):
        ids.writer_source(1)
