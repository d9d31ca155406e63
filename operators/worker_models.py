"""Item-side models that every rank shard of a worker reads: one copy per worker.

Trending (overall, per category, per segment), item categories, prices, attributes,
content vectors, availability, new catalog items and the merchandising rules reach the
rank step only by broadcast: every trend aggregator sends each
change to every rank shard. Kept per shard, each change was applied once per shard
(8 times with 8 shards, and more shards for more workers). Here the shards of a worker
share one :class:`WorkerModels`; a broadcast is applied by whichever shard gets its
copy first, and the copies that follow are recognised by ``(origin, seq)`` and skipped.

Fed only by broadcasts, the models are the same on every worker (and with any number
of workers) once the same news has landed: nothing a shard learns from its own users
goes in here.

Recovery: each shard's snapshot carries the worker's models (bytes pickled once per
change and shared by the shards' snapshots). On resume, every restored shard offers
its copy and the most advanced one (most news applied) becomes the worker's.
"""

from __future__ import annotations

import heapq
import itertools
import pickle
import threading
import time

from models.content import VectorIndex
from models.placement import NewItems
from models.rules import RuleSet
from models.trending import Trending

__all__ = ["WorkerModels", "worker_models", "adopt"]

# Tie-breaker for deferred trend entries with equal (ts, kind): increasing across
# restarts too, so entries never compare by their payload (which may hold arrays).
_ORDER = itertools.count(time.time_ns())


class WorkerModels:
    # New fields go before ``_pickled``, with a default in ``_fill_defaults`` (snapshots
    # written before them hold a shorter state).
    __slots__ = ("trending", "item_category", "unavailable", "vectors", "deferred",
                 "last_news", "version", "max_item_categories",
                 "item_price", "item_attributes", "rules", "rules_seq", "new_items", "news_ts",
                 "facts_version", "facts_owner", "_pickled")

    def __init__(self, trending_half_life: float, max_item_vectors: int,
                 search_window: int, max_item_categories: int,
                 new_item_window: float = 7 * 24 * 3600.0) -> None:
        self.trending = Trending(trending_half_life)
        self.item_category: dict[str, str] = {}
        self.unavailable: set[str] = set()
        self.vectors = VectorIndex(max_item_vectors, search_window)
        # Trend entries not yet applied, a heap by event time: a request sees only what
        # happened before it, even when a batch (or a faster worker) brings later news.
        # A heap of (ts, kind, key, order, entry): entries of one time apply in key order
        # (item, or segment and item), not in the order copies happened to arrive.
        self.deferred: list[tuple] = []
        self.last_news: dict[str, int] = {}  # origin -> highest broadcast seq taken
        self.version = 0  # changes applied or queued: the most advanced copy wins
        self.max_item_categories = max_item_categories
        self._fill_defaults(new_item_window)
        self._pickled: tuple[int, bytes] | None = None

    def _fill_defaults(self, new_item_window: float = 7 * 24 * 3600.0) -> None:
        """Set the fields an older snapshot did not have."""
        for name, make in (("item_price", dict), ("item_attributes", dict), ("rules", RuleSet),
                           ("rules_seq", int), ("new_items", lambda: NewItems(20, new_item_window)),
                           ("news_ts", float), ("facts_version", int),
                           # Names these models' facts in a cache shared by the flows of a
                           # thread (tests run several): see operators.rank_calls.rank_round.
                           ("facts_owner", lambda: next(_ORDER))):
            if not hasattr(self, name):
                setattr(self, name, make())

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__[:-1])

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)
        # Feature bundles are numbered per process start (dataflows.routing.features_to):
        # the origins of the process that wrote the snapshot never send again.
        self.last_news = {k: v for k, v in self.last_news.items()
                          if not k.startswith("features:")}
        self.deferred = keyed_news(self.deferred)
        self._fill_defaults()
        self._pickled = None

    def pickled(self) -> bytes:
        """These models as bytes, pickled once per version (every shard's snapshot in an
        epoch carries the same bytes)."""
        if self._pickled is None or self._pickled[0] != self.version:
            self._pickled = (self.version, pickle.dumps(self, protocol=pickle.HIGHEST_PROTOCOL))
        return self._pickled[1]

    def take_copy(self, origin: str, seq: int) -> bool:
        """Is this copy of broadcast ``seq`` of ``origin`` the first to reach this worker?
        (``seq`` 0: unnumbered, always.) Copies of one origin reach a worker in the order
        sent, so a seq at or below the highest taken is a copy already applied."""
        if not seq:
            return True
        if self.last_news.get(origin, 0) >= seq:
            return False
        self.last_news[origin] = seq
        return True

    def take_broadcast(self, origin: str, seq: int, release: float, items: list,
                       segments: list) -> bool:
        """Queue a trend broadcast's entries unless a copy of it was taken already (``seq``
        0: unnumbered, always taken). Items are ``(item, category, popularity, ts,
        vector)``, segments ``(segment, item, value, ts)``; each waits for requests later
        than both its own time and ``release``. Returns whether it was new."""
        if not self.take_copy(origin, seq):
            return False
        deferred, push, order = self.deferred, heapq.heappush, _ORDER
        latest = self.news_ts
        for entry in items:
            key = max(entry[3], release)
            push(deferred, (key, 0, entry[0], next(order), entry))
            latest = max(latest, key)
        for entry in segments:
            key = max(entry[3], release)
            push(deferred, (key, 1, entry[0] + "\0" + entry[1], next(order), entry))
            latest = max(latest, key)
        self.news_ts = latest
        self.version += 1
        return True

    def set_rules(self, seq: int, rules: tuple) -> bool:
        """The rule set numbered ``seq``, unless a later one was taken already (copies of
        one broadcast, and sets overtaken on the way, are skipped)."""
        if seq <= self.rules_seq:
            return False
        self.rules_seq = seq
        self.rules = RuleSet(rules)
        self.version += 1
        return True

    def set_available(self, item: str, available: bool) -> None:
        if available:
            self.unavailable.discard(item)
        else:
            self.unavailable.add(item)
            self.trending.forget(item)
            self.new_items.forget(item)
        self.version += 1

    def set_features(self, item: str, category: str | None, vector: bytes | None,
                     price: float | None = None, attributes: dict | None = None,
                     new: bool = False) -> None:
        """An item's catalog features (every copy of the broadcast sets the same).

        A ``new`` item (its first catalog record, no interaction yet) joins the new items
        of its category only once events flow (some trend news has come in): a catalog
        loaded before any event, as at the start of a replay, brings no new items.
        """
        self.learn_category(item, category)
        if vector is not None:
            # Not into the search window: records reach a worker in an order that
            # depends on how many workers there are; activity (trend news) fills it.
            self.vectors.put(item, vector, searchable=False)
        self._learn_fact(self.item_price, item, price)
        self._learn_fact(self.item_attributes, item, attributes or None)
        if new and category and self.news_ts > 0.0 and item not in self.new_items.category_of:
            self.new_items.add(item, category, self.news_ts)
        self.version += 1

    def _learn_fact(self, facts: dict, item: str, value) -> None:
        """Set one fact of an item; ``facts_version`` counts changes and evictions of known
        ones (rules and diversity cache known facts per item slot until it moves; see
        ``models.rule_columns.FactCache``)."""
        old = facts.get(item)
        if value is None:
            if old is not None:
                del facts[item]
                self.facts_version += 1
            return
        if old is None and len(facts) >= self.max_item_categories:
            # The oldest entry goes: a new version, so no cached copy of its fact
            # outlives it (read again, it is unknown; learnt again, it may differ).
            del facts[next(iter(facts))]
            self.facts_version += 1
        elif old is not None and old != value:
            self.facts_version += 1
        facts[item] = value

    def apply_until(self, ts: float | None) -> None:
        """Apply deferred trend entries older than ``ts`` (all of them when None)."""
        deferred = self.deferred
        if not deferred:
            return
        if ts is None:
            self.apply_count(len(deferred))
            return
        pop = heapq.heappop
        due = []
        while deferred and deferred[0][0] < ts:
            due.append(pop(deferred))
        self._apply(due)

    def apply_count(self, n: int) -> None:
        """Apply the ``n`` oldest deferred trend entries."""
        deferred = self.deferred
        if n <= 0:
            return
        if n >= len(deferred):
            due = sorted(deferred)
            deferred.clear()
        else:
            due = [heapq.heappop(deferred) for _ in range(n)]
        self._apply(due)

    def _apply(self, due: list[tuple]) -> None:
        if not due:
            return
        trending, unavailable, vectors = self.trending, self.unavailable, self.vectors
        new_items = self.new_items
        for queued in due:
            kind, entry = queued[1], queued[-1]
            if kind == 0:
                item, category, popularity, when, vector = entry
                if item not in unavailable:
                    if new_items:
                        new_items.forget(item)  # it has interactions: not new any more
                    trending.observe(item, category, popularity, when)
                    self.learn_category(item, category)
                    if vector is not None:
                        vectors.put(item, vector)
            else:
                trending.set_segment(*entry)
        self.version += 1

    def learn_category(self, item: str, category: str | None) -> None:
        if not category:
            return
        cats = self.item_category
        old = cats.get(item)
        if old is None:
            if len(cats) >= self.max_item_categories:
                del cats[next(iter(cats))]
                self.facts_version += 1  # as in _learn_fact: no cached copy outlives it
        elif old != category:
            self.facts_version += 1
        cats[item] = category


