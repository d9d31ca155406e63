"""Kafka producer side: replay events, catalog items or raw bytes into a topic.

Events are orjson-encoded and keyed by ``user_id`` so one user's events stay ordered in
one partition. With ``rate`` the replay is paced against ``time.perf_counter`` in chunks
of ~5 ms of traffic (sleeping per message would cap the rate at a few thousand per
second). Each event can carry a ``produced_at`` header (unix seconds, ASCII) from which
the sink side measures end-to-end latency; it is taken at most ``_STAMP_EVERY`` messages
(well under a millisecond) before the message is handed to librdkafka.

Delivery reports are requested for failures only (``delivery.report.only.error``), so a
healthy replay pays no Python callback per message; failures are counted, logged and
subtracted from the returned count.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from confluent_kafka import KafkaError, Producer

from connectors.kafka_props import for_producer

__all__ = ["produce_events", "produce_catalog", "produce_raw", "PRODUCED_AT_HEADER"]

PRODUCED_AT_HEADER = "produced_at"
_log = logging.getLogger(__name__)
_PACE_SECONDS = 0.005  # one paced chunk holds this much traffic
# Consecutive messages share one produced_at stamp: they are produced within well under
# a millisecond of it (never before it), and a fresh stamp per message costs ~15% of the
# throughput.
_STAMP_EVERY = 32
_PROGRESS_SECONDS = 0.1
_FLUSH_TIMEOUT = 60.0


class _Delivery:
    """Counts failed deliveries (the only ones librdkafka reports with our config)."""

    def __init__(self) -> None:
        self.failed = 0
        self.first_error: KafkaError | None = None

    def __call__(self, err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            self.failed += 1
            if self.first_error is None:
                self.first_error = err


def _producer(bootstrap: str, linger_ms: int, config: dict | None, delivery: _Delivery) -> Producer:
    settings = {
        "bootstrap.servers": bootstrap,
        "linger.ms": linger_ms,
        "queue.buffering.max.messages": 200_000,
        "batch.num.messages": 10_000,
        "delivery.report.only.error": True,
        "on_delivery": delivery,
    }
    settings.update(for_producer(config))
    return Producer(settings)


def _send(producer: Producer, topic: str, key: bytes | None, value: bytes, stamp: bool) -> list | None:
    """Produce one message, waiting while the local queue is full; returns its headers.

    After a wait the ``produced_at`` stamp is renewed, so back-pressure is not counted
    as pipeline latency.
    """
    headers = None
    while True:
        if stamp:
            headers = [(PRODUCED_AT_HEADER, b"%.6f" % time.time())]
        try:
            producer.produce(topic, value, key, headers=headers)
            return headers
        except BufferError:
            producer.poll(0.01)


def _finish(producer: Producer, delivery: _Delivery, sent: int, what: str) -> int:
    """Flush, log failures, and return how many messages the broker acknowledged."""
    left = producer.flush(_FLUSH_TIMEOUT)
    failed = delivery.failed + left
    if failed:
        _log.warning(
            "%s: %d of %d messages not delivered (%d still queued after %.0fs); first error: %s",
            what, failed, sent, left, _FLUSH_TIMEOUT, delivery.first_error,
        )
    return sent - failed


def produce_events(
    bootstrap: str,
    topic: str,
    events: Iterable[dict],
    *,
    rate: float | None = None,
    config: dict | None = None,
    linger_ms: int = 5,
    progress: bool = False,
    stamp_produce_time: bool = True,
    on_progress: Callable[[int], None] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Produce ``events`` to ``topic`` keyed by user, optionally paced at ``rate`` events/s.

    ``on_progress`` receives the number of events handed to the producer so far, about
    ten times a second and once at the end. Setting ``stop`` ends the replay early (the
    queued messages are still flushed). Returns the number of events the broker
    acknowledged; ``config`` entries override the producer defaults.
    """
    if rate is not None and rate <= 0:
        msg = f"produce_events: rate must be > 0 events/s or None, got {rate!r}"
        raise ValueError(msg)
    delivery = _Delivery()
    producer = _producer(bootstrap, linger_ms, config, delivery)
    bar = _progress_bar(events, "events") if progress else None
    chunk = max(1, int(rate * _PACE_SECONDS)) if rate else 1000
    dumps, now, send, produce = orjson.dumps, time.time, _send, producer.produce
    headers = None
    sent = n = 0  # n: produced in the current chunk
    started = last_report = time.perf_counter()
    try:
        iterator = iter(events)
        while stop is None or not stop.is_set():
            for event in iterator:
                if stamp_produce_time and not n % _STAMP_EVERY:
                    headers = [(PRODUCED_AT_HEADER, b"%.6f" % now())]
                key, value = event["user_id"].encode(), dumps(event)
                try:
                    produce(topic, value, key, headers=headers)
                except BufferError:
                    producer.poll(0.01)
                    headers = send(producer, topic, key, value, stamp_produce_time)
                n += 1
                if n == chunk:
                    break
            if n == 0:
                break
            sent, full = sent + n, n == chunk
            producer.poll(0)
            if bar is not None:
                bar.update(n)
            n = 0
            clock = time.perf_counter()
            if on_progress is not None and clock - last_report >= _PROGRESS_SECONDS:
                on_progress(sent)
                last_report = clock
            if rate:
                ahead = started + sent / rate - clock
                if ahead > 0:
                    time.sleep(ahead)
            if not full:
                break
    finally:
        sent += n  # a chunk cut short by an exception
        delivered = _finish(producer, delivery, sent, f"produce_events to {topic!r}")
        if bar is not None:
            bar.close()
    if on_progress is not None:
        on_progress(sent)
    return delivered


def produce_catalog(bootstrap: str, topic: str, items: Iterable[dict], config: dict | None = None) -> int:
    """Produce catalog items to ``topic`` keyed by ``item_id``; returns the number acknowledged."""
    payloads = ((item["item_id"].encode(), orjson.dumps(item)) for item in items)
    return _produce_payloads(bootstrap, topic, payloads, config, "produce_catalog")


def produce_raw(
    bootstrap: str, topic: str, payloads: Iterable[tuple[bytes | None, bytes]], config: dict | None = None
) -> int:
    """Produce ``(key, value)`` byte pairs as given (for example broken input for tests)."""
    return _produce_payloads(bootstrap, topic, payloads, config, "produce_raw")


def _produce_payloads(
    bootstrap: str, topic: str, payloads: Iterable[tuple[bytes | None, bytes]], config: dict | None, what: str
) -> int:
    delivery = _Delivery()
    producer = _producer(bootstrap, 5, config, delivery)
    sent = 0
    try:
        for key, value in payloads:
            _send(producer, topic, key, value, False)
            sent += 1
            if sent % 1000 == 0:
                producer.poll(0)
    finally:
        delivered = _finish(producer, delivery, sent, f"{what} to {topic!r}")
    return delivered


def _progress_bar(events: Iterable[dict], unit: str) -> Any:
    from tqdm import tqdm

    total = len(events) if hasattr(events, "__len__") else None
    return tqdm(total=total, unit=f" {unit}", file=sys.stderr, smoothing=0.1, dynamic_ncols=True)
