"""Trending aggregators: a few keys that collect throttled popularity reports from the
item step (and segment hits from the user step) and send the changes, batched, to every
rank shard (broadcast by duplication of a small, slowly changing model).

Per event this costs a fraction of a message: an item reports only when its decayed
popularity has grown by ``growth`` since its last report, and an aggregator broadcasts
once per ``batch`` reports (sooner while it is young, so a fresh system warms up fast).
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
    batch: int = 200
    # Event-time seconds a report may wait for its batch: live, a batch fills in well
    # under a second; a replay of history (one event at a time) broadcasts about as
    # often as the live flow would, with no replay-only setting.
    max_delay: float = 1.0
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)


class _TrendState:
    __slots__ = ("trending", "reports", "broadcasts", "items", "segments", "oldest", "newest")

    def __init__(self, half_life: float) -> None:
        self.trending = Trending(half_life)
        self.reports = 0
        self.broadcasts = 0
        self.items: dict[str, tuple] = {}  # item -> (item, category, popularity, ts)
        self.segments: dict[tuple[str, str], tuple] = {}
        self.oldest: float | None = None  # event time of the oldest unsent report
        self.newest: float | None = None  # and of the newest

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)
        if len(state) < len(self.__slots__):  # snapshots from before `newest`
            self.newest = self.oldest


class TrendLogic(StatefulBatchLogic):
    """Collects reports and broadcasts them when a report of a later event time comes
    and the unsent ones are enough (``batch``; 1, 2, 4, ... while young, so a fresh
    system warms up fast) or old enough (``max_delay`` of event time).

    Deciding only when event time moves on makes the broadcasts a function of the
    reports alone: reports of one event (same time) reach an aggregator from several
    workers in any order and batching, and always travel in the same broadcast.
    """

    def __init__(self, cfg: TrendStepConfig, resume: bytes | None) -> None:
        self.cfg = cfg
        self.state = pickle.loads(resume) if resume is not None else _TrendState(cfg.half_life)

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        st = self.state
        out: list = []
        for msg in values:
            ts = msg.ts
            if st.newest is not None and ts > st.newest:
                due = min(self.cfg.batch, 1 << min(st.broadcasts, 20))
                if st.reports >= due or ts - st.oldest >= self.cfg.max_delay:
                    out.extend(self._broadcast(msg.route, ts))
            if isinstance(msg, PopularityReport):
                st.items[msg.item_id] = (msg.item_id, msg.category, msg.popularity, msg.ts,
                                         msg.vector)
            elif isinstance(msg, SegmentHit):
                st.trending.observe_segment(msg.segment, msg.item_id, msg.weight, msg.ts)
                value = st.trending.segment_value(msg.segment, msg.item_id, msg.ts)
                st.segments[(msg.segment, msg.item_id)] = (msg.segment, msg.item_id, value, msg.ts)
            else:
                err = f"trend step got an unexpected {type(msg).__name__}"
                raise TypeError(err)
            st.reports += 1
            st.oldest = ts if st.oldest is None else min(st.oldest, ts)
            st.newest = ts if st.newest is None else max(st.newest, ts)
        return out, StatefulBatchLogic.RETAIN

    def _broadcast(self, origin: str, release: float) -> list[TrendDelta]:
        """Every unsent report, to every rank shard (``origin``: this aggregator's key),
        for lists of events after ``release``."""
        st = self.state
        items, segments = list(st.items.values()), list(st.segments.values())
        st.items, st.segments = {}, {}
        st.reports = 0
        st.oldest = st.newest = None
        if not items and not segments:
            return []
        st.broadcasts += 1
        return [TrendDelta(f"rank-{s}", items, segments, origin, st.broadcasts, release)
                for s in range(self.cfg.rank_shards)]

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None  # recovery is off: nobody reads it
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