# One entry per (worker thread, owner). Not ``threading.local``: Bytewax's workers are
# Rust threads that take and release a Python thread state at every call into Python,
# and a thread-local dies with its thread state; the OS thread id stays.
def keyed_news(deferred: list[tuple]) -> list[tuple]:
    """A news heap in the current layout: older ones lack the key (``(ts, kind, order,
    entry)``) or even the order (``(ts, kind, entry)``)."""
    if not deferred or len(deferred[0]) == 5:
        return deferred
    out = []
    for queued in deferred:
        ts, kind, entry = queued[0], queued[1], queued[-1]
        key = entry[0] if kind == 0 else entry[0] + "\0" + entry[1]
        out.append((ts, kind, key, next(_ORDER), entry))
    heapq.heapify(out)
    return out


_TABLE: dict[tuple[int, int], tuple[object, WorkerModels]] = {}


def worker_models(owner: object, build) -> WorkerModels:
    """This worker's models for ``owner`` (a step's config object: one per flow built),
    made with ``build()`` on first use."""
    key = (threading.get_ident(), id(owner))
    got = _TABLE.get(key)
    if got is None or got[0] is not owner:
        got = _TABLE[key] = (owner, build())
    return got[1]


def adopt(owner: object, restored: WorkerModels) -> WorkerModels:
    """Offer a restored copy: it becomes the worker's models if it is the most advanced
    seen so far. Returns the worker's models."""
    key = (threading.get_ident(), id(owner))
    got = _TABLE.get(key)
    if got is None or got[0] is not owner or got[1].version < restored.version:
        _TABLE[key] = (owner, restored)
        return restored
    return got[1]
