"""Kafka topic administration: create missing topics, check their partition counts.

Used with the embedded broker and with any real cluster (``config`` carries the
security settings). Split from ``connectors.embedded`` so the process supervision and
the admin protocol each have their own module.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import Future

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from connectors.kafka_props import for_producer
from streamrec.errors import ConfigError

__all__ = ["ensure_topics"]

_TOPIC_NAME = re.compile(r"[a-zA-Z0-9._-]{1,249}")


def ensure_topics(
    bootstrap: str,
    topics: dict[str, int],
    *,
    config: dict | None = None,
    timeout: float = 30.0,
) -> None:
    """Create the topics that are missing and grow the ones with too few partitions.

    ``topics`` maps a topic name to its partition count (replication factor 1).
    ``config`` adds confluent-kafka client settings (e.g. SASL/TLS). Returns once
    the broker's metadata shows every topic with at least that many partitions.
    """
    for name, count in topics.items():
        # Checked here because tansu accepts any name that real Kafka would refuse.
        if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
            msg = f"ensure_topics: {name!r} is not a Kafka topic name (1-249 of [a-zA-Z0-9._-])"
            raise ConfigError(msg)
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            msg = f"ensure_topics: topic {name!r} needs a partition count >= 1, got {count!r}"
            raise ConfigError(msg)
    if not topics:
        return
    admin = AdminClient({**for_producer(config), "bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout
    existing = _partition_counts(admin, bootstrap, deadline)

    missing = [NewTopic(name, n, 1) for name, n in topics.items() if name not in existing]
    if missing:
        for name, future in admin.create_topics(missing, request_timeout=timeout).items():
            error = _result_error(future)
            # Someone else creating it first is fine: the wait below checks its size.
            if error is not None and error.code() != KafkaError.TOPIC_ALREADY_EXISTS:
                msg = f"ensure_topics: could not create topic {name!r} on {bootstrap}: {error.str()}"
                raise ConfigError(msg) from future.exception()

    short = {name: n for name, n in topics.items() if 0 < existing.get(name, 0) < n}
    if short:
        grow = [NewPartitions(name, n) for name, n in short.items()]
        for name, future in admin.create_partitions(grow, request_timeout=timeout).items():
            error = _result_error(future)
            if error is not None and error.code() == KafkaError._UNSUPPORTED_FEATURE:
                msg = (f"ensure_topics: topic {name!r} has {existing[name]} partitions, "
                       f"{short[name]} are wanted, and the broker at {bootstrap} cannot add "
                       "partitions (no CreatePartitions, e.g. tansu): delete the topic or "
                       "use a new topic name")
                raise ConfigError(msg) from future.exception()
            if error is not None:
                msg = (f"ensure_topics: could not add partitions to {name!r} on {bootstrap}: "
                       f"{error.str()}")
                raise ConfigError(msg) from future.exception()

    while True:
        counts = _partition_counts(admin, bootstrap, deadline)
        lacking = {t: counts.get(t, 0) for t, n in topics.items() if counts.get(t, 0) < n}
        if not lacking:
            return
        if time.monotonic() >= deadline:
            msg = (f"ensure_topics: after {timeout:.0f}s the broker at {bootstrap} still shows "
                   f"{lacking} partitions (wanted {topics})")
            raise ConfigError(msg)
        time.sleep(0.05)


def _result_error(future: Future) -> KafkaError | None:
    """The Kafka error an admin request's future ended with, None on success."""
    try:
        future.result()
    except KafkaException as ex:
        return ex.args[0]
    return None


def _partition_counts(admin: AdminClient, bootstrap: str, deadline: float) -> dict[str, int]:
    try:
        metadata = admin.list_topics(timeout=max(0.5, deadline - time.monotonic()))
    except KafkaException as ex:
        msg = (f"ensure_topics: no metadata from the Kafka broker at {bootstrap} ({ex}); "
               "check KAFKA_BOOTSTRAP_SERVERS and the security settings")
        raise ConfigError(msg) from ex
    return {name: len(t.partitions) for name, t in metadata.topics.items() if t.error is None}
