"""A Schema Registry stand-in: the Confluent REST subset streamscore uses, on the stdlib only.

No Confluent Schema Registry image can be pulled on the machines that test the compose stack, so
this server speaks the part of its REST API that confluent-kafka's client calls for streamscore
(register, look up, get by id, versions, subjects, compatibility, config), with Confluent's
content type and error bodies (``{"error_code": 40401, "message": ...}``). Only AVRO schemas
without references. Ids are global and stable: the same schema gets the same id under every
subject, and a restart keeps them (the state is one JSON file, written to a temporary name,
synced, then renamed over the old one). Compatibility is checked structurally with the same
Avro resolution rules streamscore's manifest mode uses (services/codec/compat.py), against the
latest version or, for the ``*_TRANSITIVE`` levels, every version.

Configured from the environment, with the names Confluent's image reads where they exist:
``SCHEMA_REGISTRY_LISTENERS`` (``http://0.0.0.0:8081``),
``SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL`` (``backward``), and the stand-in's own
``REGISTRY_STATE_FILE`` (``/var/lib/registry/state.json``) and ``REGISTRY_BASIC_AUTH_USER_INFO``
(``user:password``; unset: no authentication).
``--check`` asks the running server for its subjects and exits 0 or 1 (the healthcheck).
"""

from __future__ import annotations

import argparse
import base64
import copy
import hmac
import json
import logging
import os
import re
import signal
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from services.codec.compat import compatibility_problems

logger = logging.getLogger(__name__)

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
LEVELS = (
    "NONE",
    "BACKWARD",
    "BACKWARD_TRANSITIVE",
    "FORWARD",
    "FORWARD_TRANSITIVE",
    "FULL",
    "FULL_TRANSITIVE",
)


