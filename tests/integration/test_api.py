"""The HTTP API on the real stack (a uvicorn server on loopback): every status code, a fuzzer
driven by the API's own OpenAPI document that never sees a 500, and the equality of the three
ways in: the same events score the same over HTTP, through the stream, and from a file."""

from __future__ import annotations

import csv
import json
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.synthetic.world import strip_private
from streams.adapters import redis_client
from streams.api import create_app
from streams.api_keys import ApiKeys
from streams.runtime import scoring_worker
from tests.integration.pipeline_env import (
    Pipeline,
    cli_in_process,
    domain_fixture,
    with_two_versions,
)
from tests.integration.test_payments_domain import _events_at

pytestmark = [pytest.mark.integration, pytest.mark.kafka_only]
payments = domain_fixture("payments")


class Server:
    """The app on a free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        # The server's shutdown stops the API's threads: none outlives it (a watcher left
        # running would keep moving the process's registry gauges, and logging once the
        # broker is gone).
        api = self.app.state.api
        assert not api._poller.is_alive()
        assert api.scorer.watcher is None or not api.scorer.watcher.alive


def call(
    url: str,
    body: Any = None,
    token: str | None = None,
    raw: bytes | None = None,
    method: str = "POST",
) -> tuple[int, dict[str, str], Any]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url, data=data, method=method)  # noqa: S310 (loopback)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback)
            return r.status, dict(r.headers), json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = text.decode(errors="replace")
        return e.code, dict(e.headers), parsed


@pytest.fixture(scope="module")
def api(payments: Pipeline) -> Iterator[tuple[Pipeline, Server, str]]:
    keys = ApiKeys(redis_client(payments.settings), payments.settings.redis.key_prefix)
    _, token = keys.create("tests", rate_per_second=100_000, burst=100_000)
    server = Server(create_app(payments.settings))
    try:
        yield payments, server, token
    finally:
        server.stop()


def _events(p: Pipeline, n: int, start: int) -> list[dict[str, Any]]:
    return [strip_private(e) for e in _events_at(p, n, start)]


def test_each_status_code(api: tuple[Pipeline, Server, str]) -> None:
    p, server, token = api
    keys = ApiKeys(redis_client(p.settings), p.settings.redis.key_prefix)
    events = _events(p, 3, 70_000_000)
    predict, send = f"{server.url}/v1/predict", f"{server.url}/v1/events"

    # 200: scores, with version, variant, degraded, missing features and the carried keys.
    code, _, body = call(predict, {"events": events}, token)
    assert code == 200, body
    got = body["predictions"]
    assert [x["event_id"] for x in got] == [e["event_id"] for e in events]
    assert all(0 <= x["score"] <= 1 and x["variant"] == "champion" for x in got)
    assert got[0]["card_id"] == events[0]["card_id"] and "missing_features" in got[0]
    assert call(predict, events[0], token)[0] == 200  # one event, not wrapped

    # 202: published once acknowledged; the events are on the topic, keyed by card.
    before = p.count("Transaction")
    code, _, body = call(send, {"events": events}, token)
    assert (code, body["event_ids"]) == (202, [e["event_id"] for e in events])
    on_topic = p.read("Transaction", before + 3)[before:]
    assert sorted(m.key() for m in on_topic) == sorted(e["card_id"].encode() for e in events)

    # 401: no key, a wrong key, a revoked key.
    assert call(predict, events[0])[0] == 401
    assert call(predict, events[0], token[:-2] + "xx")[0] == 401
    revoked, revoked_token = keys.create("leaver")
    assert call(predict, events[0], revoked_token)[0] == 200
    keys.revoke(revoked.id)
    code, headers, _ = call(predict, events[0], revoked_token)
    assert code == 401 and headers.get("www-authenticate") == "Bearer"

    # 413: a body over the limit, refused from its declared length before it is read.
    import http.client

    conn = http.client.HTTPConnection(server.url.removeprefix("http://"), timeout=30)
    conn.putrequest("POST", "/v1/predict")
    conn.putheader("Authorization", f"Bearer {token}")
    conn.putheader("Content-Length", str(p.settings.api.max_body_bytes + 1))
    conn.endheaders()
    conn.send(b'{"events": [')
    assert conn.getresponse().status == 413
    conn.close()

    # 422: not JSON, not an event, a field error per event (with its index), too many events.
    assert call(predict, raw=b"{nope", token=token)[0] == 422
    assert call(predict, [1, 2], token)[0] == 422
    bad = [events[0], events[1] | {"amount": -1.0}, events[2] | {"channel": "FAX"}]
    code, _, body = call(predict, {"events": bad}, token)
    assert code == 422
    assert [(d["index"], d["field"], d["rule"]) for d in body["detail"]] == [
        (1, "amount", "out_of_range"),
        (2, "channel", "type"),
    ]
    assert call(send, {"events": bad}, token)[0] == 422
    assert p.count("Transaction") == before + 3  # nothing more sent
    many = {"events": [events[0]] * (p.settings.api.max_batch + 1)}
    assert call(predict, many, token)[0] == 422

    # 429: over the key's own bucket, with Retry-After.
    _, slow = keys.create("slow", rate_per_second=1, burst=2)
    assert call(predict, {"events": events[:2]}, slow)[0] == 200
    code, headers, _ = call(predict, {"events": events[:2]}, slow)
    assert code == 429 and int(headers["retry-after"]) >= 1

    # The probes and the documents.
    assert call(f"{server.url}/healthz", method="GET")[0] == 200
    code, _, ready = call(f"{server.url}/readyz", method="GET")
    assert code == 200, ready
    code, _, doc = call(f"{server.url}/openapi.json", method="GET")
    assert code == 200 and "/v1/predict" in doc["paths"]
    metrics = urllib.request.urlopen(f"{server.url}/metrics").read().decode()  # noqa: S310
    assert 'streamscore_api_request_seconds_count{route="/v1/predict",status="422"}' in metrics


def _from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values of a JSON Schema (the subset the API's document uses)."""
    if "oneOf" in schema or "anyOf" in schema:
        return st.one_of([_from_schema(s, depth) for s in schema.get("oneOf", schema.get("anyOf"))])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return st.fixed_dictionaries(
            {k: _from_schema(v, depth + 1) for k, v in props.items() if k in required},
            optional={k: _from_schema(v, depth + 1) for k, v in props.items() if k not in required},
        )
    if kind == "array":
        return st.lists(_from_schema(schema["items"], depth + 1), min_size=1, max_size=3)
    return {
        "string": st.text(max_size=20),
        "integer": st.integers(min_value=-(2**63), max_value=2**63 - 1),
        "number": st.floats(allow_nan=False),
        "boolean": st.booleans(),
        "null": st.none(),
    }.get(kind, st.none())


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def test_json_nested_deeper_than_python_is_a_422_not_a_500(
    api: tuple[Pipeline, Server, str],
) -> None:
    """`json.loads` raises RecursionError, not ValueError, on deep nesting: 1 KB of `[`."""
    _, server, token = api
    for route in ("/v1/events", "/v1/predict"):
        code, _, answer = call(f"{server.url}{route}", raw=b"[" * 5000 + b"]" * 5000, token=token)
        assert code == 422, (route, code, answer)
        code, _, _ = call(f"{server.url}{route}", raw=b'{"events": ' + b"[" * 1000, token=token)
        assert code == 422, route


