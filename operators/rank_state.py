"""A rank shard's state: the shared models beside its users, the requests waiting for
answers, the event-time queue of trend news, and which erased lives to ignore.

Pickled as the rank step's snapshot. Snapshots written before this module existed name
``operators.rank_step.RankShardState``, which that module re-exports.
"""

from __future__ import annotations

import heapq
import itertools
import time
from dataclasses import dataclass, field

import numpy as np

from models.blend import ContextBlend, OnlineBlend
from models.content import VectorIndex
from models.mf import ImplicitMF
from models.ranking import FEATURES, RankConfig, prior_weights
from models.trending import Trending

__all__ = ["RankStepConfig", "RankShardState", "of_erased_life"]

# Tie-breaker for deferred trend entries with equal (ts, kind): increasing across
# restarts too, so entries never compare by their payload (which may hold arrays).
_ORDER = itertools.count(time.time_ns())


@dataclass(frozen=True)
class RankStepConfig:
    ranking: RankConfig = field(default_factory=RankConfig)
    trending_half_life: float = 6 * 3600.0
    conflate: bool = True
    model_version: str = "streamrec-0.1"
    max_pending: int = 20_000
    max_users: int = 200_000
    max_item_categories: int = 50_000
    max_feedback_users: int = 5_000
    max_item_vectors: int = 20_000
    content_search_window: int = 2_048  # nearest-item search: the items put most recently
    max_deferred: int = 100_000  # trend entries waiting for a request with a later ts
    # Requests ranked together span at most this much event time; each sees trend news
    # up to the first of them (see operators.rank_step._rounds).
    batch_window: float = 1.0
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)


class RankShardState:
    __slots__ = ("trending", "item_category", "unavailable", "pending", "last_seq", "forgotten",
                 "blend", "shown", "vectors", "mf", "ready", "deferred", "recent")

    def __init__(self, cfg: RankStepConfig) -> None:
        self.trending = Trending(cfg.trending_half_life)
        self.item_category: dict[str, str] = {}
        self.unavailable: set[str] = set()
        self.pending: dict[tuple[str, int], list] = {}  # (user, seq) -> [request, answers]
        self.last_seq: dict[str, int] = {}
        # Erased users: answers to their requests up to this seq are dropped on arrival.
        self.forgotten: dict[str, int] = {}
        self.blend = ContextBlend(prior_weights(cfg.ranking), cfg.ranking.learning_rate)
        # user -> (candidates best first, their feature rows): what the blend learns from
        # when the user's next item event shows which one they chose.
        self.shown: dict[str, tuple[list[str], np.ndarray, int]] = {}
        self.vectors = VectorIndex(cfg.max_item_vectors, cfg.content_search_window)
        self.mf = ImplicitMF(max_users=cfg.max_users // 4, max_items=cfg.max_item_vectors)
        # Complete requests waiting for an earlier one of the same user (exact order).
        self.ready: dict[tuple[str, int], list] = {}
        # Trend entries not yet applied, a heap by event time: a request sees only what
        # happened before it, even when a batch (or a faster worker) brings later news.
        # A heap, not a sorted list: with several processes news arrives out of order
        # and merging into a long sorted list per message was quadratic.
        self.deferred: list[tuple] = []  # heap of (ts, kind, order, entry)
        # Items this shard's users acted on last (newest last): the list of last resort
        # when a fresh system knows nothing else yet (no trend news has arrived).
        self.recent: dict[str, None] = {}

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)
        # Older snapshots end earlier: before the event-time queue, before `recent`.
        if len(state) <= self.__slots__.index("deferred"):
            self.deferred = []
        if len(state) <= self.__slots__.index("recent"):
            self.recent = {}
        if self.deferred and len(self.deferred[0]) == 3:  # a sorted list: (ts, kind, entry)
            self.deferred = [(ts, kind, next(_ORDER), e) for ts, kind, e in self.deferred]
            heapq.heapify(self.deferred)  # sorted by ts only, not by (ts, kind)
        blend = self.blend
        if isinstance(blend, OnlineBlend):  # from before one blend per session context
            if len(blend.weights) == len(FEATURES) - 1:  # and before the `knn` feature
                at = FEATURES.index("knn")
                for name in ("prior", "raw", "weights"):
                    setattr(blend, name, np.insert(getattr(blend, name), at, 0.0))
            self.blend = ContextBlend.from_single(blend)
            self.shown = {}  # feedback rows without their context

    def apply_until(self, ts: float | None, learn_category) -> None:
        """Apply deferred trend entries older than ``ts`` (all of them when None)."""
        deferred = self.deferred
        if not deferred:
            return
        if ts is None:
            self.apply_count(len(deferred), learn_category)
            return
        pop = heapq.heappop
        due = []
        while deferred and deferred[0][0] < ts:
            due.append(pop(deferred))
        self._apply(due, learn_category)

    def apply_count(self, n: int, learn_category) -> None:
        """Apply the ``n`` oldest deferred trend entries."""
        deferred = self.deferred
        if n <= 0:
            return
        if n >= len(deferred):
            due = sorted(deferred)
            deferred.clear()
        else:
            due = [heapq.heappop(deferred) for _ in range(n)]
        self._apply(due, learn_category)

    def add_news(self, news: list[tuple]) -> None:
        """Queue trend entries ``(ts, kind, entry)`` until a request with a later ts."""
        deferred, push, order = self.deferred, heapq.heappush, _ORDER
        for ts, kind, entry in news:
            push(deferred, (ts, kind, next(order), entry))

    def _apply(self, due: list[tuple], learn_category) -> None:
        trending, unavailable, vectors = self.trending, self.unavailable, self.vectors
        for _ts, kind, _order, entry in due:
            if kind == 0:
                item, category, popularity, when, vector = entry
                if item not in unavailable:
                    trending.observe(item, category, popularity, when)
                    learn_category(item, category)
                    if vector is not None:
                        vectors.put(item, vector)
            else:
                trending.set_segment(*entry)


def of_erased_life(forgotten, seq: int, life: float | None) -> bool:
    """Is this message from a life of the user that was erased?

    Lives are told apart by the profile's first event time, carried by every request and
    answer: a new life starts its seq again at 1 (and with conflation its first request
    may carry seq 5), while answers of the old life can still arrive after the erasure,
    even after the new life's first answers. Seq alone (older snapshots, messages without
    a life) cannot tell them apart; it is the fallback.
    """
    if forgotten is None:
        return False
    old_seq, old_life = forgotten if isinstance(forgotten, tuple) else (forgotten, None)
    if life is not None and old_life is not None:
        return life == old_life
    return seq != 1 and old_seq >= seq
