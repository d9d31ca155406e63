"""Trending aggregators: a few keys that collect popularity reports from the item step
(and segment hits from the user step) and send the changes to every rank shard
(broadcast by duplication of a small, slowly changing model; each worker applies one
copy, see ``operators.worker_models``).

An aggregator sends what a batch of reports brought, once per batch: under load a batch
holds many reports, so broadcasts stay few, and a quiet system still sees trending move
within one activation. A broadcast is applied only to lists of events later than its
newest report, so how reports happened to be batched (which differs between runs and
worker counts) never changes a list: a replay gives the same lists with any number of
workers, with the production settings.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Iterable

from bytewax.operators import StatefulBatchLogic

from models.trending import Trending
from operators.messages import PopularityReport, SegmentHit, TrendDelta

__all__ = ["TrendStepConfig", "TrendLogic"]


@dataclass(frozen=True)
class TrendStepConfig:
    half_life: float = 6 * 3600.0
    rank_shards: int = 8
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)


class _TrendState:
    __slots__ = ("trending", "broadcasts")

    def __init__(self, half_life: float) -> None:
        self.trending = Trending(half_life)  # segment popularity (items report their own)
        self.broadcasts = 0

    def __getstate__(self):
        return (self.trending, self.broadcasts)

    def __setstate__(self, state):
        if len(state) == 6:  # older: (trending, reports, broadcasts, items, segments, oldest)
            state = (state[0], state[2])
        self.trending, self.broadcasts = state


class TrendLogic(StatefulBatchLogic):
    def __init__(self, cfg: TrendStepConfig, resume: bytes | None) -> None:
        self.cfg = cfg
        self.state = pickle.loads(resume) if resume is not None else _TrendState(cfg.half_life)

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        """``values``: bundles (lists) of reports to this aggregator, in the order they
        were sent (``dataflows.routing.bundled``)."""
        values = [m for bundle in values for m in bundle]
        st = self.state
        items: dict[str, tuple] = {}  # item -> (item, category, popularity, ts, vector)
        segments: dict[tuple[str, str], tuple] = {}
        newest = float("-inf")
        for msg in values:
            if isinstance(msg, PopularityReport):
                items[msg.item_id] = (msg.item_id, msg.category, msg.popularity, msg.ts,
                                      msg.vector)
            elif isinstance(msg, SegmentHit):
                st.trending.observe_segment(msg.segment, msg.item_id, msg.weight, msg.ts)
                value = st.trending.segment_value(msg.segment, msg.item_id, msg.ts)
                segments[(msg.segment, msg.item_id)] = (msg.segment, msg.item_id, value, msg.ts)
            else:
                err = f"trend step got an unexpected {type(msg).__name__}"
                raise TypeError(err)
            newest = max(newest, msg.ts)
        # What this batch brought, to every rank shard, for lists of events after it.
        st.broadcasts += 1
        origin = values[0].route  # this aggregator's key
        out = [TrendDelta(f"rank-{s}", list(items.values()), list(segments.values()), origin,
                          st.broadcasts, newest)
               for s in range(self.cfg.rank_shards)]
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None  # recovery is off: nobody reads it
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