class RegistryError(Exception):
    """An answer other than 2xx, shaped like Confluent's: HTTP status, error code, message."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _subject_not_found(subject: str) -> RegistryError:
    return RegistryError(404, 40401, f"Subject '{subject}' not found.")


def _parse_schema(body: Any) -> tuple[Any, str]:
    """The parsed schema of a request body and its identity key (key order ignored)."""
    if not isinstance(body, dict):
        raise RegistryError(422, 42201, "Invalid schema: the body is not a JSON object")
    if body.get("schemaType", "AVRO") != "AVRO" or body.get("references"):
        raise RegistryError(
            422, 42201, "Invalid schema: this stand-in knows AVRO without references"
        )
    text = body.get("schema")
    try:
        parsed = json.loads(text) if isinstance(text, str) else None
    except ValueError:
        parsed = None
    valid = isinstance(parsed, str | list) or (
        isinstance(parsed, dict)
        and "type" in parsed
        and (parsed["type"] != "record" or isinstance(parsed.get("fields"), list))
    )
    if not valid:
        raise RegistryError(422, 42201, f"Invalid schema {str(text)[:200]}")
    return parsed, json.dumps(parsed, sort_keys=True, separators=(",", ":"))


class Store:
    """Subjects, versions and global ids, kept in one JSON file; every method is thread-safe."""

    def __init__(self, path: Path, compatibility: str = "BACKWARD") -> None:
        self._path = path
        self._lock = threading.RLock()  # register() holds it across its checks
        self._default_level = _level(compatibility)
        self._state: dict[str, Any] = {"next_id": 1, "schemas": {}, "subjects": {}, "config": {}}
        if path.exists():
            self._state = json.loads(path.read_text(encoding="utf-8"))

    def _commit(self, state: dict[str, Any]) -> None:
        """Make ``state`` (a changed copy) the state, on disk first: written to a temporary file
        in the same folder, synced, renamed over the old one. A failed write changes nothing."""
        self._path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".state-", dir=self._path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(state, out, indent=1, sort_keys=True)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self._path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself survives a crash
        finally:
            os.close(dir_fd)
        self._state = state

    def _versions(self, subject: str) -> list[int]:
        ids: list[int] | None = self._state["subjects"].get(subject)
        if not ids:
            raise _subject_not_found(subject)
        return ids

    def _id_of(self, key: str) -> int | None:
        return next((int(i) for i, s in self._state["schemas"].items() if s["key"] == key), None)

    def _text(self, schema_id: int) -> str:
        return str(self._state["schemas"][str(schema_id)]["schema"])

    def level(self, subject: str | None = None, fallback: bool = True) -> str | None:
        with self._lock:
            config = self._state["config"]
            if subject is not None and subject in config:
                return str(config[subject])
            if subject is not None and not fallback:
                return None
            return str(config.get("", self._default_level))

    def set_level(self, level: str, subject: str | None = None) -> str:
        with self._lock:
            state = copy.deepcopy(self._state)
            state["config"]["" if subject is None else subject] = _level(level)
            self._commit(state)
            return _level(level)

    def problems(self, subject: str, parsed: Any, version: str | None = None) -> list[str]:
        """Why ``parsed`` may not follow the subject's versions (``version``: that one only)."""
        with self._lock:
            level = self.level(subject) or "BACKWARD"
            ids = self._versions(subject)
            if version is not None:
                ids = [ids[self._version_index(ids, version)]]
            elif not level.endswith("_TRANSITIVE"):
                ids = ids[-1:]
            olds = [json.loads(self._text(sid)) for sid in ids]
        base = level.removesuffix("_TRANSITIVE")
        return [p for old in olds for p in compatibility_problems(parsed, old, base)]

    @staticmethod
    def _version_index(ids: list[int], version: str) -> int:
        if version in ("latest", "-1"):
            return len(ids) - 1
        if not version.isdigit() or int(version) < 1:
            raise RegistryError(422, 42202, f"The specified version '{version}' is not valid.")
        if int(version) > len(ids):
            raise RegistryError(404, 40402, f"Version {version} not found.")
        return int(version) - 1

    def register(self, subject: str, body: dict[str, Any]) -> int:
        """The schema's id under ``subject``: the existing one, or a new version (409 when the
        subject's compatibility level refuses it)."""
        parsed, key = _parse_schema(body)
        with self._lock:
            schema_id = self._id_of(key)
            versions = self._state["subjects"].get(subject, [])
            if schema_id is not None and schema_id in versions:
                return schema_id
            problems = self.problems(subject, parsed) if versions else []
            if problems:
                raise RegistryError(
                    409,
                    409,
                    "Schema being registered is incompatible with an earlier schema for subject "
                    f'"{subject}", details: {problems}',
                )
            state = copy.deepcopy(self._state)
            if schema_id is None:
                schema_id = int(state["next_id"])
                state["next_id"] = schema_id + 1
                text = json.dumps(parsed, separators=(",", ":"))
                state["schemas"][str(schema_id)] = {"schema": text, "key": key}
            state["subjects"].setdefault(subject, []).append(schema_id)
            self._commit(state)
            return schema_id

    def lookup(self, subject: str, body: dict[str, Any]) -> dict[str, Any]:
        _, key = _parse_schema(body)
        with self._lock:
            ids = self._versions(subject)
            schema_id = self._id_of(key)
            if schema_id not in ids:
                raise RegistryError(404, 40403, "Schema not found")
            return self._entry(subject, ids, ids.index(schema_id) + 1)

    def _entry(self, subject: str, ids: list[int], version: int) -> dict[str, Any]:
        sid = ids[version - 1]
        return {"subject": subject, "version": version, "id": sid, "schema": self._text(sid)}

    def version(self, subject: str, version: str) -> dict[str, Any]:
        with self._lock:
            ids = self._versions(subject)
            return self._entry(subject, ids, self._version_index(ids, version) + 1)

    def versions(self, subject: str) -> list[int]:
        with self._lock:
            return list(range(1, len(self._versions(subject)) + 1))

    def subjects(self) -> list[str]:
        with self._lock:
            return sorted(s for s, ids in self._state["subjects"].items() if ids)

    def schema(self, schema_id: str) -> dict[str, Any]:
        with self._lock:
            if schema_id not in self._state["schemas"]:
                raise RegistryError(404, 40403, f"Schema {schema_id} not found")
            return {"schema": self._text(int(schema_id))}


def _level(value: str) -> str:
    level = value.strip().upper()
    if level not in LEVELS:
        raise RegistryError(422, 42203, f"Invalid compatibility level {value!r}")
    return level


