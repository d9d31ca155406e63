"""RabbitMQ as the flow's source: queues in, the same envelopes as the Kafka path.

Every queue in ``RABBITMQ_EVENTS_QUEUE`` is one Bytewax partition (owned by one
worker, which consumes it in order); ``RABBITMQ_CONSUMERS_PER_QUEUE > 1`` turns a
queue into several partitions that compete for its messages (faster, but one user's
events may then be processed out of order). Messages are acknowledged only once the
Bytewax epoch that delivered them is finished downstream (see
:class:`QueuePartition`); after a crash the broker redelivers what was not
acknowledged and the user step's ``event_id`` dedupe drops what had already gone
through. docs/rabbitmq.md has the whole story.
"""

from __future__ import annotations

import collections
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Callable, Iterable

import bytewax.operators as op
from bytewax.dataflow import Dataflow, Stream
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

from operators.messages import Envelope
from streamrec.errors import ConfigError
from streamrec.settings import redact_url

try:
    import pika
    import pika.exceptions
except ImportError:  # the rabbitmq extra is optional; said when it is needed
    pika = None

__all__ = ["QueuePartition", "RabbitMQSource", "declare_queues", "ingested_at", "queue_depths",
           "rabbitmq_envelopes"]

log = logging.getLogger("streamrec")

_INSTALL_HINT = "pip install 'streamrec[rabbitmq]'"
_IDLE_POLL = timedelta(milliseconds=2)  # next poll after an empty batch
_MAX_BACKOFF_S = 10.0  # reconnect attempts are spaced up to this much


def _require_pika() -> None:
    if pika is None:
        msg = f"STREAMREC_SOURCE=rabbitmq needs the pika client: {_INSTALL_HINT}"
        raise ConfigError(msg)


def _as_float(value: object) -> float | None:
    try:
        number = float(value.decode() if isinstance(value, bytes) else value)
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return number if number > 0 else None


def ingested_at(properties, received_at: float) -> float:
    """When the event entered the broker, as well as a message can tell.

    In order: a ``produced_at`` header (seconds, as the collector stamps Kafka
    messages), the ``timestamp_in_ms`` header of RabbitMQ's message-timestamp plugin
    (the broker's clock), the AMQP ``timestamp`` property (seconds, set by the
    publisher), else ``received_at``.

    >>> from types import SimpleNamespace as P
    >>> ingested_at(P(headers={"timestamp_in_ms": 1732680000123}, timestamp=None), 9.0)
    1732680000.123
    >>> ingested_at(P(headers=None, timestamp=1732680000), 9.0)
    1732680000.0
    >>> ingested_at(P(headers={"produced_at": b"junk"}, timestamp=None), 9.0)
    9.0
    """
    headers = getattr(properties, "headers", None) or {}
    stamp = _as_float(headers.get("produced_at"))
    if stamp is not None:
        return stamp
    stamp_ms = _as_float(headers.get("timestamp_in_ms"))
    if stamp_ms is not None:
        return stamp_ms / 1000.0
    stamp = _as_float(getattr(properties, "timestamp", None))
    return stamp if stamp is not None else received_at


