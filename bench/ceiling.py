"""The ceiling flow: the least any dataflow must do per event to honour the output contract.

Kafka source -> orjson parse -> key by user -> keep the user's last K items -> per event one
``XADD`` to ``{prefix}:recs`` and one ``SET`` of ``{prefix}:latest:{user}`` (K items as JSON),
pipelined per batch. Same broker, same source settings (``fetch.wait.max.ms``, batch size),
same events and same Redis as the real worker, configured by the same environment
variables, so ``full / ceiling`` says how much of the budget the recommender itself uses:

    python -m bytewax.run bench.ceiling            # like python -m bytewax.run dataflows.recommend

No ranking, no item state, no dead letters (unparsable events are dropped), no guarded
writes: everything here is forced by the contract, nothing more.

>>> logic = LastItems(k=2, resume=None)
>>> out, _ = logic.on_batch([("u1", "e1", "p1", 1.0, None), ("u1", "e2", None, 2.0, None),
...                          ("u1", "e3", "p3", 3.0, 9.5)])
>>> [(r.trigger_event_id, r.seq, r.items) for r in out]
[('e1', 1, ['p1']), ('e2', 2, ['p1']), ('e3', 3, ['p1', 'p3'])]
>>> LastItems(2, logic.snapshot()).items
['p1', 'p3']
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from typing import Iterable

import bytewax.operators as op
import orjson
import redis
from bytewax.connectors.kafka import KafkaSourceMessage
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow
from bytewax.operators import StatefulBatchLogic
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from connectors.kafka_io import OFFSET_BEGINNING, ingested_at, source_config
from streamrec.settings import Settings

__all__ = ["CeilingRec", "CeilingSink", "LastItems", "build_ceiling_flow", "parse_message"]


@dataclass(slots=True)
class CeilingRec:
    """One per event: the user's last K items after it."""

    user_id: str
    trigger_event_id: str
    seq: int
    event_ts: float
    ingested_at: float | None
    items: list


def parse_message(msg: KafkaSourceMessage) -> tuple[str, tuple] | None:
    """Kafka message -> ``(user, (user, event_id, item_id, ts, ingested_at))``, None if unusable."""
    try:
        event = orjson.loads(msg.value)
        user, event_id = event["user_id"], event["event_id"]
    except (orjson.JSONDecodeError, TypeError, KeyError):
        return None
    if not isinstance(user, str) or not isinstance(event_id, str):
        return None
    ts = event.get("ts")
    return user, (user, event_id, event.get("item_id"), ts if isinstance(ts, (int, float)) else 0.0,
                  ingested_at(msg))


class LastItems(StatefulBatchLogic):
    """Per-user state: the last ``k`` item ids and an event counter."""

    def __init__(self, k: int, resume: bytes | None) -> None:
        self.k = k
        self.items: list[str] = []
        self.seq = 0
        if resume is not None:
            self.items, self.seq = pickle.loads(resume)

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        out = []
        items, k = self.items, self.k
        for user_id, event_id, item_id, ts, ingested_at in values:
            self.seq += 1
            if item_id is not None:
                items.append(item_id)
                if len(items) > k:
                    del items[0]
            out.append(CeilingRec(user_id, event_id, self.seq, ts, ingested_at, list(items)))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes:
        return pickle.dumps((self.items, self.seq), protocol=pickle.HIGHEST_PROTOCOL)


class _CeilingPartition(StatelessSinkPartition):
    def __init__(self, url: str, prefix: str, recs_maxlen: int, model_version: str) -> None:
        self.client = redis.Redis.from_url(url, socket_keepalive=True)
        self.recs = f"{prefix}:recs"
        self.latest = f"{prefix}:latest:"
        self.recs_maxlen = recs_maxlen
        self.model_version = model_version

    def write_batch(self, items: list[tuple[str, CeilingRec]]) -> None:
        pipe = self.client.pipeline(transaction=False)
        emitted_at = time.time()
        dumps, recs, latest = orjson.dumps, self.recs, self.latest
        for _, rec in items:
            n = len(rec.items)
            ranked = [{"item_id": i, "score": (n - r) / n} for r, i in enumerate(reversed(rec.items))]
            pipe.xadd(recs, {
                "user_id": rec.user_id, "trigger_event_id": rec.trigger_event_id,
                "event_ts": repr(rec.event_ts), "emitted_at": repr(emitted_at),
                "items": dumps(ranked), "strategy": "last-k", "model_version": self.model_version,
                "seq": str(rec.seq),
                "ingested_at": repr(rec.ingested_at) if rec.ingested_at is not None else "",
            }, maxlen=self.recs_maxlen, approximate=True)
            pipe.set(latest + rec.user_id, dumps({
                "user_id": rec.user_id, "trigger_event_id": rec.trigger_event_id,
                "event_ts": rec.event_ts, "emitted_at": emitted_at, "items": ranked,
                "strategy": "last-k", "model_version": self.model_version, "seq": rec.seq,
            }))
        if items:
            pipe.execute()

    def close(self) -> None:
        self.client.close()


class CeilingSink(DynamicSink):
    """One Redis client per worker; one pipeline per batch."""

    def __init__(self, url: str, prefix: str, recs_maxlen: int = 100_000,
                 model_version: str = "ceiling") -> None:
        self.url = url
        self.prefix = prefix
        self.recs_maxlen = recs_maxlen
        self.model_version = model_version

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CeilingPartition:
        return _CeilingPartition(self.url, self.prefix, self.recs_maxlen, self.model_version)


def build_ceiling_flow(settings: Settings) -> Dataflow:
    """The ceiling flow over the worker's own settings (topic, Redis, prefix, K)."""
    flow = Dataflow("streamrec_ceiling")
    cfg = source_config(settings.kafka_fetch_wait_ms, settings.kafka_config)
    # The ceiling reads with librdkafka's own prefetch (64 MiB): measured on Taobao, the
    # worker's 2 MiB cost this flow ~19% more CPU per event (the full flow: no difference
    # above noise), and a slower ceiling would flatter the ratio to it.
    if "queued.max.messages.kbytes" not in settings.kafka_config:
        cfg["queued.max.messages.kbytes"] = "65536"
    kin = kop.input("events_in", flow, brokers=settings.brokers, topics=[settings.events_topic],
                    tail=True, starting_offset=OFFSET_BEGINNING, add_config=cfg,
                    batch_size=settings.kafka_batch_size)
    by_user = op.filter_map("parse", kin.oks, parse_message)
    k = settings.top_k
    lists = op.stateful_batch("last_k", by_user, lambda resume: LastItems(k, resume))
    op.output("redis_out", lists, CeilingSink(settings.redis_url, settings.prefix,
                                             settings.recs_maxlen))
    return flow


def __getattr__(name: str) -> Dataflow:
    # `python -m bytewax.run bench.ceiling` looks up `flow`; building it lazily keeps a plain
    # import (tests, doctests) free of environment parsing.
    if name == "flow":
        return build_ceiling_flow(Settings.from_env())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
