"""The Redis sink against a real (embedded) Redis: writes, replay guard, erasure."""

from __future__ import annotations

import uuid

import orjson

from connectors.redis_sink import RedisKeys, RedisSink, erase_user
from operators.messages import DeadLetter, EraseUser, RecUpdate


def _rec(user: str, seq: int) -> RecUpdate:
    return RecUpdate(user, user, seq, f"{user}-e{seq}", 1_732_680_000.0 + seq, None,
                     [("p1", 0.9), ("p2", 0.5)], "covis", "test")


def _write(part, batch: list) -> None:
    """A batch through the sink, then its erasures' stream scans (they run beside the
    sink's writes, connectors.erasure_scan) before the test looks."""
    part.write_batch(batch)
    assert part.wait_erasures(10.0)


def test_erasure_removes_only_that_users_entries_across_scan_chunks(redis_server, redis_client):
    prefix = f"sink{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    try:
        batch = [_rec(u, s) for s in range(1, 8) for u in ("alice", "bob")]
        batch.append(DeadLetter("type:unknown", orjson.dumps({"user_id": "alice", "type": "x"}),
                                "events"))
        batch.append(DeadLetter("type:unknown", orjson.dumps({"user_id": "bob", "type": "x"}),
                                "events"))
        part.write_batch(batch)
        assert redis_client.xlen(keys.recs) == 14
        assert orjson.loads(redis_client.get(keys.latest("alice")))["seq"] == 7

        # Chunks of 3 entries: the scan must carry on past chunk boundaries.
        removed = erase_user(redis_client, keys, "alice", scan_chunk=3)
        assert removed == 8  # 7 updates and 1 dead letter
        left = [f[b"user_id"] for _, f in redis_client.xrange(keys.recs)]
        assert left == [b"bob"] * 7
        assert [f.get(b"user_id") for _, f in redis_client.xrange(keys.dlq)] == [b"bob"]
        assert not redis_client.exists(keys.latest("alice"), keys.profile("alice"))
        assert redis_client.exists(keys.latest("bob"))

        # Through the sink, as the dataflow asks for it; an older replayed update for bob
        # does not move his latest list back.
        _write(part, [EraseUser("bob", "bob"), _rec("carol", 1)])
        assert [f[b"user_id"] for _, f in redis_client.xrange(keys.recs)] == [b"carol"]
        assert redis_client.xlen(keys.dlq) == 0
        part.write_batch([_rec("carol", 3)])
        part.write_batch([_rec("carol", 2)])
        assert orjson.loads(redis_client.get(keys.latest("carol")))["seq"] == 3
    finally:
        part.close()


def test_the_two_halves_of_an_erasure_delete_their_own_keys(redis_server, redis_client):
    prefix = f"sink{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)
    try:
        from operators.messages import ProfileWrite

        part.write_batch([_rec("dora", 1), ProfileWrite("dora", "dora", 1, {"user_id": "dora"})])
        part.write_batch([EraseUser("dora", "dora", "profile")])
        assert not redis_client.exists(keys.profile("dora"))
        assert redis_client.exists(keys.latest("dora")) and redis_client.xlen(keys.recs) == 1
        _write(part, [EraseUser("dora", "dora", "outputs")])
        assert not redis_client.exists(keys.latest("dora")) and redis_client.xlen(keys.recs) == 0
    finally:
        part.close()


def _receipts(client, keys: RedisKeys) -> list[dict]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in client.xrange(keys.erasures)]


