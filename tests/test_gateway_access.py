"""Who may send which events to the collector, and the erasure endpoint, against the real
gateway and the real embedded broker: a refused request puts nothing on Kafka."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from confluent_kafka import Consumer, TopicPartition

from connectors.embedded import ensure_topics
from gateway import GatewayConfig, serve_in_thread, sign_token
from models.events import parse_event
from streamrec.errors import ConfigError

pytestmark = pytest.mark.integration

SECRET = "access-test-secret-0123456789abc"
OLD_KEY = "backend-key-old-0123456789abcdef"
NEW_KEY = "backend-key-new-0123456789abcdef"


@pytest.fixture(scope="module")
def topic(kafka):
    name = f"acc-{uuid.uuid4().hex[:8]}"
    ensure_topics(kafka.bootstrap, {name: 1})  # one partition: arrival order is send order
    return name


@pytest.fixture(scope="module")
def gateway(kafka, redis_server, topic):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
           "STREAMREC_PREFIX": f"acc{uuid.uuid4().hex[:6]}", "STREAMREC_EVENTS_TOPIC": topic,
           "STREAMREC_GATEWAY_SECRET": SECRET, "STREAMREC_GATEWAY_API_KEYS": f"{OLD_KEY}, {NEW_KEY}",
           "STREAMREC_GATEWAY_RATE": "1000", "STREAMREC_GATEWAY_BURST": "1000"}
    with serve_in_thread(env, demo=False) as handle:
        yield handle


class Topic:
    """Reads the test topic from where the last read stopped."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t{uuid.uuid4().hex}",
                                  "enable.auto.commit": False})
        self.consumer.assign([TopicPartition(topic, 0, 0)])

    def until(self, marker_event_id: str, timeout: float = 15.0) -> list[dict]:
        """Every event up to and including the one with ``marker_event_id``."""
        out, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            msg = self.consumer.poll(0.2)
            if msg is None or msg.error():
                continue
            event = parse_event(msg.value()).to_dict()
            event["_key"] = msg.key().decode()
            out.append(event)
            if event["event_id"] == marker_event_id:
                return out
        raise AssertionError(f"marker {marker_event_id} never arrived; got {out}")


@pytest.fixture(scope="module")
def reader(kafka, topic):
    t = Topic(kafka.bootstrap, topic)
    yield t
    t.consumer.close()


def _event(user: str, etype: str = "click", **fields) -> dict:
    event = {"event_id": f"e-{uuid.uuid4().hex[:10]}", "user_id": user, "type": etype,
             "ts": time.time(), **fields}
    if etype in ("click", "view"):
        event.setdefault("item_id", "p1")
    return event


def _post(gateway, events, token: str | None = None, how: str = "header", **kw) -> httpx.Response:
    headers, params = {}, {}
    if token is not None:
        if how == "header":
            headers["Authorization"] = f"Bearer {token}"
        else:
            params["token"] = token
    return httpx.post(f"{gateway.url}/v1/events", json=events, headers=headers, params=params, **kw)


def _marker(gateway) -> str:
    marker = _event("anon-marker")
    assert _post(gateway, [marker]).status_code == 202
    return marker["event_id"]


def test_anonymous_ids_post_without_a_token(gateway, reader):
    r = _post(gateway, [_event("anon-7"), _event("anon-7", "view")])
    assert r.status_code == 202 and r.json()["accepted"] == 2
    got = reader.until(_marker(gateway))
    assert [e["user_id"] for e in got] == ["anon-7", "anon-7", "anon-marker"]


@pytest.mark.parametrize("events", [
    pytest.param([_event("anon-1"), _event("alice")], id="identified-user"),
    pytest.param([_event("anon-1", "erase")], id="anonymous-erase"),
    pytest.param([_event("anon-1", "consent", value=0)], id="anonymous-consent"),
    pytest.param([_event("anon-1", consent=False)], id="consent-field"),
])
def test_without_credentials_the_whole_request_is_refused_with_401(gateway, reader, events):
    r = _post(gateway, events)
    assert r.status_code == 401, r.text
    assert r.json()["error"] == "token:missing" and "token" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert [e["user_id"] for e in reader.until(_marker(gateway))] == ["anon-marker"]


@pytest.mark.parametrize("how", ["header", "query"])
def test_another_users_token_is_refused_with_403(gateway, reader, how):
    alice = sign_token("alice", SECRET, ttl=600)
    for events in ([_event("alice"), _event("bob")], [_event("bob", "erase")],
                   [_event("anon-3", "consent", value=1)]):
        r = _post(gateway, events, alice, how)
        assert r.status_code == 403 and r.json()["error"] == "token:other_user", r.text
    assert [e["user_id"] for e in reader.until(_marker(gateway))] == ["anon-marker"]


def test_a_users_token_sends_their_events_and_consent(gateway, reader):
    alice = sign_token("alice", SECRET, ttl=600)
    events = [_event("alice"), _event("alice", "consent", value=0), _event("anon-4")]
    r = _post(gateway, events, alice, "query")
    assert r.status_code == 202 and r.json()["accepted"] == 3
    got = reader.until(events[-1]["event_id"])
    assert [(e["user_id"], e["type"]) for e in got] == [
        ("alice", "click"), ("alice", "consent"), ("anon-4", "click")]


