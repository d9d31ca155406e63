"""The Redis sink against a real (embedded) Redis: writes, replay guard, erasure."""

from __future__ import annotations

import uuid

import orjson

from connectors.redis_sink import RedisKeys, RedisSink, erase_user
from operators.messages import DeadLetter, EraseUser, RecUpdate


def _rec(user: str, seq: int) -> RecUpdate:
    return RecUpdate(user, user, seq, f"{user}-e{seq}", 1_732_680_000.0 + seq, None,
                     [("p1", 0.9), ("p2", 0.5)], "covis", "test")


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
        part.write_batch([EraseUser("bob", "bob"), _rec("carol", 1)])
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
        part.write_batch([EraseUser("dora", "dora", "outputs")])
        assert not redis_client.exists(keys.latest("dora")) and redis_client.xlen(keys.recs) == 0
    finally:
        part.close()
