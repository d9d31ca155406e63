"""The collector's Kafka producer: asynchronous delivery, a bounded queue, a health flag.

``produce`` never blocks the event loop: librdkafka queues the message (at most
``queue_max`` of them, ``BufferError`` beyond) and a background thread serves delivery
reports. A second thread asks the broker for the events topic's metadata every
``probe_every`` seconds; while that fails (or librdkafka reports all brokers down) the
producer is *unavailable* and the collector answers 503 with ``Retry-After`` at once,
instead of queueing events that would only time out. ``close`` flushes what is queued.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Mapping

from confluent_kafka import KafkaError, KafkaException, Producer

from connectors.kafka_props import for_producer

__all__ = ["EventProducer", "PRODUCED_AT_HEADER"]

log = logging.getLogger("gateway.producer")

#: The header the worker reads as the event's ingest time (see connectors.kafka_io).
PRODUCED_AT_HEADER = "produced_at"


class EventProducer:
    """One confluent-kafka producer per gateway process, created in :meth:`start`."""

    def __init__(self, bootstrap: str, topic: str, *, queue_max: int = 100_000,
                 extra_config: Mapping[str, str] | None = None, probe_every: float = 1.0,
                 probe_timeout: float = 2.0, message_timeout_ms: int = 30_000) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.queue_max = queue_max
        self.extra_config = for_producer(extra_config)
        self.probe_every = probe_every
        self.probe_timeout = probe_timeout
        self.message_timeout_ms = message_timeout_ms
        self.available = False
        self.problem = "not started"
        self.produced = self.delivered = self.failed = 0
        self._producer: Producer | None = None
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, wait: float = 2.0) -> "EventProducer":
        """Create the client and its threads; wait up to ``wait`` s for a first probe."""
        config = {
            "bootstrap.servers": self.bootstrap,
            # A little batching, as real producers do; the click path still sees ~ms.
            "linger.ms": 2,
            "queue.buffering.max.messages": self.queue_max,
            "message.timeout.ms": self.message_timeout_ms,
            "socket.connection.setup.timeout.ms": 3000,
            "error_cb": self._on_error,
            "on_delivery": self._on_delivery,
        }
        config.update(self.extra_config)
        self._producer = Producer(config)
        probed = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_reports, name="gateway-kafka-poll", daemon=True),
            threading.Thread(target=self._probe_loop, args=(probed,), name="gateway-kafka-probe",
                             daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        probed.wait(wait)
        return self

    def produce(self, key: bytes, value: bytes) -> None:
        """Queue one message; raises ``BufferError`` when the local queue is full."""
        assert self._producer is not None, "EventProducer.start() first"
        self._producer.produce(self.topic, value, key,
                               headers=[(PRODUCED_AT_HEADER, b"%.6f" % time.time())])
        self.produced += 1

    def queued(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    def close(self, timeout: float = 10.0) -> int:
        """Flush queued messages (up to ``timeout`` s); returns how many were left undelivered."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.probe_timeout + 1.0)
        self._threads = []
        producer, self._producer = self._producer, None
        if producer is None:
            return 0
        left = producer.flush(timeout)
        if left:
            log.warning("gateway: %d events still queued for Kafka after %.0fs at shutdown; "
                        "they are lost", left, timeout)
        return left

    # -- threads and callbacks
    def _serve_reports(self) -> None:
        producer = self._producer
        while not self._stop.is_set() and producer is not None:
            producer.poll(0.1)

    def _probe_loop(self, probed: threading.Event) -> None:
        while not self._stop.is_set():
            self._probe()
            probed.set()
            self._stop.wait(self.probe_every)

    def _probe(self) -> None:
        producer = self._producer
        if producer is None:
            return
        try:
            metadata = producer.list_topics(self.topic, timeout=self.probe_timeout)
        except KafkaException as ex:
            self._mark(False, f"no answer from Kafka at {self.bootstrap}: {ex.args[0].str()}")
            return
        topic = metadata.topics.get(self.topic)
        if topic is None or topic.error is not None:
            why = topic.error.str() if topic is not None and topic.error is not None else "absent"
            self._mark(False, f"events topic {self.topic!r} is not usable: {why}")
            return
        self._mark(True, "")

    def _mark(self, available: bool, problem: str) -> None:
        if available != self.available:
            if available:
                log.info("gateway: Kafka reachable, accepting events")
            else:
                log.warning("gateway: refusing events with 503: %s", problem)
        self.available, self.problem = available, problem

    def _on_error(self, err: KafkaError) -> None:
        if err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._mark(False, f"all Kafka brokers down ({self.bootstrap})")

    def _on_delivery(self, err: KafkaError | None, _msg) -> None:
        if err is None:
            self.delivered += 1
            return
        self.failed += 1
        if self.failed == 1 or self.failed % 1000 == 0:
            log.warning("gateway: %d events not delivered to Kafka; latest error: %s",
                        self.failed, err.str())
