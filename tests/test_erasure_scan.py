"""Erasure's stream scan beside the sink's writes (connectors.erasure_scan), against real
Redis servers: what it deletes, what it keeps, a note a stopped worker left, a Redis
that goes away while a scan waits."""

from __future__ import annotations

import os
import signal
import time
import uuid

import orjson
import pytest
import redis

from connectors.embedded import EmbeddedRedis
from connectors.erasure_scan import mark_erasure, note_field
from connectors.redis_sink import RedisKeys, RedisSink
from operators.messages import DeadLetter, EraseUser, RecUpdate
from streamrec.metrics import ERASURE_SCANS


def _rec(user: str, seq: int) -> RecUpdate:
    return RecUpdate(user, user, seq, f"{user}-e{seq}", 1_732_680_000.0 + seq, None,
                     [("p1", 0.9), ("p2", 0.5)], "covis", "test")


def _users(client, stream: str) -> list[bytes]:
    return [f.get(b"user_id") for _, f in client.xrange(stream)]


def test_the_scan_removes_the_entries_before_the_erasure_and_keeps_the_new_lifes(
    redis_server, redis_client
):
    prefix = f"scan{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    try:
        part.write_batch([_rec(u, s) for s in range(1, 2001) for u in ("ann", "ben")]
                         + [DeadLetter("type:unknown", orjson.dumps({"user_id": "ann"}), "events")])
        # The erasure, then at once the user's first list of a new life (seq 1 again)
        # and more of ben's: whenever the scan runs, it stops at the erasure's marks.
        part.write_batch([EraseUser("ann", "ann", "outputs", "r-ann"), _rec("ann", 1),
                          _rec("ben", 2001)])
        assert orjson.loads(redis_client.get(keys.latest("ann")))["seq"] == 1  # the new life's
        assert part.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"ben"] * 2000 + [b"ann", b"ben"]
        assert redis_client.xlen(keys.dlq) == 0
        assert not redis_client.exists(keys.erasing)  # the note goes once the scan is done
        assert redis_client.xlen(keys.erasures) == 0  # one part of two: no receipt yet
        part.write_batch([EraseUser("ann", "ann", "profile", "r-ann")])
        assert [f[b"receipt"] for _, f in redis_client.xrange(keys.erasures)] == [b"r-ann"]
    finally:
        part.close()


def test_a_note_left_by_a_stopped_worker_is_finished_by_the_next_sink(redis_server, redis_client):
    prefix = f"scan{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    first = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    first.write_batch([_rec(u, s) for s in range(1, 50) for u in ("cat", "dan")])
    first.write_batch([EraseUser("cat", "cat", "profile", "r-cat")])
    first.close()
    # The worker noted the outputs part (keys deleted, marks set) and died before its
    # thread scanned the stream.
    cat = EraseUser("cat", "cat", "outputs", "r-cat")
    field = note_field(cat, "t1")
    ends = mark_erasure(redis_client, keys, cat, field)
    # A retried call (its reply lost) finds its own note: the same marks, though a dead
    # letter came in between.
    redis_client.xadd(keys.dlq, {"reason": "type:unknown"})
    assert mark_erasure(redis_client, keys, cat, field) == ends
    assert not redis_client.exists(keys.latest("cat"))
    assert b"cat" in _users(redis_client, keys.recs) and redis_client.hlen(keys.erasing) == 1
    # dan is erased twice (no receipts), a list between: each erasure keeps a note of its
    # own, with its own marks.
    redis_client.xadd(keys.recs, {"user_id": "dan", "seq": "0"})
    dan = EraseUser("dan", "dan", "outputs")
    mark_erasure(redis_client, keys, dan, note_field(dan, "t2"))
    redis_client.xadd(keys.recs, {"user_id": "dan", "seq": "1"})
    mark_erasure(redis_client, keys, dan, note_field(dan, "t3"))
    redis_client.hset(keys.erasing, b"not json\nt4", b"1-0 ")  # unreadable: dropped
    assert redis_client.hlen(keys.erasing) == 4
    redis_client.xadd(keys.recs, {"user_id": "dan", "seq": "2"})  # a new life's: stays

    second = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    try:
        assert second.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"dan"]
        assert redis_client.xrange(keys.recs)[0][1][b"seq"] == b"2"
        assert redis_client.hlen(keys.erasing) == 0
        got = [(f[b"receipt"], f[b"user_id"]) for _, f in redis_client.xrange(keys.erasures)]
        assert got == [(b"r-cat", b"cat")]
    finally:
        second.close()


