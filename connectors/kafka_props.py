"""Which librdkafka properties are for consumers only.

``KAFKA_*`` settings reach every Kafka client the worker, the gateway and the tools
make; a producer or admin client warns (CONFWARN) about each consumer-only property it
is given, once per client start. Those clients take their settings through
:func:`for_producer`.

>>> for_producer({"security.protocol": "SSL", "fetch.wait.max.ms": "5"})
{'security.protocol': 'SSL'}
"""

from __future__ import annotations

from typing import Mapping

__all__ = ["CONSUMER_ONLY", "for_producer"]

CONSUMER_ONLY = frozenset({"fetch.wait.max.ms", "fetch.min.bytes", "fetch.max.bytes",
                           "fetch.error.backoff.ms", "fetch.queue.backoff.ms",
                           "queued.min.messages", "queued.max.messages.kbytes",
                           "max.partition.fetch.bytes", "auto.offset.reset",
                           "enable.partition.eof", "check.crcs", "isolation.level",
                           "group.id", "enable.auto.commit", "auto.commit.interval.ms",
                           "session.timeout.ms", "max.poll.interval.ms",
                           "partition.assignment.strategy", "heartbeat.interval.ms",
                           "fetch.message.max.bytes", "enable.auto.offset.store",
                           "group.instance.id", "coordinator.query.interval.ms",
                           "group.protocol", "group.remote.assignor",
                           "consume.callback.max.messages"})


def for_producer(config: Mapping[str, str] | None) -> dict[str, str]:
    """``config`` without the consumer-only properties (for a producer or admin client)."""
    return {k: v for k, v in (config or {}).items() if k not in CONSUMER_ONLY}
