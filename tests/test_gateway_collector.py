"""POST /v1/events against a real broker: validation shared with the dataflow, Kafka key,
server-side ts and skew correction, limits (size, batch, rate), CORS, and 503 (not a
hang) when Kafka is unreachable."""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.embedded import ensure_topics, free_port
from gateway import serve_in_thread
from models.events import parse_event

pytestmark = pytest.mark.integration

SECRET = "collector-test-secret-0123456789"
API_KEY = "collector-test-backend-key-0123"
BACKEND = {"Authorization": f"Bearer {API_KEY}"}


def _env(kafka, redis_server, topic, **extra) -> dict:
    return {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
            "STREAMREC_PREFIX": f"col{uuid.uuid4().hex[:6]}", "STREAMREC_EVENTS_TOPIC": topic,
            "STREAMREC_GATEWAY_SECRET": SECRET, "STREAMREC_GATEWAY_API_KEYS": API_KEY, **extra}


@pytest.fixture(scope="module")
def topic(kafka):
    name = f"col-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, {name: 2})
    return name


@pytest.fixture(scope="module")
def gateway(kafka, redis_server, topic):
    env = _env(kafka, redis_server, topic, STREAMREC_GATEWAY_CORS_ORIGINS="https://shop.example",
               STREAMREC_GATEWAY_MAX_BODY="4096", STREAMREC_GATEWAY_MAX_BATCH="20")
    with serve_in_thread(env, demo=False) as handle:
        yield handle


def _consume(bootstrap: str, topic: str, want: int, timeout: float = 15.0) -> list:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t{uuid.uuid4().hex}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(2)])
    out, deadline = [], time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out


def _event(n: int, user: str = "u1", **fields) -> dict:
    return {"event_id": f"e{n}-{uuid.uuid4().hex[:6]}", "user_id": user, "type": "click",
            "item_id": f"p{n}", "ts": time.time(), **fields}


def test_valid_events_reach_kafka_keyed_by_user_and_bad_ones_are_explained(gateway, kafka, topic):
    good = [_event(1, "alice"), _event(2, "bob", category="shoes"),
            {"event_id": "no-ts", "user_id": "carol", "type": "search", "context": {"query": "red"}}]
    bad = [{"event_id": "x", "user_id": "u", "type": "teleport", "ts": time.time()},
           {"event_id": "y", "user_id": "u", "type": "view", "ts": time.time()},
           {"event_id": "z", "type": "view", "item_id": "p"},
           {"event_id": "f", "user_id": "u", "type": "view", "item_id": "p", "ts": time.time() + 86400},
           "not an object"]
    # text/plain, as the tracker's sendBeacon sends it
    r = httpx.post(f"{gateway.url}/v1/events", content=orjson.dumps(good + bad),
                   headers={"Content-Type": "text/plain;charset=UTF-8", **BACKEND})
    assert r.status_code == 202, r.text
    body = r.json()
    assert (body["accepted"], body["rejected"]) == (3, 5)
    assert [(e["index"], e["reason"]) for e in body["errors"]] == [
        (3, "type:unknown"), (4, "item_id:missing"), (5, "user_id:missing"), (6, "ts:in_future"),
        (7, "event:not_object")]
    messages = _consume(kafka.bootstrap, topic, 3)
    by_key = {m.key().decode(): m for m in messages}
    assert set(by_key) == {"alice", "bob", "carol"}
    for m in messages:
        event = parse_event(m.value())  # the dataflow's own parser accepts every one
        assert event.user_id == m.key().decode()
        assert any(h == "produced_at" for h, _ in m.headers())
    carol = parse_event(by_key["carol"].value())
    assert abs(carol.ts - time.time()) < 30  # stamped by the server
    assert parse_event(by_key["bob"].value()).category == "shoes"


def test_a_single_event_object_is_accepted(gateway):
    r = httpx.post(f"{gateway.url}/v1/events", json=_event(3, "anon-1"))
    assert r.status_code == 202 and r.json()["accepted"] == 1


def test_client_clock_skew_is_corrected_with_sent_at(kafka, redis_server):
    # This client's clock runs two hours behind the server's.
    skew = 7200.0
    topic = f"skew-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 2})
    with serve_in_thread(_env(kafka, redis_server, topic), demo=False) as gw:
        client_now = time.time() - skew
        r = httpx.post(f"{gw.url}/v1/events", params={"sent_at": f"{client_now:.3f}"},
                       json=[_event(1, "anon-skew", ts=client_now - 10.0)])
        assert r.status_code == 202 and r.json()["accepted"] == 1
    (msg,) = _consume(kafka.bootstrap, topic, 1)
    assert abs(parse_event(msg.value()).ts - (time.time() - 10.0)) < 5.0


def test_body_and_batch_limits(gateway):
    big = orjson.dumps([_event(1, "anon-1", context={"pad": "x" * 5000})])
    r = httpx.post(f"{gateway.url}/v1/events", content=big)
    assert r.status_code == 413
    r = httpx.post(f"{gateway.url}/v1/events", json=[_event(n, "anon-1") for n in range(21)])
    assert r.status_code == 413 and "at most 20" in r.json()["error"]
    r = httpx.post(f"{gateway.url}/v1/events", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"] == "payload:not_json"


def test_cors_allows_only_configured_origins(gateway):
    ok = httpx.options(f"{gateway.url}/v1/events", headers={
        "Origin": "https://shop.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == "https://shop.example"
    other = httpx.post(f"{gateway.url}/v1/events", json=_event(1, "anon-1"),
                       headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers


def test_per_client_rate_limit(kafka, redis_server, topic):
    env = _env(kafka, redis_server, topic, STREAMREC_GATEWAY_RATE="0.2", STREAMREC_GATEWAY_BURST="3")
    with serve_in_thread(env, demo=False) as gw, httpx.Client(base_url=gw.url) as client:
        responses = [client.post("/v1/events", json=_event(n, "anon-1")) for n in range(5)]
        assert [r.status_code for r in responses] == [202, 202, 202, 429, 429]
        assert int(responses[-1].headers["retry-after"]) >= 1
        assert "rate limit" in responses[-1].json()["error"]


def test_unreachable_kafka_gives_503_with_retry_after_not_a_hang(redis_server):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    env = {"KAFKA_BOOTSTRAP_SERVERS": dead, "REDIS_URL": redis_server.url,
           "STREAMREC_GATEWAY_SECRET": SECRET}
    with serve_in_thread(env, demo=False) as gw:
        started = time.monotonic()
        r = httpx.post(f"{gw.url}/v1/events", json=[_event(1, "anon-1")], timeout=10)
        assert time.monotonic() - started < 1.0
        assert r.status_code == 503 and int(r.headers["retry-after"]) > 0
        health = httpx.get(f"{gw.url}/healthz").json()
        assert health["kafka"]["available"] is False and dead in health["kafka"]["problem"]
        assert httpx.get(f"{gw.url}/readyz").status_code == 503


def test_queued_events_are_flushed_on_shutdown(kafka, redis_server):
    topic = f"flush-{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 2})
    with serve_in_thread(_env(kafka, redis_server, topic), demo=False) as gw:
        r = httpx.post(f"{gw.url}/v1/events", json=[_event(n, f"u{n}") for n in range(200)],
                       headers=BACKEND)
        assert r.json()["accepted"] == 200
    # stop() returned: the producer was flushed before the server exited.
    assert len(_consume(kafka.bootstrap, topic, 200)) == 200