def test_bad_credentials_are_401(gateway, reader):
    for token, how in [("forged", "header"), (sign_token("alice", SECRET, ttl=-1), "header"),
                       (NEW_KEY, "query"),  # API keys only in the header, never in URLs
                       ("backend-key-other-0123456789abcd", "header")]:
        r = _post(gateway, [_event("anon-5")], token, how)
        assert r.status_code == 401, (token, r.text)
    assert [e["user_id"] for e in reader.until(_marker(gateway))] == ["anon-marker"]


@pytest.mark.parametrize("key", [OLD_KEY, NEW_KEY])
def test_every_configured_api_key_sends_for_any_user(gateway, reader, key):
    events = [_event("carol"), _event("dave", "erase"), _event("anon-6", "consent", value=1)]
    r = _post(gateway, events, key)
    assert r.status_code == 202 and r.json()["accepted"] == 3
    got = reader.until(events[-1]["event_id"])
    assert [e["user_id"] for e in got] == ["carol", "dave", "anon-6"]


def test_erasure_needs_the_users_token_or_an_api_key(gateway, reader):
    url = f"{gateway.url}/v1/users/alice"
    assert httpx.delete(url).status_code == 401
    bob = {"Authorization": f"Bearer {sign_token('bob', SECRET, ttl=600)}"}
    assert httpx.delete(url, headers=bob).status_code == 403
    assert [e["user_id"] for e in reader.until(_marker(gateway))] == ["anon-marker"]

    by_user = httpx.delete(url, params={"token": sign_token("alice", SECRET, ttl=600)})
    by_backend = httpx.delete(url, headers={"Authorization": f"Bearer {OLD_KEY}"})
    assert by_user.status_code == by_backend.status_code == 202
    receipts = [by_user.json()["receipt"], by_backend.json()["receipt"]]
    assert len(set(receipts)) == 2 and all(len(r) >= 16 for r in receipts)
    got = reader.until(f"erase-{receipts[1]}")
    assert [(e["_key"], e["user_id"], e["type"], e["context"]["receipt"]) for e in got] == [
        ("alice", "alice", "erase", receipts[0]), ("alice", "alice", "erase", receipts[1])]
    health = httpx.get(f"{gateway.url}/healthz").json()["collector"]
    assert health["erasures"] >= 2 and health["denied"] >= 2


def test_the_event_limit_counts_events_not_requests(kafka, redis_server, topic):
    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
           "STREAMREC_EVENTS_TOPIC": topic, "STREAMREC_GATEWAY_SECRET": SECRET,
           "STREAMREC_GATEWAY_API_KEYS": NEW_KEY, "STREAMREC_GATEWAY_MAX_BATCH": "10",
           "STREAMREC_GATEWAY_EVENT_RATE": "0.5", "STREAMREC_GATEWAY_EVENT_BURST": "15"}
    with serve_in_thread(env, demo=False) as gw:
        batch = [_event("anon-8") for _ in range(10)]
        assert _post(gw, batch).status_code == 202
        refused = _post(gw, batch)  # 2 requests, far under 20/s, but 20 events > 15
        assert refused.status_code == 429 and "too many events" in refused.json()["error"]
        assert int(refused.headers["retry-after"]) >= 1
        assert _post(gw, batch[:3]).status_code == 202  # what is left of the burst
        # The site's back end relays many users' events: not limited per client.
        for _ in range(3):
            assert _post(gw, batch, NEW_KEY).status_code == 202


def test_limits_and_keys_are_checked_at_start():
    base = {"STREAMREC_GATEWAY_SECRET": SECRET}
    with pytest.raises(ConfigError, match="STREAMREC_GATEWAY_EVENT_BURST"):
        GatewayConfig.from_env({**base, "STREAMREC_GATEWAY_EVENT_BURST": "100"})  # < 500 per batch
    with pytest.raises(ConfigError, match="at least 16 characters"):
        GatewayConfig.from_env({**base, "STREAMREC_GATEWAY_API_KEYS": f"{NEW_KEY},short"})
    config = GatewayConfig.from_env({**base, "STREAMREC_GATEWAY_API_KEYS": f"{OLD_KEY},{NEW_KEY}",
                                     "STREAMREC_GATEWAY_ANONYMOUS_PREFIX": ""})
    assert config.api_keys == (OLD_KEY, NEW_KEY) and config.anonymous_prefix == ""
    assert OLD_KEY not in repr(config)


def test_openapi_describes_access_and_erasure(gateway):
    doc = httpx.get(f"{gateway.url}/openapi.json").json()
    delete = doc["paths"]["/v1/users/{user_id}"]["delete"]
    assert set(delete["responses"]) >= {"202", "401", "403", "503"}
    assert "erasures" in delete["description"]
    post = doc["paths"]["/v1/events"]["post"]
    assert {"401", "403", "429"} <= set(post["responses"]) and post["security"]
    assert "apiKey" in doc["components"]["securitySchemes"]
