"""SIGKILL under load with recovery on (``-r DIR -s 1``), one and two processes.

Events are sent at a steady rate while the worker is killed three times and restarted
at once each time. Afterwards every user's profile counts each of their events exactly
once (none lost, none counted twice: the snapshot restores the profile and the Kafka
offsets together, the replayed tail is applied once), and every user's latest list
follows their last event. The recs stream may repeat entries of the replayed tail
(at-least-once); far fewer than a replay from the start of the topic would write.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter

import orjson
import pytest

from bench.recovery import init_store
from connectors.embedded import ensure_topics
from connectors.worker import WorkerGroup
from livekit import (PacedProducer, expected_counts, last_events, shop_events, stale_lists,
                     wait_for, worker_env)

pytestmark = pytest.mark.integration

USERS = 60
EVENTS = 4800
RATE = 240.0  # events/s: 20 s of traffic
KILL_AT = (3.0, 8.0, 13.0)  # seconds after the first list


@pytest.mark.parametrize("processes", [1, 2], ids=["1-process", "2-processes"])
def test_three_sigkills_under_load_lose_nothing_and_count_nothing_twice(
    kafka, redis_server, redis_client, unique_topic, tmp_path, processes
):
    topic, prefix = unique_topic, f"kl{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 4, f"{topic}-items": 1, f"{topic}.dlq": 1})
    recovery = tmp_path / "recovery"
    init_store(recovery)
    events = shop_events(EVENTS, USERS, start_ts=time.time() - 3600)
    group = WorkerGroup(worker_env(kafka.bootstrap, redis_server.url, topic, prefix),
                        processes=processes, recovery_dir=recovery, snapshot_secs=1,
                        log_dir=tmp_path / "logs").start()
    sender = PacedProducer(kafka.bootstrap, topic, events, RATE)
    last = last_events(events)
    try:
        sender.start()
        wait_for(lambda: redis_client.exists(f"{prefix}:latest:u0"), group, timeout=60,
                 what="the first list")
        t0 = time.monotonic()  # the worker is up and processing
        for at in KILL_AT:
            time.sleep(max(0.0, t0 + at - time.monotonic()))
            assert group.alive(), group.log_tail()
            group.kill()  # SIGKILL, no clean shutdown
            group.start()
        sender.join(timeout=60)
        assert not sender.is_alive() and sender.sent == EVENTS and not sender.errors, sender.errors
        wait_for(lambda: not stale_lists(redis_client, prefix, last), group, timeout=60,
                 what="every user's list after their last event")
        time.sleep(1.0)
        assert group.alive(), group.log_tail()
    finally:
        sender.stop()
        group.stop()

    want = expected_counts(events)
    wrong = {}
    for user, counts in want.items():
        profile = orjson.loads(redis_client.get(f"{prefix}:profile:{user}"))
        if profile["counts"] != dict(counts) or profile["events"] != sum(counts.values()):
            wrong[user] = (profile["events"], profile["counts"], dict(counts))
    assert not wrong, f"{len(wrong)} users with wrong counts, e.g. {list(wrong.items())[:3]}"
    assert not stale_lists(redis_client, prefix, last)

    # Recovery resumed from snapshots: a restart reading the topic from the beginning
    # would have repeated the lists of everything sent before each kill.
    triggers = Counter(f[b"trigger_event_id"] for _, f in redis_client.xrange(f"{prefix}:recs"))
    repeated = sum(n - 1 for n in triggers.values())
    print(f"{processes} process(es): {len(triggers)} lists, {repeated} repeated after 3 kills")
    assert repeated < 0.3 * len(triggers), (repeated, len(triggers))