def test_fuzzing_from_the_openapi_document_finds_no_500(api: tuple[Pipeline, Server, str]) -> None:
    p, server, token = api
    doc = call(f"{server.url}/openapi.json", method="GET")[2]
    routes = ["/v1/predict", "/v1/events"]
    schemas = {
        r: doc["paths"][r]["post"]["requestBody"]["content"]["application/json"]["schema"]
        for r in routes
    }
    template = _events(p, 1, 71_000_000)[0]
    mutated = st.builds(
        lambda field, value, drop: (
            {k: v for k, v in template.items() if k != field} if drop else template | {field: value}
        ),
        st.sampled_from(sorted(template) + ["extra"]),
        JUNK,
        st.booleans(),
    )
    seen: set[int] = set()

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        route=st.sampled_from(routes),
        body=st.one_of(st.just(template), _from_schema(schemas["/v1/predict"]), mutated, JUNK),
        wrap=st.booleans(),
    )
    def check(route: str, body: Any, wrap: bool) -> None:
        if wrap and isinstance(body, dict):
            body = {"events": [body]}
        code, _, answer = call(f"{server.url}{route}", body, token)
        seen.add(code)
        assert code in (200, 202, 413, 422, 429), (code, answer)

    check()
    assert 422 in seen and seen & {200, 202}  # both sides of the contract were reached