def test_a_scan_waits_out_a_paused_redis_and_finishes(tmp_path):
    server = EmbeddedRedis(log_dir=tmp_path / "redis").start()
    prefix = f"scan{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    client = redis.Redis.from_url(server.url)
    part = RedisSink(server.url, prefix, timeout=0.5, retries=1).build("out", 0, 1)
    try:
        part.write_batch([_rec(u, s) for s in range(1, 200) for u in ("eve", "fred")])
        os.kill(server.pid, signal.SIGSTOP)
        try:
            # The sink's own part waits for Redis (its outage guard), so note the erasure
            # while Redis is up and pause before the scan: scan with the pause in place.
            submitted = time.monotonic()
            eve = EraseUser("eve", "eve", "outputs")
            part.scanner.submit(eve, note_field(eve, "t5"), "9999999999999-0", "")
            assert not part.wait_erasures(1.5)  # Redis is paused: the scan cannot finish
        finally:
            os.kill(server.pid, signal.SIGCONT)
        assert part.wait_erasures(30.0)
        assert time.monotonic() - submitted >= 1.5
        assert _users(client, keys.recs) == [b"fred"] * 199
    finally:
        part.close()
        client.close()
        server.stop()


def test_a_scan_that_redis_refuses_is_retried_not_dropped(redis_server, redis_client):
    prefix = f"scan{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    try:
        part.write_batch([_rec(u, s) for s in range(1, 30) for u in ("gil", "hana")])
        redis_client.set(keys.dlq, "not a stream")  # XRANGE on it fails: WRONGTYPE
        gil = EraseUser("gil", "gil", "outputs")
        part.scanner.submit(gil, note_field(gil, "t6"), "9999999999999-0", "9999999999999-0")
        assert not part.wait_erasures(1.0)  # refused, and still being retried
        assert b"gil" not in _users(redis_client, keys.recs)  # the recs stream went first
        redis_client.delete(keys.dlq)
        assert part.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"hana"] * 29
    finally:
        part.close()


def _recs_scans(monkeypatch) -> list[str]:
    """Record the streams the scanner scanned (the scan itself still runs; a scan Redis
    failed and the scanner retried counts once, when it completes)."""
    import connectors.erasure_scan as scan_module

    scanned: list[str] = []
    real = scan_module.scan_user_entries

    def spy(client, stream, user_id, end="+", scan_chunk=2000):
        done = real(client, stream, user_id, end, scan_chunk)
        scanned.append(stream)
        return done

    monkeypatch.setattr(scan_module, "scan_user_entries", spy)
    return scanned


def test_the_lists_a_sink_wrote_are_erased_by_id_without_a_scan(
    redis_server, redis_client, monkeypatch
):
    prefix = f"byid{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    scanned = _recs_scans(monkeypatch)
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    scans_before = ERASURE_SCANS._value.get()
    try:
        for batch in range(5):
            part.write_batch([_rec(u, 10 * batch + s) for s in range(1, 11)
                              for u in ("eve", "fay")])
        part.write_batch([EraseUser("eve", "eve", "outputs"), _rec("eve", 1)])
        assert part.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"fay"] * 50 + [b"eve"]
        assert scanned == []  # every entry of eve's was known by id
        assert ERASURE_SCANS._value.get() == scans_before
        # The new life's list is tracked too: a second erasure takes it, by id again.
        part.write_batch([EraseUser("eve", "eve", "outputs")])
        assert part.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"fay"] * 50 and scanned == []
    finally:
        part.close()


