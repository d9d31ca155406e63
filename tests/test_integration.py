"""The real thing: embedded broker and Redis, the worker started as an operator would
(`python -m bytewax.run dataflows.recommend`), results read back from Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid

import orjson
import pytest
from confluent_kafka import Producer

from bench.workload import expected_full
from connectors.embedded import ensure_topics
from workloads.traffic import TrafficConfig, generate_catalog, generate_events
from connectors.worker import WorkerGroup

pytestmark = pytest.mark.integration

NOW = time.time()

# Ten-plus kinds of broken input, each with the reason it must be filed under.
BAD_EVENTS: list[tuple[bytes | None, str]] = [
    (b"this is not json", "payload:not_json"),
    (b'{"event_id": "b1", "ts": NaN, "user_id": "x", "type": "view", "item_id": "p"}', "payload:not_json"),
    (b'["a", "list"]', "event:not_object"),
    (b'{"ts": 1732680000, "user_id": "x", "type": "view", "item_id": "p"}', "event_id:missing"),
    (b'{"event_id": 42, "ts": 1732680000, "user_id": "x", "type": "view", "item_id": "p"}', "event_id:not_string"),
    (b'{"event_id": "b2", "ts": 1732680000, "type": "view", "item_id": "p"}', "user_id:missing"),
    (b'{"event_id": "b3", "ts": 1732680000, "user_id": "x", "type": "teleport", "item_id": "p"}', "type:unknown"),
    (b'{"event_id": "b4", "ts": "last tuesday", "user_id": "x", "type": "view", "item_id": "p"}', "ts:bad_iso8601"),
    (b'{"event_id": "b5", "ts": 1732680000000, "user_id": "x", "type": "view", "item_id": "p"}', "ts:out_of_range"),
    (b'{"event_id": "b6", "ts": 1732680000, "user_id": "x", "type": "view"}', "item_id:missing"),
    (b'{"event_id": "b7", "ts": 1732680000, "user_id": "x", "type": "view", "item_id": "p", "value": "big"}', "value:not_number"),
    (b'{"event_id": "' + b"x" * 100_000 + b'", "ts": 1}', "payload:too_large"),
    (b'{"event_id": "b8", "ts": 1732680000, "user_id": "' + b"u" * 300 + b'", "type": "view", "item_id": "p"}', "user_id:bad_length"),
    (b"", "payload:not_json"),
    (None, "payload:empty"),
    (b"\xff\xfe\x00garbage", "payload:not_json"),
    (b'{"event_id": "b9", "ts": 99999999999, "user_id": "x", "type": "view", "item_id": "p"}', "ts:out_of_range"),
    (b'{"event_id": "b10", "ts": 1732680000, "user_id": "x", "type": "consent", "value": 7}', "value:consent_needs_0_or_1"),
    (b'{"event_id": "b11", "ts": 1732680000, "user_id": "x", "type": "impression", "context": {"items": [1, 2]}}', "context.items:not_list_of_strings"),
    (b"[" * 50_000, "payload:not_json"),  # orjson refuses deep nesting
]


def _produce(bootstrap: str, topic: str, messages) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for key, value in messages:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0


def _last_answered(events: list[dict], history: list[dict]) -> dict:
    """The last of ``events`` that gets a list of its own, given everything sent so far
    (``history``): an event after its user withdrew consent, or erased, gets none. The
    generated traffic depends on the clock, so some runs end on such an event."""
    answered = expected_full(history)
    return next(e for e in reversed(events) if answered.get(e["user_id"]) == e["event_id"])


def _events(n: int, seed: int = 5):
    cfg = TrafficConfig(n_users=40, n_items=200, n_categories=5, seed=seed, start_ts=NOW - 40 * 86400)
    return generate_catalog(cfg), list(generate_events(cfg, n))


def _env(kafka, redis_server, topic: str, prefix: str, **extra) -> dict:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "REDIS_URL": redis_server.url,
        "STREAMREC_EVENTS_TOPIC": topic,
        "STREAMREC_ITEMS_TOPIC": f"{topic}-items",
        "STREAMREC_PREFIX": prefix,
        **extra,
    }


def _wait_for(predicate, workers: WorkerGroup, timeout: float = 90.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if not workers.alive():
            pytest.fail(f"worker died while waiting for {what}:\n{workers.log_tail()}")
        time.sleep(0.3)
    pytest.fail(f"timed out waiting for {what}:\n{workers.log_tail()}")


KINDS = {"covis", "session", "category", "segment", "trending", "content", "knn", "seen", "mf",
         "recent", "new"}  # "new": catalog records the worker read after events began


@pytest.mark.parametrize("processes, workers", [(1, 1), (2, 1), (1, 2)],
                         ids=["1-process", "2-processes", "1-process-2-workers"])
def test_worker_writes_a_list_for_every_user_and_files_bad_input(
    kafka, redis_server, redis_client, unique_topic, tmp_path, processes, workers
):
    topic, prefix = unique_topic, f"it{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 2, f"{topic}-items": 1, f"{topic}.dlq": 1})
    catalog, events = _events(600)
    _produce(kafka.bootstrap, f"{topic}-items",
             [(i["item_id"].encode(), orjson.dumps(i)) for i in catalog])
    mixed = []
    for n, ev in enumerate(events):
        mixed.append((ev["user_id"].encode(), orjson.dumps(ev)))
        if n % 30 == 0 and n // 30 < len(BAD_EVENTS):
            mixed.append((b"bad", BAD_EVENTS[n // 30][0]))
    _produce(kafka.bootstrap, topic, mixed)
    # Every user the flow answers (users who withdrew consent for good get no list).
    users = set(expected_full(events))
    group = WorkerGroup(_env(kafka, redis_server, topic, prefix), processes=processes,
                        workers=workers, log_dir=tmp_path / "logs").start()
    try:
        try:
            _wait_for(lambda: all(redis_client.exists(f"{prefix}:latest:{u}") for u in users)
                      and redis_client.xlen(f"{prefix}:dlq") >= len(BAD_EVENTS),
                      group, what="a latest list for every user and every dead letter")
        except pytest.fail.Exception as ex:
            missing = sorted(u for u in users if not redis_client.exists(f"{prefix}:latest:{u}"))
            dead = redis_client.xlen(f"{prefix}:dlq")
            raise AssertionError(f"users without a list: {missing}; dead letters {dead}/"
                                 f"{len(BAD_EVENTS)}\n{ex}") from None
        time.sleep(1.0)
        assert group.alive(), group.log_tail()
    finally:
        group.stop()
    logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.log"))
    assert "streamrec worker" in logs and "CONFWARN" not in logs  # no librdkafka noise

    # The output contract, field by field.
    entries = redis_client.xrange(f"{prefix}:recs", count=50)
    assert entries
    empty = 0
    for _, fields in entries:
        assert {b"user_id", b"trigger_event_id", b"event_ts", b"emitted_at", b"items", b"strategy",
                b"model_version", b"rec_id", b"variant", b"propensity"} <= set(fields)
        items = orjson.loads(fields[b"items"])
        if not items:
            # Only in a fresh system's first moments, for a user with no item of their own
            # yet (a search): nothing is known to recommend.
            assert fields[b"strategy"] == b"recent"
            empty += 1
            continue
        assert all(set(i) == {"item_id", "score", "reason"} for i in items)
        assert all(i["reason"]["kind"] in KINDS for i in items)
        assert float(fields[b"emitted_at"]) >= float(fields[b"event_ts"]) - 3600
    assert empty <= 2, f"{empty} empty lists among the first {len(entries)}"
    last_by_user = {}
    for e in events:
        last_by_user[e["user_id"]] = e["event_id"]
    for u in list(users)[:10]:
        latest = orjson.loads(redis_client.get(f"{prefix}:latest:{u}"))
        assert latest["user_id"] == u and len(latest["items"]) > 0
        profile = orjson.loads(redis_client.get(f"{prefix}:profile:{u}"))
        assert profile["user_id"] == u and profile["events"] > 0

    # Every broken input is in the DLQ with its reason, and nothing else is.
    dlq = redis_client.xrange(f"{prefix}:dlq")
    reasons = sorted(f[b"reason"].decode() for _, f in dlq)
    expected = sorted(r for _, r in BAD_EVENTS)
    assert len(reasons) == len(expected)
    assert reasons == expected
    for _, f in dlq:
        assert len(f[b"payload"]) <= 2048 and f[b"source"] == b"events"

    # ... and in the Kafka dead-letter topic, with the reason in a header.
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": kafka.bootstrap, "group.id": "dlq-check",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(f"{topic}.dlq", 0, 0)])
    kafka_reasons = []
    deadline = time.monotonic() + 20
    while len(kafka_reasons) < len(BAD_EVENTS) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            kafka_reasons.append(dict(msg.headers())["reason"].decode())
    consumer.close()
    assert sorted(kafka_reasons) == expected


def test_ten_workers_with_sixteen_rank_shards_answer_every_user_last_event(
    kafka, redis_server, redis_client, unique_topic, tmp_path
):
    # Ranking is keyed by rank shard; with STREAMREC_RANK_SHARDS above the default 8, a
    # cluster of ten workers (two processes of five, more workers than the default shard
    # count) spreads the shards over more than eight workers, and every user's latest
    # list answers their last event.
    topic, prefix = unique_topic, f"mw{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 4, f"{topic}-items": 1, f"{topic}.dlq": 1})
    catalog, events = _events(500, seed=11)
    _produce(kafka.bootstrap, f"{topic}-items",
             [(i["item_id"].encode(), orjson.dumps(i)) for i in catalog])
    _produce(kafka.bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in events])
    last = expected_full(events)
    users = set(last)
    env = _env(kafka, redis_server, topic, prefix, STREAMREC_RANK_SHARDS="16")
    group = WorkerGroup(env, processes=2, workers=5, log_dir=tmp_path / "logs").start()
    try:
        _wait_for(lambda: all(redis_client.exists(f"{prefix}:latest:{u}") for u in users),
                  group, timeout=120.0, what="a latest list for every user with ten workers")
        _wait_for(lambda: all(orjson.loads(redis_client.get(f"{prefix}:latest:{u}"))
                              ["trigger_event_id"] == last[u] for u in users),
                  group, timeout=60.0, what="every latest list to answer the user's last event")
        assert group.alive(), group.log_tail()
    finally:
        group.stop()
    lists = [orjson.loads(redis_client.get(f"{prefix}:latest:{u}")) for u in users]
    assert sum(1 for li in lists if li["items"]) >= len(users) - 2
    assert redis_client.xlen(f"{prefix}:recs") >= len(users)


def test_sigkill_and_restart_with_recovery_keeps_profile_state(
    kafka, redis_server, redis_client, unique_topic, tmp_path
):
    topic, prefix = unique_topic, f"rc{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 1, f"{topic}-items": 1, f"{topic}.dlq": 1})
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    _, events = _events(800, seed=11)
    first, second = events[:500], events[500:]
    env = _env(kafka, redis_server, topic, prefix)
    _produce(kafka.bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in first])
    workers = WorkerGroup(env, recovery_dir=recovery, snapshot_secs=1, log_dir=tmp_path / "l1").start()
    last = _last_answered(first, first)
    try:
        _wait_for(lambda: redis_client.exists(f"{prefix}:latest:{last['user_id']}")
                  and orjson.loads(redis_client.get(f"{prefix}:latest:{last['user_id']}"))
                  ["trigger_event_id"] == last["event_id"], workers, what="the first half")
        time.sleep(3.0)  # let at least one snapshot cover the first half
    finally:
        workers.kill()  # SIGKILL: no clean shutdown

    _produce(kafka.bootstrap, topic, [(e["user_id"].encode(), orjson.dumps(e)) for e in second])
    workers = WorkerGroup(env, recovery_dir=recovery, snapshot_secs=1, log_dir=tmp_path / "l2").start()
    try:
        last = _last_answered(second, events)
        _wait_for(lambda: redis_client.exists(f"{prefix}:latest:{last['user_id']}")
                  and orjson.loads(redis_client.get(f"{prefix}:latest:{last['user_id']}"))
                  ["trigger_event_id"] == last["event_id"], workers, what="the second half")
        time.sleep(1.0)
    finally:
        workers.stop()

    # Each profile counts every applied event exactly once across the crash: state was
    # restored (not rebuilt from nothing) and the replayed tail was not double counted.
    from models.events import validate_event
    from models.profile import ProfileConfig, UserProfile

    expected: dict[str, UserProfile] = {}
    refused: set[str] = set()
    for e in events:
        ev = validate_event(e)
        user = e["user_id"]
        if ev.type == "erase" or (ev.type == "consent" and ev.value != 1.0):
            # Erasure, or consent withdrawn: the profile goes, and events wait for consent.
            expected[user] = UserProfile(user)
            if ev.type == "consent":
                refused.add(user)
            continue
        if ev.type == "consent":
            refused.discard(user)
            continue
        p = expected.setdefault(user, UserProfile(user))
        if user not in refused and ev.consent is not False:
            p.apply(ev, ProfileConfig())
    checked = 0
    for user, p in expected.items():
        raw = redis_client.get(f"{prefix}:profile:{user}")
        if raw is None or p.seq == 0:
            continue
        got = orjson.loads(raw)
        assert got["events"] == p.seq, user
        assert got["recent_items"] == p.recent_items, user
        checked += 1
    assert checked >= 10


def test_workers_stop_on_sigint_even_when_started_with_sigint_ignored(
    kafka, redis_server, unique_topic, tmp_path
):
    """A CI job or ``cmd &`` in a script starts programs with SIGINT ignored; the workers
    a WorkerGroup starts still take SIGINT as the request to stop (and stop quickly)."""
    import signal

    ensure_topics(kafka.bootstrap, {unique_topic: 1, f"{unique_topic}-items": 1, f"{unique_topic}.dlq": 1})
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        group = WorkerGroup(_env(kafka, redis_server, unique_topic, "sigint"),
                            log_dir=tmp_path / "logs").start()
    finally:
        signal.signal(signal.SIGINT, before)
    time.sleep(2.0)
    assert group.alive(), group.log_tail()
    started = time.monotonic()
    group.stop(timeout=8.0)
    assert time.monotonic() - started < 5.0  # not the timeout and a SIGKILL