class QueuePartition(StatefulSourcePartition[Envelope, None]):
    """One consumer of one queue, acknowledging after the dataflow is done.

    Why acknowledgements wait for the next ``next_batch`` after ``snapshot()``:
    Bytewax calls ``snapshot()`` when a partition's epoch ends, right after the last
    batch of that epoch was *emitted*, not processed. It calls ``next_batch`` for the
    following epoch only once its probe shows every earlier epoch finished (without
    recovery: through every output, the Redis sink included; with recovery: through
    the snapshot store, the point Kafka offsets become the resume point). So
    ``snapshot()`` closes the delivery tags of the ending epoch and the next
    ``next_batch`` acknowledges them, all at once (``multiple=True``: delivery tags
    grow in the order messages are emitted).

    Nothing is kept across restarts (``snapshot()`` returns None): the broker keeps
    what was not acknowledged.
    """

    def __init__(self, url: str, queue: str, *, prefetch: int, batch_size: int,
                 source: str, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.queue = queue
        self.prefetch = prefetch
        self.batch_size = batch_size
        self.source = source
        self.clock = clock
        self._connection = None
        self._channel = None
        self._inbox: collections.deque[tuple[int, Envelope]] = collections.deque()
        self._emitted_tag = 0  # highest delivery tag handed to the dataflow
        self._closed_tag = 0  # highest delivery tag of an ended epoch
        self._acked_tag = 0
        self._next_awake: datetime | None = None
        self._failures = 0
        self._cancelled = False
        self._connect(first=True)

    # -- connection
    def _connect(self, *, first: bool = False) -> None:
        params = pika.URLParameters(self.url)
        try:
            connection = pika.BlockingConnection(params)
        except pika.exceptions.AMQPError as ex:
            if first:
                msg = (f"cannot connect to RabbitMQ at {redact_url(self.url)} ({ex!r}); "
                       "check RABBITMQ_URL and that the broker is running")
                raise ConfigError(msg) from ex
            raise
        try:
            channel = connection.channel()
            channel.queue_declare(self.queue, passive=True)
        except pika.exceptions.ChannelClosedByBroker as ex:
            connection.close()
            msg = (f"RabbitMQ queue {self.queue!r} does not exist on {redact_url(self.url)} "
                   f"({ex.reply_text}); declare it (durable) or fix RABBITMQ_EVENTS_QUEUE / "
                   "RABBITMQ_ITEMS_QUEUE (docs/rabbitmq.md)")
            raise ConfigError(msg) from ex
        channel.basic_qos(prefetch_count=self.prefetch)
        # The broker cancels a consumer when its queue is deleted or (quorum queues)
        # moves to another node: start over as after a lost connection.
        channel.add_on_cancel_callback(self._on_cancel)
        channel.basic_consume(self.queue, self._on_message, auto_ack=False)
        self._connection, self._channel = connection, channel
        self._cancelled = False
        # Delivery tags count per channel: a new channel starts over.
        self._emitted_tag = self._closed_tag = self._acked_tag = 0

    def _on_cancel(self, _frame) -> None:
        self._cancelled = True

    def _on_message(self, _channel, method, properties, body: bytes) -> None:
        envelope = Envelope(body, ingested_at(properties, self.clock()), self.source)
        self._inbox.append((method.delivery_tag, envelope))

    def _lost(self, ex: Exception) -> None:
        """The connection broke: the broker requeues what we did not acknowledge."""
        self._failures += 1
        backoff = min(_MAX_BACKOFF_S, 0.2 * 2 ** min(self._failures, 10))
        log.warning("rabbitmq: lost queue %r on %s (%r); unacknowledged messages go back "
                    "to the queue, reconnecting in %.1f s", self.queue, redact_url(self.url),
                    ex, backoff)
        self._close_quietly()
        self._inbox.clear()
        self._next_awake = datetime.now(timezone.utc) + timedelta(seconds=backoff)

    def _close_quietly(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # noqa: BLE001 - already broken; nothing left to tell
                pass

    # -- Bytewax
    def next_batch(self) -> Iterable[Envelope]:
        try:
            if self._connection is None:
                self._connect()
                log.info("rabbitmq: consuming queue %r again", self.queue)
            elif not self._connection.is_open:
                raise pika.exceptions.ConnectionWrongStateError("connection closed")
            elif self._cancelled:
                raise pika.exceptions.ConsumerCancelled("the broker cancelled the consumer")
            if self._closed_tag > self._acked_tag:
                self._channel.basic_ack(self._closed_tag, multiple=True)
                self._acked_tag = self._closed_tag
            if len(self._inbox) < self.batch_size:
                self._connection.process_data_events(time_limit=0)
        except (pika.exceptions.AMQPError, OSError) as ex:
            self._lost(ex)
            return []
        self._failures = 0
        batch = []
        for _ in range(min(self.batch_size, len(self._inbox))):
            tag, envelope = self._inbox.popleft()
            batch.append(envelope)
            self._emitted_tag = tag
        self._next_awake = None if batch else datetime.now(timezone.utc) + _IDLE_POLL
        return batch

    def next_awake(self) -> datetime | None:
        return self._next_awake

    def snapshot(self) -> None:
        self._closed_tag = self._emitted_tag
        return None

    def close(self) -> None:
        # Unacknowledged messages go back to the queue: nothing is acknowledged here,
        # since close() does not mean the last epoch went through.
        self._close_quietly()


class RabbitMQSource(FixedPartitionedSource[Envelope, None]):
    """Consume ``queues`` (``consumers`` partitions each) as envelopes of ``source``."""

    def __init__(self, url: str, queues: Iterable[str], *, source: str, prefetch: int = 5000,
                 batch_size: int = 1000, consumers: int = 1) -> None:
        _require_pika()
        self.url = url
        self.queues = tuple(queues)
        self.source = source
        self.prefetch = prefetch
        self.batch_size = batch_size
        self.consumers = consumers

    def list_parts(self) -> list[str]:
        if self.consumers == 1:
            return list(self.queues)
        return [f"{queue}#{i}" for queue in self.queues for i in range(self.consumers)]

    def build_part(self, step_id: str, for_part: str, resume_state: None) -> QueuePartition:
        queue = for_part.rsplit("#", 1)[0] if self.consumers > 1 else for_part
        return QueuePartition(self.url, queue, prefetch=self.prefetch,
                              batch_size=self.batch_size, source=self.source)


def rabbitmq_envelopes(step_id: str, flow: Dataflow, *, url: str, queues: Iterable[str],
                       source: str, prefetch: int, batch_size: int,
                       consumers: int = 1) -> Stream:
    """Envelopes read from ``queues``; acknowledged once processed (see QueuePartition)."""
    return op.input(step_id, flow, RabbitMQSource(url, queues, source=source, prefetch=prefetch,
                                                  batch_size=batch_size, consumers=consumers))


def declare_queues(url: str, queues: Iterable[str], *, exchange: str | None = None) -> None:
    """Declare durable ``queues``; with ``exchange``, also a consistent-hash exchange
    (plugin ``rabbitmq_consistent_hash_exchange``) spreading routing keys, the user
    ids, over them: one user's events then always land in the same queue."""
    _require_pika()
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        if exchange:
            channel.exchange_declare(exchange, exchange_type="x-consistent-hash", durable=True)
        for queue in queues:
            channel.queue_declare(queue, durable=True)
            if exchange:
                channel.queue_bind(queue, exchange, routing_key="1")  # equal weights
    finally:
        connection.close()


def queue_depths(url: str, queues: Iterable[str], *, timeout: float = 5.0) -> dict[str, int]:
    """Messages ready (not yet delivered) per queue; raises when a queue is missing."""
    _require_pika()
    params = pika.URLParameters(url)
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        return {queue: channel.queue_declare(queue, passive=True).method.message_count
                for queue in queues}
    finally:
        if connection.is_open:
            connection.close()
