"""deploy/registry/server.py, the Schema Registry stand-in of the compose stack, over raw HTTP:
ids are global and stable, a restart keeps them, and errors have Confluent's codes and shape."""

from __future__ import annotations

import base64
import json
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.unit.codec.standin import load_standin

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
V1 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}
# A field added with a default: BACKWARD and FORWARD, so FULL, compatible with V1.
V2 = V1 | {"fields": [*V1["fields"], {"name": "b", "type": "string", "default": ""}]}
# A field added without a default: new readers cannot read V1 data (not BACKWARD).
BAD = V1 | {"fields": [*V1["fields"], {"name": "c", "type": "long"}]}


Start = Callable[..., str]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Starts stand-ins on free ports (state in tmp_path unless given); stops them all after."""
    servers: list[Any] = []

    def _start(state: Path | None = None, **kwargs: Any) -> str:
        server = load_standin().make_server(state or tmp_path / "state.json", **kwargs)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield _start
    for server in servers:
        server.shutdown()
        server.server_close()


def call(
    method: str, url: str, body: Any = None, user_info: str | None = None
) -> tuple[int, Any, str]:
    """(status, JSON body, content type) of one request, errors included."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    request.add_header("Content-Type", CONTENT_TYPE)
    if user_info:
        token = base64.b64encode(user_info.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (loopback)
            return response.status, json.load(response), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), exc.headers["Content-Type"]


def register(url: str, subject: str, schema: Any) -> tuple[int, Any, str]:
    return call("POST", f"{url}/subjects/{subject}/versions", {"schema": json.dumps(schema)})


def test_the_same_schema_keeps_its_id_across_calls_subjects_and_key_order(start: Start) -> None:
    url = start()
    assert register(url, "a-value", V1) == (200, {"id": 1}, CONTENT_TYPE)
    assert register(url, "a-value", V1)[1] == {"id": 1}  # idempotent: no new version
    assert register(url, "a-value", V2)[1] == {"id": 2}
    reordered = {"fields": V1["fields"], "name": "R", "type": "record"}
    assert register(url, "b-value", reordered)[1] == {"id": 1}  # ids are global
    assert call("GET", f"{url}/subjects")[1] == ["a-value", "b-value"]
    assert call("GET", f"{url}/subjects/a-value/versions")[1] == [1, 2]
    latest = call("GET", f"{url}/subjects/a-value/versions/latest")[1]
    assert (latest["subject"], latest["version"], latest["id"]) == ("a-value", 2, 2)
    assert json.loads(latest["schema"]) == V2
    assert call("GET", f"{url}/subjects/a-value/versions/1")[1]["id"] == 1
    assert json.loads(call("GET", f"{url}/schemas/ids/2")[1]["schema"]) == V2
    found = call("POST", f"{url}/subjects/b-value", {"schema": json.dumps(V1)})[1]
    assert (found["id"], found["version"]) == (1, 1)


def test_a_restart_keeps_ids_and_versions(start: Start, tmp_path: Path) -> None:
    state = tmp_path / "volume" / "state.json"
    first = start(state)
    register(first, "a-value", V1)
    register(first, "a-value", V2)
    call("PUT", f"{first}/config", {"compatibility": "full"})
    second = start(state)  # a new process reading the same file
    assert register(second, "a-value", V2)[1] == {"id": 2}
    assert call("GET", f"{second}/subjects/a-value/versions")[1] == [1, 2]
    assert json.loads(call("GET", f"{second}/schemas/ids/1")[1]["schema"]) == V1
    assert call("GET", f"{second}/config")[1] == {"compatibilityLevel": "FULL"}
    other = {"type": "record", "name": "S", "fields": []}
    assert register(second, "s-value", other)[1] == {"id": 3}  # never a reused id
    assert sorted(p.name for p in state.parent.iterdir()) == ["state.json"]  # no temp left


