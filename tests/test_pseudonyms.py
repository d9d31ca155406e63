"""Pseudonymous user ids (STREAMREC_USER_ID_KEY): the parse step swaps every user id for
a keyed hash, so after a real run Redis holds no clear id anywhere, while the gateway
still serves a user's list by the clear id."""

from __future__ import annotations

import time
import uuid

import httpx
import orjson
import pytest
import redis
from confluent_kafka import Producer

from bench.workload import expected_full
from connectors.embedded import ensure_topics
from workloads.traffic import TrafficConfig, generate_catalog, generate_events
from connectors.worker import WorkerGroup
from gateway import serve_in_thread, sign_token
from operators.messages import DeadLetter, Envelope
from operators.parse import EventParser
from streamrec.errors import ConfigError
from streamrec.pseudonyms import PSEUDONYM_PREFIX, UserPseudonyms
from streamrec.settings import Settings

KEY = "pseudonym-test-key-0123456789abcdef"
SECRET = "pseudonym-gateway-secret-0123456789"
API_KEY = "pseudonym-backend-key-0123456789"
MARK = "customer-"  # every clear user id in the run contains it; nothing else does


def test_the_parser_replaces_user_ids_and_redacts_dead_letters():
    parser = EventParser.from_settings(Settings(user_id_key=KEY), None)
    names = UserPseudonyms(KEY)
    event, _ = parser(Envelope(b'{"event_id":"e","ts":1732680000,"user_id":"alice","type":"view",'
                               b'"item_id":"p"}', None))
    assert event.user_id == names("alice") and event.user_id.startswith(PSEUDONYM_PREFIX)
    assert len(event.user_id) == len(PSEUDONYM_PREFIX) + 32
    dead = parser(Envelope(b'{"event_id":"e","ts":1,"user_id":"alice","type":"view"}', None))
    assert isinstance(dead, DeadLetter) and dead.reason == "ts:out_of_range"
    assert b"alice" not in dead.payload and names("alice").encode() in dead.payload
    # Without a key nothing changes: the documented Redis contract keeps clear ids.
    plain, _ = EventParser.from_settings(Settings(), None)(Envelope(
        {"event_id": "e", "ts": 1732680000, "user_id": "alice", "type": "view", "item_id": "p"}, None))
    assert plain.user_id == "alice"


def test_the_key_is_checked_and_never_shown():
    with pytest.raises(ConfigError, match="STREAMREC_USER_ID_KEY is shorter than 16"):
        Settings.from_env({"STREAMREC_USER_ID_KEY": "short"})
    s = Settings.from_env({"STREAMREC_USER_ID_KEY": KEY})
    assert s.user_id_key == KEY and KEY not in repr(s) and KEY not in str(s.redacted())
    assert UserPseudonyms(KEY)("bob") != UserPseudonyms(KEY + "x")("bob")  # another key, another id


def _everything_in_redis(client: redis.Redis, prefix: str) -> list[bytes]:
    """Every key name and every stored byte under ``prefix``, whatever the key's type."""
    out: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        out.append(key)
        kind = client.type(key)
        if kind == b"string":
            out.append(client.get(key))
        elif kind == b"stream":
            for entry_id, fields in client.xrange(key):
                out.extend([entry_id, *fields.keys(), *fields.values()])
        elif kind == b"hash":
            for k, v in client.hgetall(key).items():
                out.extend([k, v])
        elif kind == b"list":
            out.extend(client.lrange(key, 0, -1))
        elif kind in (b"set", b"zset"):
            out.extend(client.smembers(key) if kind == b"set" else client.zrange(key, 0, -1))
        else:
            raise AssertionError(f"unexpected key type {kind!r} at {key!r}")
    return out