class Handler(BaseHTTPRequestHandler):
    """Routes one request to the server's ``Store``; every answer is JSON."""

    protocol_version = "HTTP/1.1"
    server: RegistryServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._serve("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._serve("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._serve("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._serve("DELETE")

    def _serve(self, method: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""  # read first: the connection is reused
        try:
            if not self._authorized():
                raise RegistryError(401, 401, "Unauthorized")
            url = urlsplit(self.path)
            parts = [unquote(p) for p in url.path.strip("/").split("/") if p]
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            body = json.loads(raw) if raw else {}
            self._send(200, self._route(method, parts, query, body))
        except RegistryError as exc:
            self._send(exc.status, {"error_code": exc.code, "message": exc.message})
        except ValueError:
            self._send(422, {"error_code": 422, "message": "Unrecognized request body"})
        except OSError:
            logger.exception("state file could not be written")
            self._send(500, {"error_code": 50001, "message": "Error in the backend data store"})

    def _authorized(self) -> bool:
        expected = self.server.user_info
        if expected is None:
            return True
        given = self.headers.get("Authorization", "")
        want = "Basic " + base64.b64encode(expected.encode()).decode()
        return hmac.compare_digest(given.encode(), want.encode())

    def _route(self, method: str, p: list[str], q: dict[str, str], body: Any) -> Any:
        store = self.server.store
        route = (method, len(p), p[0] if p else "")
        if route == ("GET", 0, ""):
            return {}
        if route == ("GET", 1, "subjects"):
            return store.subjects()
        if route == ("POST", 2, "subjects"):
            return store.lookup(p[1], body)
        if method == "POST" and p[:1] == ["subjects"] and p[2:] == ["versions"]:
            return {"id": store.register(p[1], body)}
        if method == "GET" and p[:1] == ["subjects"] and p[2:] == ["versions"]:
            return store.versions(p[1])
        if route == ("GET", 4, "subjects") and p[2] == "versions":
            return store.version(p[1], p[3])
        if route == ("GET", 3, "schemas") and p[1] == "ids" and p[2].isdigit():
            return store.schema(p[2])
        if route == ("GET", 2, "schemas") and p[1] == "types":
            return ["AVRO"]
        if method == "POST" and p[:1] == ["compatibility"] and p[1:2] == ["subjects"]:
            if len(p) not in (4, 5) or p[3] != "versions":
                raise RegistryError(404, 404, "HTTP 404 Not Found")
            parsed, _ = _parse_schema(body)
            problems = store.problems(p[2], parsed, p[4] if len(p) == 5 else None)
            answer: dict[str, Any] = {"is_compatible": not problems}
            if q.get("verbose", "").lower() == "true":
                answer["messages"] = problems
            return answer
        if p[:1] == ["config"] and len(p) <= 2:
            return self._config(method, p[1] if len(p) == 2 else None, q, body)
        if method == "DELETE":
            raise RegistryError(405, 405, "HTTP 405 Method Not Allowed: the stand-in never deletes")
        raise RegistryError(404, 404, "HTTP 404 Not Found")

    def _config(self, method: str, subject: str | None, q: dict[str, str], body: Any) -> Any:
        store = self.server.store
        if method == "PUT":
            if not isinstance(body, dict) or not isinstance(body.get("compatibility"), str):
                raise RegistryError(422, 42203, "Invalid compatibility level")
            return {"compatibility": store.set_level(body["compatibility"], subject)}
        if method != "GET":
            raise RegistryError(405, 405, "HTTP 405 Method Not Allowed")
        level = store.level(subject, fallback=q.get("defaultToGlobal", "").lower() == "true")
        if level is None:
            raise RegistryError(
                404,
                40408,
                f"Subject '{subject}' does not have subject-level compatibility configured",
            )
        return {"compatibilityLevel": level}

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="SchemaRegistry"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.info("%s %s", self.address_string(), format % args)


class RegistryServer(ThreadingHTTPServer):
    """The HTTP server, holding the store and the expected ``user:password`` (or None)."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], store: Store, user_info: str | None) -> None:
        super().__init__(address, Handler)
        self.store, self.user_info = store, user_info


def make_server(
    state_file: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    compatibility: str = "BACKWARD",
    user_info: str | None = None,
) -> RegistryServer:
    """A server ready for ``serve_forever()``; port 0 picks a free one (``server_address``)."""
    return RegistryServer((host, port), Store(state_file, compatibility), user_info)


def _listen(listeners: str) -> tuple[str, int]:
    match = re.fullmatch(r"http://([^:/]*):(\d+)/?", listeners.split(",")[0].strip())
    if match is None:
        raise SystemExit(f"SCHEMA_REGISTRY_LISTENERS: only http://host:port, not {listeners!r}")
    return match.group(1) or "0.0.0.0", int(match.group(2))  # noqa: S104 (a container's port)


def _check(port: int, user_info: str | None) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/subjects")  # noqa: S310
    if user_info:
        request.add_header(
            "Authorization", "Basic " + base64.b64encode(user_info.encode()).decode()
        )
    try:
        with urllib.request.urlopen(request, timeout=4) as response:  # noqa: S310 (loopback)
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"registry not answering: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str] | None = None) -> int:
    env = os.environ
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="healthcheck: exit 0 if it answers")
    parser.add_argument(
        "--state-file", default=env.get("REGISTRY_STATE_FILE", "/var/lib/registry/state.json")
    )
    args = parser.parse_args(argv)
    host, port = _listen(env.get("SCHEMA_REGISTRY_LISTENERS", "http://0.0.0.0:8081"))
    user_info = env.get("REGISTRY_BASIC_AUTH_USER_INFO") or None
    if args.check:
        return _check(port, user_info)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    level = env.get("SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL", "BACKWARD")
    try:
        server = make_server(Path(args.state_file), host, port, level, user_info)
    except RegistryError as exc:
        raise SystemExit(f"SCHEMA_REGISTRY_SCHEMA_COMPATIBILITY_LEVEL: {exc.message}") from exc
    # SIGTERM (docker stop) ends serve_forever; state is always whole on disk (renamed files).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    logger.info(
        "schema registry stand-in on %s:%d, state %s, default compatibility %s, auth %s",
        host,
        port,
        args.state_file,
        server.store.level(),
        "on" if user_info else "off",
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