def test_an_erasure_receipt_is_written_once_both_parts_ran_in_either_order(
    redis_server, redis_client
):
    prefix = f"sink{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    times = iter(range(1_800_000_000, 1_800_000_100))
    # Two partitions, as on two workers: each part may land on either.
    first = RedisSink(redis_server.url, prefix, now=lambda: float(next(times))).build("out", 0, 2)
    second = RedisSink(redis_server.url, prefix, now=lambda: float(next(times))).build("out", 1, 2)
    try:
        from operators.messages import ProfileWrite

        for user in ("erin", "fay"):
            first.write_batch([_rec(user, 1), ProfileWrite(user, user, 1, {"user_id": user})])
        # erin: profile part first; fay: outputs part first.
        first.write_batch([EraseUser("erin", "erin", "profile", "r-erin")])
        _write(second, [EraseUser("fay", "fay", "outputs", "r-fay")])
        assert _receipts(redis_client, keys) == []  # half done: no receipt yet
        _write(second, [EraseUser("erin", "erin", "outputs", "r-erin")])
        got = _receipts(redis_client, keys)
        assert [(r["receipt"], r["user_id"]) for r in got] == [("r-erin", "erin")]
        assert 1_800_000_000 <= float(got[0]["completed_at"]) < 1_800_000_100
        assert not redis_client.exists(keys.latest("erin"), keys.profile("erin"))
        first.write_batch([EraseUser("fay", "fay", "profile", "r-fay")])
        assert [r["receipt"] for r in _receipts(redis_client, keys)] == ["r-erin", "r-fay"]
        assert not redis_client.exists(keys.latest("fay"), keys.profile("fay"))

        # A replay after a crash executes both parts again: no second receipt.
        first.write_batch([EraseUser("erin", "erin", "profile", "r-erin")])
        _write(second, [EraseUser("erin", "erin", "outputs", "r-erin")])
        # The same part twice is still half done; "all" confirms at once.
        _write(first, [EraseUser("gus", "gus", "outputs", "r-gus")])
        _write(first, [EraseUser("gus", "gus", "outputs", "r-gus")])
        _write(first, [EraseUser("hal", "hal", "all", "r-hal")])
        assert [r["receipt"] for r in _receipts(redis_client, keys)] == ["r-erin", "r-fay", "r-hal"]
        # Without a receipt nothing is confirmed or remembered.
        _write(first, [EraseUser("ivy", "ivy", "all")])
        assert redis_client.xlen(keys.erasures) == 3
        assert not list(redis_client.scan_iter(f"{prefix}:erasure:ivy:*"))
    finally:
        first.close()
        second.close()


def test_guard_counts_reach_redis_once_per_process(redis_server, redis_client):
    from streamrec.metrics import GUARDED

    prefix = f"t{uuid.uuid4().hex[:8]}"
    sink = RedisSink(redis_server.url, prefix)
    first, second = sink.build("out", 0, 2), sink.build("out", 1, 2)
    first.write_batch([])  # counts from earlier tests go out now; only the new ones below
    base = {k.decode(): int(v) for k, v in redis_client.hgetall(f"{prefix}:guarded").items()}
    GUARDED.add("burst", 3)
    GUARDED.add("fresh_id_flood", 2)
    first.write_batch([_rec("u1", 1)])
    second.write_batch([_rec("u2", 1)])  # the other partition: nothing counted twice
    got = {k.decode(): int(v) for k, v in redis_client.hgetall(f"{prefix}:guarded").items()}
    assert got.get("burst", 0) - base.get("burst", 0) == 3
    assert got.get("fresh_id_flood", 0) - base.get("fresh_id_flood", 0) == 2


def test_latest_and_profile_never_move_back_whatever_wrote_the_old_value(
    redis_server, redis_client
):
    # The guard reads "seq" off the start of the value the sink writes; a value with
    # "seq" elsewhere (an older release wrote it last) is decoded whole.
    from operators.messages import ProfileWrite

    prefix = f"guard{uuid.uuid4().hex[:6]}"
    keys = RedisKeys(prefix)
    redis_client.set(keys.latest("amy"), orjson.dumps({"user_id": "amy", "items": [], "seq": 10}))
    redis_client.set(keys.profile("amy"), orjson.dumps({"user_id": "amy", "seq": 10}))
    part = RedisSink(redis_server.url, prefix).build("out", 0, 1)

    def seqs() -> tuple[int, int]:
        return (orjson.loads(redis_client.get(keys.latest("amy")))["seq"],
                orjson.loads(redis_client.get(keys.profile("amy")))["seq"])

    try:
        part.write_batch([_rec("amy", 9), ProfileWrite("amy", "amy", 9, {"user_id": "amy"})])
        assert seqs() == (10, 10)  # older than what is there: kept out
        part.write_batch([_rec("amy", 12), ProfileWrite("amy", "amy", 12, {"user_id": "amy"})])
        assert seqs() == (12, 12)
        assert redis_client.get(keys.latest("amy")).startswith(b'{"seq":12,')
        assert redis_client.get(keys.profile("amy")).startswith(b'{"seq":12,')
        # A replay of older events (after a crash) cannot move either back, now that the
        # guard reads "seq" off the start; nor can a seq that is a prefix of the stored one.
        part.write_batch([_rec("amy", 11), ProfileWrite("amy", "amy", 1, {"user_id": "amy"})])
        assert seqs() == (12, 12)
        part.write_batch([_rec("amy", 120), ProfileWrite("amy", "amy", 120, {"user_id": "amy"})])
        part.write_batch([_rec("amy", 13), ProfileWrite("amy", "amy", 13, {"user_id": "amy"})])
        assert seqs() == (120, 120)
    finally:
        part.close()