def test_entries_written_before_the_sink_started_are_scanned_for(
    redis_server, redis_client, monkeypatch
):
    prefix = f"byid{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    scanned = _recs_scans(monkeypatch)
    before = RedisSink(redis_server.url, prefix).build("out", 0, 1)  # a worker before a restart
    before.write_batch([_rec(u, s) for s in range(1, 21) for u in ("gus", "hal")])
    before.close()
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    scans_before = ERASURE_SCANS._value.get()
    try:
        part.write_batch([_rec(u, s) for s in range(21, 31) for u in ("gus", "hal")])
        part.write_batch([EraseUser("gus", "gus", "outputs"), _rec("gus", 1)])
        assert part.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"hal"] * 30 + [b"gus"]
        assert scanned == [keys.recs]  # the part before this sink's first write
        assert ERASURE_SCANS._value.get() == scans_before + 1
        # Once the stream holds nothing older than this sink's first write, no scan.
        redis_client.xtrim(keys.recs, minid=redis_client.xrange(keys.recs, count=21)[-1][0],
                           approximate=False)
        part.write_batch([EraseUser("hal", "hal", "outputs")])
        assert part.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"gus"] and scanned == [keys.recs]
    finally:
        part.close()


@pytest.mark.parametrize("where", ["client", "guard"])
def test_entries_of_a_write_whose_reply_was_lost_are_still_erased(
    redis_server, redis_client, monkeypatch, where
):
    # Redis takes a pipeline and the connection drops before the reply: the pipeline is
    # sent again (the entries are then twice in the stream) and the first ids are never
    # known. "client": redis-py's own retry sends it again, and the sink sees no error;
    # "guard": the error reaches the sink, whose outage guard writes the batch again.
    prefix = f"byid{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    try:
        part.write_batch([_rec(u, s) for s in range(1, 6) for u in ("ida", "jon")])
        name = "_execute_pipeline" if where == "client" else "execute"
        real = getattr(redis.client.Pipeline, name)
        lost = []

        def run_then_drop(self, *args, **kwargs):
            replies = real(self, *args, **kwargs)
            if not lost:
                lost.append(True)
                raise redis.exceptions.ConnectionError("reply lost (test)")
            return replies

        monkeypatch.setattr(redis.client.Pipeline, name, run_then_drop)
        part.write_batch([_rec(u, s) for s in range(6, 11) for u in ("ida", "jon")])
        monkeypatch.setattr(redis.client.Pipeline, name, real)
        assert lost and _users(redis_client, keys.recs).count(b"ida") == 15  # 5 written twice
        part.write_batch([EraseUser("ida", "ida", "outputs")])
        assert part.wait_erasures(30.0)
        assert b"ida" not in _users(redis_client, keys.recs)
        assert _users(redis_client, keys.recs).count(b"jon") == 15
    finally:
        part.close()


def test_entries_the_index_no_longer_holds_are_scanned_for_while_the_stream_has_them(
    redis_server, redis_client, monkeypatch
):
    # The index keeps the last recs_maxlen (+ slack) ids; XADD MAXLEN ~ trims whole
    # nodes and deleted entries do not count, so the stream may reach further back.
    import connectors.redis_sink as sink_module

    monkeypatch.setattr(sink_module, "RECS_INDEX_SLACK", 0)
    prefix = f"byid{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    part = RedisSink(redis_server.url, prefix, recs_maxlen=20).build("out", 0, 1)
    try:
        part.write_batch([_rec("kim", s) for s in range(1, 6)])
        for batch in range(3):
            part.write_batch([_rec("lee", 10 * batch + s) for s in range(1, 11)])
        assert _users(redis_client, keys.recs).count(b"kim") == 5  # still in the stream
        part.write_batch([EraseUser("kim", "kim", "outputs")])
        assert part.wait_erasures(30.0)
        assert _users(redis_client, keys.recs) == [b"lee"] * 30
    finally:
        part.close()