def test_http_stream_and_file_give_the_same_scores(
    api: tuple[Pipeline, Server, str], tmp_path: Path
) -> None:
    p, server, token = api
    events = _events(p, 300, 72_000_000)
    # HTTP
    code, _, body = call(f"{server.url}/v1/predict", {"events": events}, token)
    assert code == 200
    http = {x["event_id"]: x["score"] for x in body["predictions"]}
    # the stream
    codec = p.codec("Transaction")
    p.produce(
        [
            (e["card_id"].encode(), v, [])
            for e, v in zip(events, codec.encode_many(events), strict=True)
        ]
    )
    # Earlier tests published to the topic too: a group of its own reads it all.
    total = p.count("Transaction")
    worker = p.settings.worker.model_copy(update={"scoring_group": f"equality-{tmp_path.name}"})
    own = p.settings.model_copy(update={"worker": worker})
    scoring_worker(own).run(max_events=total, idle_timeout=60)
    wanted = {e["event_id"] for e in events}
    decode = p.codec("Prediction").decode_one
    messages = p.read_topic(
        p.settings.topics.predictions,
        len(events),
        counts=lambda m: decode(m.value())["event_id"] in wanted,
    )
    stream = {
        x["event_id"]: x["score"]
        for x in map(decode, (m.value() for m in messages))
        if x["event_id"] in wanted
    }
    # a file
    source, out = tmp_path / "tx.csv", tmp_path / "scores.csv"
    pd.DataFrame(events).to_csv(source, index=False)
    ran = cli_in_process(p, "--json", "score-file", str(source), "--out", str(out))
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["predictions"] == len(events)
    with out.open(newline="") as f:  # float() reads Python's repr back exactly
        from_file = {r["event_id"]: float(r["score"]) for r in csv.DictReader(f)}
    assert len(http) == len(stream) == len(from_file) == len(events)
    for event_id in wanted:
        assert http[event_id] == stream[event_id], event_id
        assert from_file[event_id] == stream[event_id], event_id


