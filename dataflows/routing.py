"""Routing between the recommend flow's steps, a batch at a time.

Bytewax's filter and map call Python once or twice per message (a shim around the
function); these call it once per batch.
"""

from __future__ import annotations

import itertools
import secrets
import threading

import bytewax.operators as op
from bytewax.dataflow import Stream

from operators.messages import FeaturesBundle

__all__ = ["of_types", "not_of_types", "routed", "bundled", "unkeyed", "features_to"]


def of_types(step_id: str, up: Stream, types) -> Stream:
    """The messages of ``types``."""
    return op.flat_map_batch(step_id, up, lambda batch: [m for m in batch if isinstance(m, types)])


def not_of_types(step_id: str, up: Stream, types) -> Stream:
    """The messages not of ``types``."""
    return op.flat_map_batch(step_id, up,
                             lambda batch: [m for m in batch if not isinstance(m, types)])


def routed(step_id: str, up: Stream) -> Stream:
    """Messages keyed by where they go (their ``route``)."""
    return op.flat_map_batch(step_id, up, lambda batch: [(m.route, m) for m in batch])


def bundled(step_id: str, up: Stream) -> Stream:
    """Messages grouped by where they go: one ``(route, [messages])`` per destination
    and batch, each list in the batch's order. A destination with few keys (rank
    shards, trending aggregators) then gets one message per batch instead of one per
    event, the difference between workers, where each message is pickled alone."""
    def group(batch: list) -> list:
        out: dict[str, list] = {}
        for m in batch:
            got = out.get(m.route)
            if got is None:
                out[m.route] = [m]
            else:
                got.append(m)
        return list(out.items())
    return op.flat_map_batch(step_id, up, group)


def unkeyed(step_id: str, up: Stream) -> Stream:
    """A stateful step's output without its keys."""
    return op.flat_map_batch(step_id, up, lambda batch: [m for _, m in batch])


def features_to(shards: list[str]):
    """A batch's catalog feature changes as one :class:`FeaturesBundle` per rank shard,
    numbered per sending worker (a random name per process and thread, a counter), so
    that a worker applies one copy to its shards' shared models instead of one per shard.

    >>> send = features_to(["rank-0", "rank-1"])
    >>> a, b = send(["f1"]); c, _ = send(["f2"])
    >>> (a.route, b.route, a.origin == b.origin == c.origin, a.seq, b.seq, c.seq)
    ('rank-0', 'rank-1', True, 1, 1, 2)
    """
    process = secrets.token_hex(6)
    # Each sending worker numbers its own bundles: copies of one origin reach a worker in
    # the order sent, which holds per sending worker only. Workers are told apart by
    # thread id (Bytewax calls in from its own threads, whose Python thread state, and
    # with it any threading.local, does not outlive a call).
    counters: dict[int, tuple[str, itertools.count]] = {}

    def to_shards(batch: list) -> list:
        thread = threading.get_ident()
        mine = counters.get(thread)
        if mine is None:
            mine = counters.setdefault(thread, (f"features:{process}:{thread}",
                                                itertools.count(1)))
        origin, counter = mine
        seq = next(counter)
        return [FeaturesBundle(r, batch, origin, seq) for r in shards]
    return to_shards
