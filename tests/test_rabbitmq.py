"""RabbitMQ as the source: a real node of the suite's own (Debian's rabbitmq-server on
free loopback ports), the worker started as an operator would, results read from Redis."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone

import orjson
import pika
import pytest

from bench.workload import expected_full
from connectors.rabbitmq_io import QueuePartition, declare_queues, queue_depths
from connectors.worker import WorkerGroup
from streamrec.errors import ConfigError
from streamrec.settings import Settings
from tests.test_integration import BAD_EVENTS, _events, _wait_for

pytestmark = pytest.mark.integration


def _publish(url: str, messages, *, exchange: str = "", queue: str = "") -> None:
    """Publish (routing key, body) pairs, persistent, with publisher confirms."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for key, body in messages:
            channel.basic_publish(exchange, queue or key, body,
                                  pika.BasicProperties(delivery_mode=2))
    finally:
        connection.close()


def _env(rabbitmq, redis_server, queues: list[str], prefix: str, **extra) -> dict:
    return {
        "STREAMREC_SOURCE": "rabbitmq",
        "RABBITMQ_URL": rabbitmq.url,
        "RABBITMQ_EVENTS_QUEUE": ",".join(queues),
        "RABBITMQ_ITEMS_QUEUE": f"{queues[0]}-items",
        # Nothing listens there: the RabbitMQ path must not need Kafka at all.
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",
        "REDIS_URL": redis_server.url,
        "STREAMREC_PREFIX": prefix,
        # Acknowledgements follow epochs: 1 s instead of Bytewax's 10 s default.
        "BYTEWAX_SNAPSHOT_INTERVAL": "1",
        **extra,
    }


def _latest(redis_client, prefix: str, user: str) -> dict | None:
    raw = redis_client.get(f"{prefix}:latest:{user}")
    return orjson.loads(raw) if raw else None


def _all_answered(redis_client, prefix: str, expected: dict[str, str]):
    def check() -> bool:
        return all((_latest(redis_client, prefix, u) or {}).get("trigger_event_id") == e
                   for u, e in expected.items())
    return check