def test_score_file_refuses_rows_with_reasons_and_resumes(
    api: tuple[Pipeline, Server, str], tmp_path: Path
) -> None:
    p, _, _ = api
    events = _events(p, 50, 73_000_000)
    rows = [dict(e) for e in events]
    rows[3]["amount"] = -2.0  # a rule
    rows[7]["channel"] = "FAX"  # not a symbol
    source, out = tmp_path / "tx.jsonl", tmp_path / "scores.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ran = cli_in_process(p, "--json", "score-file", str(source), "--out", str(out), "--chunk", "20")
    result = json.loads(ran.stdout)
    assert (result["predictions"], result["refused"]) == (48, 2)
    rejects = [
        json.loads(x) for x in out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()
    ]
    assert [(r["row"], r["field"], r["reason"]) for r in rejects] == [
        (4, "amount", "out_of_range"),
        (8, "channel", "bad_value"),
    ]
    # Resume: cut the run after its first chunk, then --resume scores only the rest.
    progress = out.with_name(out.name + ".progress.json")
    state = json.loads(progress.read_text())
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:18]) + "\n")  # rows 1-20 but the refused rows 4 and 8
    progress.write_text(json.dumps(state | {"rows_done": 20}))
    ran = cli_in_process(
        p, "--json", "score-file", str(source), "--out", str(out), "--chunk", "20", "--resume"
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["resumed_from_row"] == 20
    ids = [json.loads(x)["event_id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(e["event_id"] for i, e in enumerate(events) if i not in (3, 7))
    assert len(out.with_name(out.name + ".rejects.jsonl").read_text().splitlines()) == 2


def test_score_file_resume_after_outputs_written_but_not_recorded_scores_no_row_twice(
    api: tuple[Pipeline, Server, str], tmp_path: Path
) -> None:
    """A run killed after a chunk's rows reached OUT but before its progress file did: the
    resumed run must not write those rows again."""
    p, _, _ = api
    events = _events(p, 50, 74_000_000)
    source, out = tmp_path / "tx.jsonl", tmp_path / "scores.jsonl"
    source.write_text("".join(json.dumps(e) + "\n" for e in events))
    args = ("--json", "score-file", str(source), "--out", str(out), "--chunk", "20")
    assert cli_in_process(p, *args).returncode == 0
    lines = out.read_bytes().splitlines(keepends=True)
    progress = out.with_name(out.name + ".progress.json")
    state = json.loads(progress.read_text())
    # The progress as the first chunk left it; OUT holds every chunk's rows (written later).
    rejects = out.with_name(out.name + ".rejects.jsonl")
    progress.write_text(
        json.dumps(
            state
            | {
                "rows_done": 20,
                "out_bytes": len(b"".join(lines[:20])),
                "rejects_bytes": rejects.stat().st_size,
            }
        )
    )
    ran = cli_in_process(p, *args, "--resume")
    assert ran.returncode == 0, ran.stderr
    ids = [json.loads(x)["event_id"] for x in out.read_text().splitlines()]
    assert sorted(ids) == sorted(e["event_id"] for e in events)  # each row once


def test_score_file_keeps_columns_and_names_each_prediction(
    api: tuple[Pipeline, Server, str], tmp_path: Path
) -> None:
    """--keep-columns: a labelled file keeps its label (and a column named like an output one,
    renamed); each row has its prediction id (hash of event id and version), the model name and
    the scoring time, and JSON lines list the missing features the HTTP answer lists."""
    p, server, token = api
    events = _events(p, 30, 75_000_000)
    labelled = [e | {"is_fraud": i % 2, "score": f"old-{i}"} for i, e in enumerate(events)]
    source = tmp_path / "labelled.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in labelled))
    code, _, body = call(f"{server.url}/v1/predict", {"events": events}, token)
    assert code == 200, body
    http = {x["event_id"]: x for x in body["predictions"]}
    started = int(time.time() * 1000)
    rows = {}
    for name in ("scores.jsonl", "scores.csv"):
        out = tmp_path / name
        args = ("--json", "score-file", str(source), "--out", str(out), "--keep-columns")
        ran = cli_in_process(p, *args)
        assert ran.returncode == 0, ran.stderr
        if name.endswith(".jsonl"):
            rows[name] = {r["event_id"]: r for r in map(json.loads, out.read_text().splitlines())}
        else:
            with out.open(newline="") as f:
                rows[name] = {r["event_id"]: r for r in csv.DictReader(f)}
    ended = int(time.time() * 1000)
    from_jsonl, from_csv = rows["scores.jsonl"], rows["scores.csv"]
    assert sorted(from_jsonl) == sorted(from_csv) == sorted(http)
    for i, e in enumerate(labelled):
        j, c, h = from_jsonl[e["event_id"]], from_csv[e["event_id"]], http[e["event_id"]]
        assert (j["is_fraud"], c["is_fraud"]) == (i % 2, str(i % 2))
        assert (j["input_score"], c["input_score"]) == (f"old-{i}", f"old-{i}")
        assert j["amount"] == e["amount"] and float(c["amount"]) == e["amount"]
        joined = f"{e['event_id']}\x1f{h['model_version']}".encode()  # the documented id
        assert j["prediction_id"] == c["prediction_id"] == sha256(joined).hexdigest()[:32]
        assert j["model_name"] == c["model_name"] == p.settings.model.name
        assert started <= j["scored_at"] <= ended and started <= int(c["scored_at"]) <= ended
        assert j["missing_features"] == h["missing_features"]
        assert c["missing_features"] == ",".join(h["missing_features"])
    assert any(j["missing_features"] for j in from_jsonl.values())  # lists, not only empty


def test_the_api_follows_the_registry_shadow_then_promote(
    api: tuple[Pipeline, Server, str],
) -> None:
    """The same watcher as the workers': a shadow rollout publishes shadow scores for HTTP
    calls too, and a promotion is served without a restart."""
    base, _, token = api
    p = with_two_versions(base, f"api-swap-{uuid.uuid4().hex[:8]}")
    server = Server(create_app(p.settings))
    try:
        events = _events(p, 5, 74_000_000)
        first = call(f"{server.url}/v1/predict", {"events": events}, token)[2]["predictions"]
        assert {x["model_version"] for x in first} == {"1"}
        assert cli_in_process(p, "models", "shadow", "2", "-m", "api follows").returncode == 0
        wanted = {e["event_id"] for e in events}
        decode = p.codec("Prediction").decode_one
        deadline = time.monotonic() + 60
        shadow: list[dict[str, Any]] = []
        while not shadow:
            assert time.monotonic() < deadline, "no shadow scores from HTTP calls"
            call(f"{server.url}/v1/predict", {"events": events}, token)
            shadow = [
                x
                for x in map(
                    decode,
                    (
                        m.value()
                        for m in p.read_topic(p.settings.topics.shadow_predictions, 1, timeout=1)
                    ),
                )
                if x["event_id"] in wanted
            ]
        assert {(x["variant"], x["model_version"]) for x in shadow} == {("shadow", "2")}
        assert cli_in_process(p, "models", "promote", "2", "-m", "shadow agreed").returncode == 0
        deadline = time.monotonic() + 60
        while True:
            got = call(f"{server.url}/v1/predict", {"events": events}, token)[2]["predictions"]
            if {x["model_version"] for x in got} == {"2"}:
                break
            assert time.monotonic() < deadline, "the API still serves v1"
            time.sleep(0.2)
        assert all(x["variant"] == "champion" for x in got)
    finally:
        server.stop()


def test_the_keys_commands(api: tuple[Pipeline, Server, str]) -> None:
    p, server, _ = api
    made = cli_in_process(p, "--json", "api", "keys", "create", "partner-x", "--rate", "5")
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["token"].startswith("ssk_") and key["rate_per_second"] == 5.0
    listed = json.loads(cli_in_process(p, "--json", "api", "keys", "list").stdout)
    mine = next(k for k in listed if k["id"] == key["id"])
    assert "token" not in mine and mine["revoked"] is False
    event = _events(p, 1, 75_000_000)[0]
    assert call(f"{server.url}/v1/predict", event, key["token"])[0] == 200
    assert cli_in_process(p, "api", "keys", "revoke", key["id"]).returncode == 0
    assert call(f"{server.url}/v1/predict", event, key["token"])[0] == 401
    assert cli_in_process(p, "api", "keys", "revoke", "nosuchkey").returncode == 3


class _RefusesAfter:
    """A producer that queues ``n`` events, acknowledges them a little later (as a broker
    does), then refuses the next with a full queue."""

    def __init__(self, n: int) -> None:
        self.n, self.callbacks = n, []

    def produce(self, topic: str, **kw: Any) -> None:
        if len(self.callbacks) >= self.n:
            raise BufferError("Local: Queue full")
        self.callbacks.append(kw["on_delivery"])
        if len(self.callbacks) == self.n:
            threading.Timer(0.3, lambda: [cb(None, None) for cb in self.callbacks]).start()

    def poll(self, timeout: float = 0) -> int:  # the API's delivery thread serves reports
        time.sleep(min(timeout, 0.05))
        return 0

    def flush(self, timeout: float = 0) -> int:
        return 0


def test_a_send_refused_part_way_reports_every_event_that_was_written(
    api: tuple[Pipeline, Server, str],
) -> None:
    """The events queued before the refusal are delivered after it: the 503 lists them as
    accepted, so a client retries only the others (no duplicates, no losses)."""
    p, server, _ = api
    events = _events(p, 5, 75_000_000)
    state = server.app.state.api
    real = state.producer
    state.producer = _RefusesAfter(3)
    try:
        accepted, why = state.publish(events, "api:test")
    finally:
        state.producer = real
    assert "refused" in why
    assert accepted == [e["event_id"] for e in events[:3]]