def test_a_failed_write_answers_500_and_changes_nothing(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = start()
    register(url, "a-value", V1)
    standin = load_standin()

    def refuse(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(standin.os, "replace", refuse)
    status, body, _ = register(url, "a-value", V2)
    assert (status, body["error_code"]) == (500, 50001)
    monkeypatch.undo()
    assert call("GET", f"{url}/subjects/a-value/versions")[1] == [1]
    assert register(url, "a-value", V2)[1] == {"id": 2}


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "code"),
    [
        ("GET", "/subjects/nope/versions", None, 404, 40401),
        ("GET", "/subjects/nope/versions/latest", None, 404, 40401),
        ("POST", "/subjects/nope", {"schema": json.dumps(V1)}, 404, 40401),
        ("POST", "/subjects/a-value", {"schema": json.dumps(V2)}, 404, 40403),
        ("GET", "/schemas/ids/99", None, 404, 40403),
        ("GET", "/subjects/a-value/versions/9", None, 404, 40402),
        ("GET", "/subjects/a-value/versions/first", None, 422, 42202),
        ("POST", "/subjects/a-value/versions", {"schema": "{not json"}, 422, 42201),
        ("POST", "/subjects/a-value/versions", {"schema": "{}"}, 422, 42201),
        ("POST", "/subjects/a-value/versions", {"schema": "1", "schemaType": "JSON"}, 422, 42201),
        ("POST", "/subjects/a-value/versions", {"schema": json.dumps(BAD)}, 409, 409),
        ("PUT", "/config", {"compatibility": "SOMETIMES"}, 422, 42203),
        ("GET", "/config/a-value", None, 404, 40408),
        ("GET", "/no/such/path", None, 404, 404),
        ("DELETE", "/subjects/a-value", None, 405, 405),
    ],
)
def test_errors_have_confluents_status_code_and_shape(
    start: Start, method: str, path: str, body: Any, status: int, code: int
) -> None:
    url = start()
    register(url, "a-value", V1)
    got, answer, content_type = call(method, url + path, body)
    assert (got, answer["error_code"]) == (status, code), answer
    assert isinstance(answer["message"], str) and answer["message"]
    assert content_type == CONTENT_TYPE


def test_compatibility_follows_the_subject_level_backward_by_default(start: Start) -> None:
    url = start()
    assert call("GET", f"{url}/config")[1] == {"compatibilityLevel": "BACKWARD"}
    register(url, "a-value", V1)
    check = f"{url}/compatibility/subjects/a-value/versions/latest?verbose=true"
    answer = call("POST", check, {"schema": json.dumps(BAD)})[1]
    assert answer["is_compatible"] is False
    assert answer["messages"] == [
        "new consumers cannot read old data: R.c: new field without a default"
    ]
    # Removing a field without a default breaks old readers: refused under FULL, not BACKWARD.
    narrow = V1 | {"fields": []}
    assert call("POST", check, {"schema": json.dumps(narrow)})[1]["is_compatible"] is True
    assert call("PUT", f"{url}/config/a-value", {"compatibility": "FULL"})[1] == {
        "compatibility": "FULL"
    }
    assert call("GET", f"{url}/config/a-value")[1] == {"compatibilityLevel": "FULL"}
    assert call("GET", f"{url}/config")[1] == {"compatibilityLevel": "BACKWARD"}
    assert call("POST", check, {"schema": json.dumps(narrow)})[1]["is_compatible"] is False
    assert register(url, "a-value", narrow)[0] == 409
    assert call("GET", f"{url}/config/b-value?defaultToGlobal=true")[1] == {
        "compatibilityLevel": "BACKWARD"
    }


def test_transitive_levels_check_every_version(start: Start) -> None:
    url = start(compatibility="full")
    register(url, "a-value", V1)
    register(url, "a-value", V2)
    # v3 gives a a default; v4 then removes a: FULL against v3 (the latest), not against V1
    # and V2, whose readers need a and have no default for it.
    v3 = {"type": "record", "name": "R", "fields": [{"name": "a", "type": "int", "default": 0}]}
    assert register(url, "a-value", v3)[1] == {"id": 3}
    v4 = {"type": "record", "name": "R", "fields": []}
    body = {"schema": json.dumps(v4)}
    assert call("POST", f"{url}/compatibility/subjects/a-value/versions", body)[1] == {
        "is_compatible": True
    }
    call("PUT", f"{url}/config/a-value", {"compatibility": "FULL_TRANSITIVE"})
    answer = call("POST", f"{url}/compatibility/subjects/a-value/versions?verbose=true", body)[1]
    assert answer["is_compatible"] is False
    assert len(answer["messages"]) == 2, answer  # one problem each from V1 and V2
    assert register(url, "a-value", v4)[0] == 409


def test_basic_auth_when_configured(start: Start) -> None:
    url = start(user_info="streamscore:s3cret")
    status, body, _ = call("GET", f"{url}/subjects")
    assert (status, body) == (401, {"error_code": 401, "message": "Unauthorized"})
    assert call("GET", f"{url}/subjects", user_info="streamscore:wrong")[0] == 401
    assert call("GET", f"{url}/subjects", user_info="streamscore:s3cret")[:2] == (200, [])


def test_the_healthcheck_asks_the_running_server(
    start: Start, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = start(user_info="u:p")
    standin = load_standin()
    monkeypatch.setenv("SCHEMA_REGISTRY_LISTENERS", url)  # --check asks 127.0.0.1 at its port
    monkeypatch.setenv("REGISTRY_BASIC_AUTH_USER_INFO", "u:p")
    assert standin.main(["--check"]) == 0
    monkeypatch.setenv("REGISTRY_BASIC_AUTH_USER_INFO", "u:wrong")
    assert standin.main(["--check"]) == 1
