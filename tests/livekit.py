"""Helpers for the fault tests that run real workers: deterministic shop events with
known per-user counts, a paced producer thread, and waits that fail with the workers'
logs instead of hanging."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
import redis
from confluent_kafka import Producer

from connectors.worker import WorkerGroup

__all__ = ["SHOP_TYPES", "PacedProducer", "expected_counts", "last_events", "produce",
           "shop_events", "stale_lists", "wait_for", "worker_env"]

SHOP_TYPES = ("view", "click", "add_to_cart", "wishlist", "hover", "purchase")


def shop_events(n: int, users: int, *, start_ts: float, prefix: str = "u",
                id_prefix: str = "e", step: float = 0.05) -> list[dict]:
    """``n`` item events of ``users`` users, round robin, every one counted by a profile
    (unique ids, well under the burst guard, no control events)."""
    out = []
    for i in range(n):
        out.append({"event_id": f"{id_prefix}{i}", "ts": start_ts + i * step,
                    "user_id": f"{prefix}{i % users}", "type": SHOP_TYPES[(i * 7 + i // users) % 6],
                    "item_id": f"p{(i * 13) % 97}", "category": f"c{(i * 13) % 97 % 6}",
                    "value": 900.0})
    return out


def expected_counts(events: list[dict]) -> dict[str, Counter]:
    """Per user, events per type: what ``profile["counts"]`` must say."""
    out: dict[str, Counter] = {}
    for e in events:
        out.setdefault(e["user_id"], Counter())[e["type"]] += 1
    return out


def last_events(events: list[dict]) -> dict[str, str]:
    """Per user, the id of the last event: the ``trigger_event_id`` of the final list."""
    return {e["user_id"]: e["event_id"] for e in events}


def stale_lists(client: redis.Redis, prefix: str, last: dict[str, str]) -> list[str]:
    """Users whose latest list is missing or not (yet) the one after their last event."""
    keys = [f"{prefix}:latest:{u}" for u in last]
    stale = []
    for (user, event_id), raw in zip(last.items(), client.mget(keys)):
        if raw is None or orjson.loads(raw)["trigger_event_id"] != event_id:
            stale.append(user)
    return stale


def worker_env(kafka_bootstrap: str, redis_url: str, topic: str, prefix: str, **extra) -> dict:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "REDIS_URL": redis_url,
        "STREAMREC_EVENTS_TOPIC": topic,
        "STREAMREC_ITEMS_TOPIC": f"{topic}-items",
        "STREAMREC_PREFIX": prefix,
        **extra,
    }


def produce(bootstrap: str, topic: str, events: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for e in events:
        producer.produce(topic, key=e["user_id"].encode(), value=orjson.dumps(e))
        producer.poll(0)
    assert producer.flush(30) == 0


def wait_for(predicate: Callable[[], bool], group: WorkerGroup, *, timeout: float,
             what: str) -> float:
    """Seconds until ``predicate()`` held; fails (with the workers' logs) on a timeout or
    a worker that died."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if predicate():
            return time.monotonic() - t0
        if not group.alive():
            pytest.fail(f"worker died while waiting for {what}: {group.returncodes()}\n"
                        f"{group.log_tail()}")
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}\n{group.log_tail()}")


class PacedProducer(threading.Thread):
    """Sends ``events`` at ``rate`` per second in a thread; ``join()`` when done.

    Bounded: it stops after the last event or at ``stop()``; delivery failures are
    collected in ``errors`` (the broker may be away for a while: librdkafka retries
    within ``message.timeout.ms``).
    """

    def __init__(self, bootstrap: str, topic: str, events: list[dict], rate: float,
                 *, timeout_ms: int = 60_000, linger_ms: int = 5) -> None:
        super().__init__(daemon=True)
        self.topic = topic
        self.events = events
        self.rate = rate
        self.sent = 0
        self.errors: list[str] = []
        self._halt = threading.Event()
        self._producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": linger_ms,
                                   "message.timeout.ms": timeout_ms,
                                   "enable.idempotence": False})

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self.errors.append(str(err))

    def run(self) -> None:
        t0 = time.monotonic()
        for i, e in enumerate(self.events):
            if self._halt.is_set():
                break
            delay = t0 + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            while True:
                try:
                    self._producer.produce(self.topic, key=e["user_id"].encode(),
                                           value=orjson.dumps(e), on_delivery=self._delivered)
                    break
                except BufferError:
                    self._producer.poll(0.05)
            self.sent += 1
            self._producer.poll(0)
        left = self._producer.flush(90)
        if left:
            self.errors.append(f"{left} messages still unsent after 90 s")
        self._producer = None  # closes it: no reconnect attempts once the test is over

    def stop(self) -> None:
        self._halt.set()