@pytest.mark.integration
def test_after_a_real_run_redis_holds_no_clear_user_id(kafka, redis_server, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic, prefix = f"pseu-{run}", f"pseu{run}"
    ensure_topics(kafka.bootstrap, {topic: 1, f"{topic}-items": 1, f"{topic}.dlq": 1})
    cfg = TrafficConfig(n_users=25, n_items=120, n_categories=4, seed=11, start_ts=time.time() - 40 * 86400)
    events = list(generate_events(cfg, 1500))
    for e in events:
        e["user_id"] = f"{MARK}{e['user_id']}"
    # Users who end with a list: not withdrawn, and (simpler to wait for) never erased.
    controlled = {e["user_id"] for e in events if e["type"] in ("erase", "consent")}
    users = sorted(set(expected_full(events)) - controlled)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
    for item in generate_catalog(cfg):
        producer.produce(f"{topic}-items", key=item["item_id"].encode(), value=orjson.dumps(item))
    for e in events:
        producer.produce(topic, key=e["user_id"].encode(), value=orjson.dumps(e))
    # Bad events that name a user: their dead letters must not name them either.
    for n, user in enumerate(users[:3]):
        producer.produce(topic, key=user.encode(), value=orjson.dumps(
            {"event_id": f"bad-{n}", "ts": time.time(), "user_id": user, "type": "teleport"}))
    assert producer.flush(30) == 0

    env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": redis_server.url,
           "STREAMREC_EVENTS_TOPIC": topic, "STREAMREC_ITEMS_TOPIC": f"{topic}-items",
           "STREAMREC_PREFIX": prefix, "STREAMREC_USER_ID_KEY": KEY}
    client = redis.Redis.from_url(redis_server.url)
    names = UserPseudonyms(KEY)
    erased = users[-1]
    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    try:
        with serve_in_thread({**env, "STREAMREC_GATEWAY_SECRET": SECRET,
                              "STREAMREC_GATEWAY_API_KEYS": API_KEY}, demo=False) as gw:
            # A few live events through the collector too (the back end's API key).
            live = [{"event_id": f"live-{n}", "user_id": users[0], "type": "click",
                     "item_id": f"p{n}", "ts": time.time()} for n in range(3)]
            live.append({"event_id": "live-anon", "user_id": f"anon-{MARK}7", "type": "view",
                         "item_id": "p1", "ts": time.time()})
            r = httpx.post(f"{gw.url}/v1/events", json=live, headers={"Authorization": f"Bearer {API_KEY}"})
            assert r.status_code == 202 and r.json()["accepted"] == 4
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not (
                    all(client.exists(f"{prefix}:latest:{names(u)}") for u in users)
                    and client.xlen(f"{prefix}:dlq") >= 3):
                assert group.alive(), group.log_tail()
                time.sleep(0.2)
            missing = [u for u in users if not client.exists(f"{prefix}:latest:{names(u)}")]
            assert not missing, (missing, sorted(client.scan_iter(match=f"{prefix}:latest:*"))[:5],
                                 client.xlen(f"{prefix}:dlq"), group.log_tail())
            # The gateway serves the list by the clear id (it hashes with the same key).
            token = sign_token(users[0], SECRET, ttl=600)
            got = httpx.get(f"{gw.url}/v1/users/{users[0]}/recommendations", params={"token": token})
            assert got.status_code == 200, got.text
            assert got.json()["user_id"] == names(users[0]) and got.json()["items"]
            assert got.json()["trigger_event_id"] == "live-2"
            # Erasure by clear id reaches the pseudonymous state.
            r = httpx.delete(f"{gw.url}/v1/users/{erased}", headers={"Authorization": f"Bearer {API_KEY}"})
            assert r.status_code == 202
            deadline = time.monotonic() + 30
            while client.exists(f"{prefix}:latest:{names(erased)}") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not client.exists(f"{prefix}:latest:{names(erased)}")
            gone = httpx.get(f"{gw.url}/v1/users/{erased}/recommendations",
                             params={"token": sign_token(erased, SECRET, ttl=600)})
            assert gone.status_code == 404
        assert group.alive(), group.log_tail()
    finally:
        group.stop()

    stored = _everything_in_redis(client, prefix)
    client.close()
    assert len(stored) > 3 * len(users)  # lists, profiles, the recs stream and dead letters
    leaks = [b for b in stored if MARK.encode() in b]
    assert not leaks, leaks[:3]
    assert any(names(users[0]).encode() in b for b in stored)
