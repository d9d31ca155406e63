"""The rank step: gathers a user's rank request and the item answers it waits for,
then blends all signals into a top-K list.

Keyed by rank shard (a stable hash of the user id), so that shared, slowly changing
models (trending, segment popularity, item availability) live next to the users they
serve without a global key.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import pickle
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from bytewax.operators import StatefulBatchLogic

import numpy as np

from models.blend import ContextBlend, OnlineBlend
from models.content import VectorIndex, user_vector
from models.mf import ImplicitMF
from models.ranking import FEATURES, RankConfig, RankInput, prior_weights, rank
from models.trending import Trending
from operators.messages import (
    Availability, EraseUser, ForgetUser, ItemAnswer, RankRequest, RecUpdate, TrendDelta,
)

__all__ = ["RankStepConfig", "RankShardState", "RankLogic"]

log = logging.getLogger(__name__)

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


def _of_erased_life(forgotten, seq: int, life: float | None) -> bool:
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


def _entry_ts(entry: tuple) -> float:
    return entry[0]


def _event_time_order(done: list[list]) -> list[list]:
    """Complete requests by event time, each user's still in their own order.

    A batch can hold requests from seconds apart; ranking them by time means no list
    learns from (or sees trending made by) events that came after it.
    """
    clock: dict[str, float] = {}
    keyed = []
    for slot in done:
        user, ts = slot[0].user_id, slot[0].ts
        ts = max(ts, clock.get(user, ts))
        clock[user] = ts
        keyed.append((ts, slot))
    keyed.sort(key=_entry_ts)
    return [slot for _, slot in keyed]


class RankLogic(StatefulBatchLogic):
    def __init__(self, cfg: RankStepConfig, resume: bytes | None,
                 now: Callable[[], float] = time.time) -> None:
        self.cfg = cfg
        self.now = now
        self.state = pickle.loads(resume) if resume is not None else RankShardState(cfg)
        if resume is not None:  # the snapshot's window, or none (older ones): this config's
            self.state.vectors.set_search_window(cfg.content_search_window)

    def _learn_category(self, item: str, category: str | None) -> None:
        if not category:
            return
        cats = self.state.item_category
        if item not in cats and len(cats) >= self.cfg.max_item_categories:
            del cats[next(iter(cats))]
        cats[item] = category

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        st = self.state
        done: list[list] = []
        erased: list[EraseUser] = []
        for msg in values:
            if isinstance(msg, ItemAnswer):
                if _of_erased_life(st.forgotten.get(msg.user_id), msg.seq, msg.life):
                    continue
                slot = st.pending.setdefault((msg.user_id, msg.seq), [None, []])
                slot[1].append(msg)
                self._learn_category(msg.item_id, msg.category)
                if msg.vector is not None:
                    st.vectors.put(msg.item_id, msg.vector)
            elif isinstance(msg, RankRequest):
                if _of_erased_life(st.forgotten.get(msg.user_id), msg.seq, msg.life):
                    continue
                slot = st.pending.setdefault((msg.user_id, msg.seq), [None, []])
                slot[0] = msg
            elif isinstance(msg, TrendDelta):
                news = [(e[3], 0, e) for e in msg.items]
                news.extend((e[3], 1, e) for e in msg.segments)
                st.add_news(news)
                continue
            elif isinstance(msg, Availability):
                if msg.available:
                    st.unavailable.discard(msg.item_id)
                else:
                    st.unavailable.add(msg.item_id)
                    st.trending.forget(msg.item_id)
                continue
            elif isinstance(msg, ForgetUser):
                st.last_seq.pop(msg.user_id, None)
                st.shown.pop(msg.user_id, None)
                st.mf.forget(msg.user_id)
                for key in [k for k in st.pending if k[0] == msg.user_id]:
                    del st.pending[key]
                for key in [k for k in st.ready if k[0] == msg.user_id]:
                    del st.ready[key]
                st.forgotten.pop(msg.user_id, None)
                st.forgotten[msg.user_id] = (msg.seq, msg.life)
                if len(st.forgotten) > 10_000:
                    del st.forgotten[next(iter(st.forgotten))]
                # Lists of the old life completed earlier in this batch are not ranked;
                # the sink erases the outputs after every list this shard sent for them.
                done = [slot for slot in done if slot[0].user_id != msg.user_id]
                erased.append(EraseUser(msg.user_id, msg.user_id, "outputs"))
                continue
            else:
                err = f"rank step got an unexpected {type(msg).__name__}"
                raise TypeError(err)
            request, answers = slot
            if request is not None and len(answers) >= request.expected:
                del st.pending[(request.user_id, request.seq)]
                done.append(slot)
        if len(st.pending) > self.cfg.max_pending:
            # Never expected in a healthy flow; bounds memory if a message was lost.
            for key in list(st.pending)[: len(st.pending) - self.cfg.max_pending]:
                del st.pending[key]
        if not self.cfg.conflate:
            done = self._in_order(done)
        out = self._rank_all(done)
        if erased:
            out = erased + out  # new-life lists of this batch come after the erasure
        excess = len(st.deferred) - self.cfg.max_deferred
        if excess > 0:  # no request came for long: let the oldest news in regardless
            st.apply_count(excess, self._learn_category)
        return out, StatefulBatchLogic.RETAIN

    def _in_order(self, done: list[list]) -> list[list]:
        """Release complete requests in each user's event order.

        Answers travel different routes, so request n+1 can be complete before request n.
        Ranking n after learning from n+1 would let the list for n see what the user did
        next; every update is kept (no conflation), so each waits for its predecessor.
        """
        st = self.state
        for slot in done:
            st.ready[(slot[0].user_id, slot[0].seq)] = slot
        users = {slot[0].user_id for slot in done}
        released: list[list] = []
        for user in users:
            waiting = [k[1] for k in st.pending if k[0] == user]
            last = st.last_seq.get(user)
            while True:
                if last is not None:
                    nxt = last + 1
                else:
                    mine = [k[1] for k in st.ready if k[0] == user]
                    if not mine:
                        break
                    nxt = min(mine)
                    if waiting and min(waiting) < nxt:
                        break  # an earlier request of this user is still gathering answers
                slot = st.ready.pop((user, nxt), None)
                if slot is None:
                    break
                released.append(slot)
                last = nxt
        if len(st.ready) > self.cfg.max_pending:
            # Never expected in a healthy flow; bounds memory if a request was lost.
            for key in list(st.ready)[: len(st.ready) - self.cfg.max_pending]:
                released.append(st.ready.pop(key))
        return released

    def _rank_all(self, done: list[list]) -> list[RecUpdate]:
        st, cfg = self.state, self.cfg
        if cfg.conflate:
            latest: dict[str, list] = {}
            for slot in done:
                prev = latest.get(slot[0].user_id)
                if prev is None or prev[0].seq < slot[0].seq:
                    latest[slot[0].user_id] = slot
            done = list(latest.values())
        if len(done) > 1:
            done = _event_time_order(done)
        out = []
        for request, answers in done:
            st.apply_until(request.ts, self._learn_category)
            if cfg.conflate and st.last_seq.get(request.user_id, 0) > request.seq:
                continue  # an older request finished after a newer one: stale
            if cfg.ranking.learn_blend and request.item_id is not None:
                self._learn(request.user_id, request.item_id)
            inp = RankInput(
                ts=request.ts,
                anchors=[(a.anchor_weight, a.followers) for a in answers],
                knn=[(a.anchor_weight, a.knn) for a in answers if a.knn],
                categories=request.categories,
                session_categories=request.session_categories,
                preferences=request.preferences,
                segment=request.segment,
                seen=request.seen,
                excluded=request.excluded,
                seen_filter=request.seen_filter,
                cold=request.cold,
                content=user_vector([(a.anchor_weight, a.vector) for a in answers if a.vector]),
                user_id=request.user_id,
                history=request.history,
            )
            context = st.blend.context(len(request.seen))
            result = rank(inp, st.trending, st.item_category, st.unavailable, cfg.ranking,
                          st.blend[context], st.vectors, st.mf)
            items, strategy = result.items, result.strategy
            if not items:
                items, strategy = self._last_resort(request), "recent"
            if request.item_id is not None:
                recent = st.recent
                recent.pop(request.item_id, None)
                recent[request.item_id] = None
                if len(recent) > 100:
                    del recent[next(iter(recent))]
            if cfg.ranking.learn_blend and result.candidates:
                shown = st.shown
                shown.pop(request.user_id, None)
                shown[request.user_id] = (result.candidates, result.features, context)
                if len(shown) > cfg.max_feedback_users:
                    del shown[next(iter(shown))]
            last = st.last_seq
            seen = last.pop(request.user_id, 0)
            last[request.user_id] = max(seen, request.seq)
            if len(last) > cfg.max_users:
                del last[next(iter(last))]
            out.append(
                RecUpdate(request.user_id, request.user_id, request.seq, request.event_id,
                          request.ts, request.ingested_at, items, strategy, cfg.model_version)
            )
        return out

    def _last_resort(self, request: RankRequest) -> list[tuple[str, float]]:
        """What this shard's users acted on just before, newest first: for the first events
        of a fresh system, when no signal has anything yet (trend news travels further)."""
        st = self.state
        skip = set(request.excluded) | st.unavailable
        picked = [i for i in reversed(st.recent) if i not in skip][: self.cfg.ranking.k]
        return [(item, round(0.5 ** n, 6)) for n, item in enumerate(picked)]

    def _learn(self, user_id: str, chosen: str) -> None:
        """The user chose ``chosen``: teach the blend to rank it above what outranked it."""
        previous = self.state.shown.pop(user_id, None)
        if previous is None:
            return
        candidates, features, context = previous
        try:
            idx = candidates.index(chosen)
        except ValueError:
            idx = -1
        # The factor model learns from every choice: the chosen item against the top of
        # what was shown and passed over.
        self.state.mf.learn(user_id, chosen, [c for c in candidates[:3] if c != chosen][:2])
        if idx < 0:
            return  # no signal proposed it: nothing to learn about their balance
        span = self.cfg.ranking.feedback_negatives
        if idx == 0:
            negatives = features[1 : 1 + span]
        else:
            negatives = features[max(0, idx - span) : idx]
        blend = self.state.blend[context]
        blend.learn(features[idx].astype(np.float64), negatives.astype(np.float64))
        if blend.updates % 2000 == 0:
            log.debug("blend (context %d) after %d updates: %s", context, blend.updates,
                      dict(zip(FEATURES, np.round(blend.weights, 3))))

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None  # recovery is off: nobody reads it
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)
