"""Routing between the recommend flow's steps, a batch at a time.

Bytewax's filter and map call Python once or twice per message (a shim around the
function); these call it once per batch.
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Stream

__all__ = ["of_types", "not_of_types", "routed", "bundled", "unkeyed"]


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
