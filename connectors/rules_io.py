"""Merchandising rules in and out: rule records to the controls topic, the rules in force
from ``{prefix}:rules`` (a hash the worker's sink writes after it applied a change)."""

from __future__ import annotations

import orjson

from connectors.replay import produce_raw
from connectors.topics import ensure_topics
from streamrec.settings import Settings

__all__ = ["send_rules", "read_rules"]


def send_rules(settings: Settings, records: list[dict]) -> int:
    """Produce rule records to the controls topic (created when missing), keyed by rule
    id; returns how many the broker acknowledged."""
    ensure_topics(settings.kafka_bootstrap_servers, {settings.controls_topic: 1},
                  config=dict(settings.kafka_config))
    payloads = [(r["rule_id"].encode(), orjson.dumps(r)) for r in records]
    return produce_raw(settings.kafka_bootstrap_servers, settings.controls_topic, payloads,
                       dict(settings.kafka_config))


def read_rules(settings: Settings) -> list[dict]:
    """The rules the worker has in force, in the order they were added."""
    import redis

    client = redis.Redis.from_url(settings.redis_url)
    try:
        raw = client.hgetall(f"{settings.prefix}:rules")
    finally:
        client.close()
    return [orjson.loads(v) for v in raw.values()]