def _settled(url: str, queues: list[str], want: int = 0, timeout: float = 10.0) -> dict[str, int]:
    """Ready messages per queue once a consumer's connection is gone: unacknowledged
    deliveries count as ready again, after a moment. Waits ``timeout`` at most for
    ``want`` in every queue; with ``want=0``, waits a second more in case deliveries
    are still on their way back."""
    deadline = time.monotonic() + timeout
    while True:
        depths = queue_depths(url, queues)
        if all(n == want for n in depths.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if want == 0:
        time.sleep(1.0)
        depths = queue_depths(url, queues)
    return depths


def test_settings_choose_rabbitmq_and_explain_bad_values():
    s = Settings.from_env({"STREAMREC_SOURCE": "rabbitmq",
                           "RABBITMQ_URL": "amqp://app:s3cret@mq:5672/%2F",
                           "RABBITMQ_EVENTS_QUEUE": "events.0, events.1"})
    assert s.source == "rabbitmq" and s.rabbitmq_events_queues == ("events.0", "events.1")
    assert "s3cret" not in repr(s) and "s3cret" not in str(s.redacted())
    assert Settings.from_env({}).source == "kafka"
    with pytest.raises(ConfigError, match="STREAMREC_SOURCE"):
        Settings.from_env({"STREAMREC_SOURCE": "mqtt"})
    with pytest.raises(ConfigError, match="RABBITMQ_URL"):
        Settings.from_env({"STREAMREC_SOURCE": "rabbitmq", "RABBITMQ_URL": "http://mq"})
    with pytest.raises(ConfigError, match="distinct"):
        Settings.from_env({"STREAMREC_SOURCE": "rabbitmq", "RABBITMQ_EVENTS_QUEUE": "a,a"})
    with pytest.raises(ConfigError, match="RABBITMQ_PREFETCH"):
        Settings.from_env({"STREAMREC_SOURCE": "rabbitmq", "RABBITMQ_PREFETCH": "10"})


def test_partition_acknowledges_only_on_the_poll_after_its_epoch_ended(rabbitmq):
    """The contract with Bytewax, driven by hand: ``snapshot()`` ends an epoch whose
    batches were only emitted; the next ``next_batch`` comes once they are processed
    and acknowledges them. Closing the connection before then puts them back."""
    queue = f"ack-{uuid.uuid4().hex[:8]}"
    declare_queues(rabbitmq.url, [queue])
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    channel = connection.channel()
    channel.basic_publish("", queue, b'{"n": 1}', pika.BasicProperties(timestamp=1732680000))
    channel.basic_publish("", queue, b'{"n": 2}',
                          pika.BasicProperties(headers={"timestamp_in_ms": 1732680000500}))
    channel.basic_publish("", queue, b'{"n": 3}')
    connection.close()

    def drain(part: QueuePartition, want: int) -> list:
        got, deadline = [], time.monotonic() + 10
        while len(got) < want and time.monotonic() < deadline:
            got += part.next_batch()
        return got

    part = QueuePartition(rabbitmq.url, queue, prefetch=10, batch_size=2, source="events",
                          clock=lambda: 42.0)
    got = drain(part, 3)
    assert [e.payload for e in got] == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert [e.ingested_at for e in got] == [1732680000.0, 1732680000.5, 42.0]
    assert {e.source for e in got} == {"events"}
    assert part.snapshot() is None  # the epoch ends: emitted, maybe not yet processed
    part.close()  # a crash now: nothing was acknowledged
    assert _settled(rabbitmq.url, [queue], want=3) == {queue: 3}

    part = QueuePartition(rabbitmq.url, queue, prefetch=10, batch_size=10, source="events")
    assert len(drain(part, 3)) == 3
    part.snapshot()
    assert part.next_batch() == []  # the next epoch's first poll acknowledges
    part.close()
    assert _settled(rabbitmq.url, [queue]) == {queue: 0}


def test_missing_queue_stops_the_worker_with_the_fix(rabbitmq, redis_server, tmp_path):
    prefix = f"rq{uuid.uuid4().hex[:6]}"
    env = _env(rabbitmq, redis_server, [f"nosuch-{prefix}"], prefix, STREAMREC_CONSUME_ITEMS="0")
    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    try:
        deadline = time.monotonic() + 60
        while group.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not group.alive(), "the worker should stop when its queue is missing"
        assert f"RabbitMQ queue 'nosuch-{prefix}' does not exist" in group.log_tail(200)
    finally:
        group.kill()


def test_worker_reads_a_queue_files_bad_input_and_acknowledges_everything(
    rabbitmq, redis_server, redis_client, tmp_path
):
    prefix = f"rq{uuid.uuid4().hex[:6]}"
    queue = f"events-{prefix}"
    declare_queues(rabbitmq.url, [queue, f"{queue}-items"])
    catalog, events = _events(400, seed=21)
    _publish(rabbitmq.url, [(b"", orjson.dumps(i)) for i in catalog], queue=f"{queue}-items")
    mixed = []
    for n, ev in enumerate(events):
        mixed.append((b"", orjson.dumps(ev)))
        if n % 20 == 0 and n // 20 < len(BAD_EVENTS):
            mixed.append((b"", BAD_EVENTS[n // 20][0] or b""))
    published_at = time.time()
    _publish(rabbitmq.url, mixed, queue=queue)
    expected = expected_full(events)
    group = WorkerGroup(_env(rabbitmq, redis_server, [queue], prefix),
                        log_dir=tmp_path / "logs").start()
    try:
        _wait_for(lambda: _all_answered(redis_client, prefix, expected)()
                  and redis_client.xlen(f"{prefix}:dlq") >= len(BAD_EVENTS),
                  group, what="every user's list and every dead letter")
        time.sleep(2.5)  # two epochs: the last deliveries are acknowledged
        assert group.alive(), group.log_tail()
    finally:
        group.stop()

    # Nothing left in either queue, unacknowledged ones included (they would be ready
    # again now that the worker's connection is closed).
    assert _settled(rabbitmq.url, [queue, f"{queue}-items"]) == {queue: 0, f"{queue}-items": 0}

    some_user = next(iter(expected))
    latest = _latest(redis_client, prefix, some_user)
    assert latest["user_id"] == some_user and latest["items"]
    # No stamp on these messages: ingested_at is when the worker received them.
    stamps = [float(f[b"ingested_at"]) for _, f in redis_client.xrange(f"{prefix}:recs", count=50)]
    assert stamps and all(published_at <= t <= time.time() for t in stamps)

    # Dead letters: the Redis stream, the same reasons as the Kafka path (None has no
    # AMQP counterpart: an empty body is filed as not JSON).
    dlq = redis_client.xrange(f"{prefix}:dlq")
    reasons = sorted(f[b"reason"].decode() for _, f in dlq)
    assert reasons == sorted("payload:not_json" if p is None else r for p, r in BAD_EVENTS)
    assert {f[b"source"] for _, f in dlq} == {b"events"}


def test_sigkill_mid_run_redelivers_and_nothing_is_lost_or_counted_twice(
    rabbitmq, redis_server, redis_client, tmp_path
):
    prefix = f"rk{uuid.uuid4().hex[:6]}"
    queue = f"events-{prefix}"
    declare_queues(rabbitmq.url, [queue, f"{queue}-items"])
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    subprocess.run([sys.executable, "-m", "bytewax.recovery", str(recovery), "1"], check=True)
    _, events = _events(800, seed=23)
    _publish(rabbitmq.url, [(b"", orjson.dumps(e)) for e in events], queue=queue)
    # A small prefetch keeps the worker busy for several epochs: there is a "mid-run".
    env = _env(rabbitmq, redis_server, [queue], prefix, RABBITMQ_PREFETCH="60",
               RABBITMQ_BATCH_SIZE="20", STREAMREC_CONSUME_ITEMS="0")
    workers = WorkerGroup(env, recovery_dir=recovery, snapshot_secs=1,
                          log_dir=tmp_path / "l1").start()
    first_user = events[0]["user_id"]
    try:
        _wait_for(lambda: _latest(redis_client, prefix, first_user) is not None, workers,
                  what="the first lists")
        time.sleep(1.5)
    finally:
        workers.kill()  # SIGKILL: no clean shutdown, unacknowledged deliveries pending
    expected = expected_full(events)
    left = queue_depths(rabbitmq.url, [queue])[queue]
    assert 0 < left < len(events), f"the kill should come mid-run; {left} messages left"

    workers = WorkerGroup(env, recovery_dir=recovery, snapshot_secs=1,
                          log_dir=tmp_path / "l2").start()
    try:
        _wait_for(_all_answered(redis_client, prefix, expected), workers,
                  what="every user's list after the restart")
        time.sleep(2.5)
    finally:
        workers.stop()
    assert _settled(rabbitmq.url, [queue]) == {queue: 0}

    # Each profile counts every event exactly once across the crash: what was
    # acknowledged is in the restored state, the rest was redelivered, and what was
    # both (delivered again after its epoch's snapshot) was dropped by the dedupe.
    from models.events import validate_event
    from models.profile import ProfileConfig, UserProfile

    want: dict[str, UserProfile] = {}
    for e in events:
        p = want.setdefault(e["user_id"], UserProfile(e["user_id"]))
        ev = validate_event(e)
        if ev.type not in ("consent", "erase") and ev.consent is not False:
            p.apply(ev, ProfileConfig())
    checked = 0
    for user, p in want.items():
        raw = redis_client.get(f"{prefix}:profile:{user}")
        if raw is None or p.seq == 0:
            continue
        assert orjson.loads(raw)["events"] == p.seq, user
        checked += 1
    assert checked >= 10


def test_consistent_hash_exchange_feeds_one_queue_per_partition_to_two_processes(
    rabbitmq, redis_server, redis_client, tmp_path
):
    prefix = f"rh{uuid.uuid4().hex[:6]}"
    queues = [f"events-{prefix}.{i}" for i in range(2)]
    exchange = f"events-{prefix}"
    declare_queues(rabbitmq.url, queues, exchange=exchange)
    declare_queues(rabbitmq.url, [f"{queues[0]}-items"])
    _, events = _events(300, seed=29)
    # The routing key is the user id: one user's events always go to the same queue.
    _publish(rabbitmq.url, [(e["user_id"], orjson.dumps(e)) for e in events], exchange=exchange)
    depths = queue_depths(rabbitmq.url, queues)
    assert sum(depths.values()) == len(events) and all(depths.values()), depths

    expected = expected_full(events)
    group = WorkerGroup(_env(rabbitmq, redis_server, queues, prefix), processes=2,
                        log_dir=tmp_path / "logs").start()
    try:
        _wait_for(_all_answered(redis_client, prefix, expected), group,
                  what="every user's list from two processes")
        time.sleep(2.5)
        assert group.alive(), group.log_tail()
    finally:
        group.stop()
    assert _settled(rabbitmq.url, queues) == {q: 0 for q in queues}


def test_partition_reconnects_after_losing_its_connection_and_gets_the_messages_again(rabbitmq):
    queue = f"lost-{uuid.uuid4().hex[:8]}"
    declare_queues(rabbitmq.url, [queue])
    _publish(rabbitmq.url, [(b"", b'{"n": 1}'), (b"", b'{"n": 2}')], queue=queue)
    part = QueuePartition(rabbitmq.url, queue, prefetch=10, batch_size=10, source="events")
    try:
        first, deadline = [], time.monotonic() + 10
        while len(first) < 2 and time.monotonic() < deadline:
            first += part.next_batch()
        assert len(first) == 2
        part._connection.close()  # as a broker restart or a network cut would
        assert part.next_batch() == []  # noticed: backing off, nothing acknowledged
        again, deadline = [], time.monotonic() + 15
        while len(again) < 2 and time.monotonic() < deadline:
            if part.next_awake() is None or part.next_awake() <= datetime.now(timezone.utc):
                again += part.next_batch()
            time.sleep(0.01)
        assert [e.payload for e in again] == [e.payload for e in first]
        part.snapshot()
        part.next_batch()
    finally:
        part.close()
    assert _settled(rabbitmq.url, [queue]) == {queue: 0}


def test_readiness_checks_the_events_queues_instead_of_kafka(rabbitmq, redis_server):
    from connectors.ops_server import OpsServer

    queue = f"ready-{uuid.uuid4().hex[:8]}"
    declare_queues(rabbitmq.url, [queue])
    _publish(rabbitmq.url, [(b"", b"{}")], queue=queue)
    env = _env(rabbitmq, redis_server, [queue], "ready")
    _, body = OpsServer(Settings.from_env(env), "127.0.0.1", 0).readiness()
    assert "kafka" not in body["checks"]
    assert body["checks"]["rabbitmq"] == {"ok": True, "detail": f"{queue!r}: 1 ready"}
    env["RABBITMQ_EVENTS_QUEUE"] = f"{queue}-missing"
    ready, body = OpsServer(Settings.from_env(env), "127.0.0.1", 0).readiness()
    assert not ready and not body["checks"]["rabbitmq"]["ok"]
    assert "NOT_FOUND" in body["checks"]["rabbitmq"]["detail"]


def test_a_queue_deleted_under_the_consumer_stops_it_with_the_fix(rabbitmq):
    queue = f"gone-{uuid.uuid4().hex[:8]}"
    declare_queues(rabbitmq.url, [queue])
    part = QueuePartition(rabbitmq.url, queue, prefetch=10, batch_size=10, source="events")
    try:
        connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
        connection.channel().queue_delete(queue)
        connection.close()
        deadline = time.monotonic() + 15
        with pytest.raises(ConfigError, match=f"RabbitMQ queue '{queue}' does not exist"):
            while time.monotonic() < deadline:
                if part.next_awake() is None or part.next_awake() <= datetime.now(timezone.utc):
                    part.next_batch()
                time.sleep(0.01)
    finally:
        part.close()
