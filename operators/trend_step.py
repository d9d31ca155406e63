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
from typing import Callable, Iterable

from bytewax.operators import StatefulBatchLogic

from models.trending import Trending
from operators.messages import PopularityReport, SegmentHit, TrendDelta

__all__ = ["TrendStepConfig", "TrendLogic"]


@dataclass(frozen=True)
class TrendStepConfig:
    half_life: float = 6 * 3600.0
    rank_shards: int = 8
    batch: int = 200
    max_delay: float = 30.0  # event-time seconds a report may wait for its batch
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)


class _TrendState:
    __slots__ = ("trending", "reports", "broadcasts", "items", "segments", "oldest")

    def __init__(self, half_life: float) -> None:
        self.trending = Trending(half_life)
        self.reports = 0
        self.broadcasts = 0
        self.items: dict[str, tuple] = {}  # item -> (item, category, popularity, ts)
        self.segments: dict[tuple[str, str], tuple] = {}
        self.oldest: float | None = None  # event time of the oldest unsent report

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)


class TrendLogic(StatefulBatchLogic):
    def __init__(self, cfg: TrendStepConfig, resume: bytes | None,
                 on_news: Callable[[int], None] | None = None) -> None:
        self.cfg = cfg
        self.on_news = on_news  # replays: told of news landed and sent (see dataflows.recommend)
        self.state = pickle.loads(resume) if resume is not None else _TrendState(cfg.half_life)

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        st = self.state
        latest = st.oldest
        for msg in values:
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
            if st.oldest is None:
                st.oldest = msg.ts
            latest = msg.ts if latest is None else max(latest, msg.ts)
        # Young aggregators broadcast after 1, 2, 4, ... reports: cold start warms fast;
        # under light traffic a report waits at most max_delay of event time (checked
        # as further reports arrive).
        due = min(self.cfg.batch, 1 << min(st.broadcasts, 20))
        stale = st.oldest is not None and latest - st.oldest >= self.cfg.max_delay
        out: list = []
        if (st.reports >= due or stale) and (st.items or st.segments):
            items, segments = list(st.items.values()), list(st.segments.values())
            origin = values[0].route  # this aggregator's key
            out = [TrendDelta(f"rank-{s}", items, segments, origin, st.broadcasts + 1)
                   for s in range(self.cfg.rank_shards)]
            st.items, st.segments = {}, {}
            st.reports = 0
            st.oldest = None
            st.broadcasts += 1
        if self.on_news is not None:
            self.on_news(len(out) - len(values))
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None  # recovery is off: nobody reads it
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
