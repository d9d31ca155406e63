"""Kafka on both sides of the flow: the event and catalog sources, the DLQ sink."""

from __future__ import annotations

from typing import Mapping

from typing import Dict, List

import bytewax.operators as op
from bytewax.connectors.kafka import KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.connectors.kafka.operators import KafkaOpOut, _kafka_error_split
from bytewax.dataflow import Dataflow, Stream, operator

from connectors.kafka_props import for_producer
from operators.messages import DeadLetter, Envelope

__all__ = ["kafka_envelopes", "kafka_dead_letters", "source_config", "ingested_at",
           "read_positions"]

OFFSET_BEGINNING = -2
OFFSET_END = -1

# (topic, partition) -> the next offset this process will read, for the consumer-lag
# gauge (connectors.ops_server). Each partition is read by one worker thread, so every
# key has one writer; readers take a copy.
_POSITIONS: dict[tuple[str, int], int] = {}


def read_positions() -> dict[tuple[str, int], int]:
    """Next offset to read per (topic, partition), for partitions read at least once."""
    return dict.copy(_POSITIONS)


class _QuietSource(KafkaSource):
    """Bytewax's KafkaSource, listing partitions without the consumer-only options (it
    hands the source's options to the admin client it lists partitions with, which
    warns about each of them at every start)."""

    def list_parts(self) -> List[str]:
        full = self._add_config
        self._add_config = for_producer(full)
        try:
            return super().list_parts()
        finally:
            self._add_config = full


@operator
def _kafka_input(step_id: str, flow: Dataflow, *, brokers: List[str], topics: List[str],
                 starting_offset: int, add_config: Dict[str, str], batch_size: int) -> KafkaOpOut:
    """``bytewax.connectors.kafka.operators.input`` with :class:`_QuietSource`; the same
    step ids inside (``kafka_input``, ``split_err``), so recovery stores still match."""
    source = _QuietSource(brokers, topics, True, starting_offset, add_config, batch_size,
                          raise_on_errors=False)
    return op.input("kafka_input", flow, source).then(_kafka_error_split, "split_err")


def _to_envelopes(source: str):
    def convert(msgs: list[KafkaSourceMessage]) -> list[Envelope]:
        out = []
        last: dict[tuple[str, int], int] = {}
        for m in msgs:
            out.append(Envelope(m.value, ingested_at(m), source))
            last[(m.topic, m.partition)] = m.offset
        for key, offset in last.items():
            _POSITIONS[key] = offset + 1
        return out

    return convert


PREFETCH_KIB = 2048  # default queued.max.messages.kbytes (see source_config)


def source_config(fetch_wait_ms: int, extra: Mapping[str, str]) -> dict[str, str]:
    """The Kafka source's librdkafka properties; ``extra`` (``KAFKA_*`` settings) wins.

    >>> source_config(5, {})["queued.max.messages.kbytes"]
    '2048'
    >>> source_config(5, {"queued.max.messages.kbytes": "65536"})["queued.max.messages.kbytes"]
    '65536'
    """
    # The broker may hold a fetch open for fetch.wait.max.ms (500 ms by default): with a
    # quiet topic that is pure latency, so it is a few ms by default. tansu on S3 needs
    # more (it answers empty when listing its objects outlasts the wait; see
    # docs/reliability.md).
    #
    # librdkafka prefetches up to 64 MiB or 100,000 messages per partition by default
    # (Bytewax runs a consumer per partition); CPython and the allocator keep most of
    # that memory once it has been used, which on a preloaded topic doubled the worker's
    # RSS. 2 MiB (about 10,000 events; librdkafka may overshoot by one fetch) is still
    # several batches ahead of a worker that ranks a few thousand events a second.
    # KAFKA_QUEUED_MAX_MESSAGES_KBYTES overrides it.
    cfg = {"fetch.wait.max.ms": str(fetch_wait_ms), "fetch.min.bytes": "1",
           "queued.max.messages.kbytes": str(PREFETCH_KIB)}
    cfg.update(extra)
    return cfg


def ingested_at(msg: KafkaSourceMessage) -> float | None:
    """When the event entered Kafka: the producer's `produced_at` stamp, else the broker's."""
    for name, value in msg.headers or ():
        if name == "produced_at":
            try:
                return float(value)
            except (TypeError, ValueError):
                break
    if msg.timestamp and msg.timestamp[1] > 0:
        return msg.timestamp[1] / 1000.0
    return None


def kafka_envelopes(step_id: str, flow: Dataflow, *, brokers: list[str], topic: str,
                    source: str, config: dict[str, str], batch_size: int,
                    starting_offset: int = OFFSET_BEGINNING) -> tuple[Stream, Stream]:
    """(envelopes, dead letters from consumer errors) read from one topic."""
    kin = _kafka_input(step_id, flow, brokers=brokers, topics=[topic],
                       starting_offset=starting_offset, add_config=config, batch_size=batch_size)
    envs = op.flat_map_batch(f"{step_id}_envelope", kin.oks, _to_envelopes(source))
    errs = op.map(
        f"{step_id}_errors", kin.errs,
        lambda e: DeadLetter("kafka:consumer_error", e.msg.value or b"", source, str(e.err)[:200]),
    )
    return envs, errs


def kafka_dead_letters(step_id: str, dead: Stream, *, brokers: list[str], topic: str,
                       config: dict[str, str]) -> None:
    """Forward dead letters to ``{events topic}.dlq`` with the reason in headers."""

    def to_message(dl: DeadLetter) -> KafkaSinkMessage:
        return KafkaSinkMessage(
            key=None,
            value=dl.payload,
            headers=[("reason", dl.reason.encode()), ("source", dl.source.encode()),
                     ("detail", dl.detail[:200].encode())],
        )

    kop.output(step_id, op.map(f"{step_id}_message", dead, to_message), brokers=brokers,
               topic=topic, add_config=for_producer(config))
