"""Erasure receipts from a real worker: ``erase`` events with ``context.receipt`` are
confirmed on ``{prefix}:erasures`` only once everything Redis held about the user is gone.

Two processes, so the two parts of an erasure (profile by the user step, outputs by the
user's rank shard) often run on different workers."""

from __future__ import annotations

import time
import uuid

import pytest

from connectors.embedded import ensure_topics
from connectors.worker import WorkerGroup
from livekit import last_events, produce, shop_events, stale_lists, wait_for, worker_env

pytestmark = pytest.mark.integration


def test_erase_events_with_receipts_are_confirmed_after_the_users_data_is_gone(
    kafka, redis_server, redis_client, unique_topic, tmp_path
):
    topic, prefix = unique_topic, f"er{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 4, f"{topic}-items": 1, f"{topic}.dlq": 1})
    events = shop_events(600, 30, start_ts=time.time() - 3600)
    produce(kafka.bootstrap, topic, events)
    group = WorkerGroup(worker_env(kafka.bootstrap, redis_server.url, topic, prefix),
                        processes=2, log_dir=tmp_path / "logs").start()
    doomed = [f"u{i}" for i in range(0, 30, 3)]  # 10 of the 30 users
    receipts = {u: f"r-{u}-{uuid.uuid4().hex[:8]}" for u in doomed}
    try:
        last = last_events(events)
        wait_for(lambda: not stale_lists(redis_client, prefix, last), group, timeout=60,
                 what="a list for every user")
        erase = [{"event_id": f"erase-{receipts[u]}", "ts": time.time(), "user_id": u,
                  "type": "erase", "context": {"receipt": receipts[u]}} for u in doomed]
        # One erase with a receipt that must be ignored (too long): erased, not confirmed.
        erase.append({"event_id": "erase-long", "ts": time.time(), "user_id": "u1",
                      "type": "erase", "context": {"receipt": "x" * 65}})
        produce(kafka.bootstrap, topic, erase)

        seen: dict[str, dict] = {}
        deadline = time.monotonic() + 30
        while len(seen) < len(doomed) and time.monotonic() < deadline:
            for _, fields in redis_client.xrange(f"{prefix}:erasures"):
                entry = {k.decode(): v.decode() for k, v in fields.items()}
                user = entry["user_id"]
                if user in seen:
                    continue
                # The moment a receipt is visible, nothing of that user may be left.
                assert redis_client.get(f"{prefix}:latest:{user}") is None, user
                assert redis_client.get(f"{prefix}:profile:{user}") is None, user
                seen[user] = entry
            time.sleep(0.05)
        assert group.alive(), group.log_tail()
        assert sorted(seen) == sorted(doomed), group.log_tail()
        wait_for(lambda: not redis_client.exists(f"{prefix}:latest:u1"), group, timeout=20,
                 what="the erasure without a valid receipt")
        time.sleep(1.0)  # a second receipt, if one were coming, would be written by now
    finally:
        group.stop()

    entries = [{k.decode(): v.decode() for k, v in f.items()}
               for _, f in redis_client.xrange(f"{prefix}:erasures")]
    assert len(entries) == len(doomed)  # once each, none for the bad receipt
    for entry in entries:
        assert set(entry) == {"receipt", "user_id", "completed_at"}
        assert entry["receipt"] == receipts[entry["user_id"]]
        assert abs(float(entry["completed_at"]) - time.time()) < 120
    left = {f[b"user_id"].decode() for _, f in redis_client.xrange(f"{prefix}:recs")}
    assert not left & {*doomed, "u1"}
    assert {f"u{i}" for i in range(30)} - {*doomed, "u1"} <= left
