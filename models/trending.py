"""Decayed trending items, overall, per category and per user segment.

Fed with exact popularity values (each item's own decayed count, kept item-side) as they
pass by, so every rank shard converges on the same head of the distribution without a
global key: popular items pass by every shard often.

>>> t = Trending(half_life=3600.0)
>>> t.observe("p1", "shoes", 5.0, ts=0.0); t.observe("p2", "hats", 2.0, ts=0.0)
>>> [i for i, _ in t.top(2, ts=0.0)], [i for i, _ in t.top_in("hats", 5, ts=0.0)]
(['p1', 'p2'], ['p2'])
"""

from __future__ import annotations

from models.decay import DecayedCounter

__all__ = ["Trending"]


class Trending:
    __slots__ = ("half_life", "capacity", "per_category", "max_categories", "overall",
                 "by_category", "by_segment")

    def __init__(
        self,
        half_life: float,
        capacity: int = 300,
        per_category: int = 40,
        max_categories: int = 1000,
    ) -> None:
        self.half_life = half_life
        self.capacity = capacity
        self.per_category = per_category
        self.max_categories = max_categories
        self.overall = DecayedCounter(half_life, capacity)
        self.by_category: dict[str, DecayedCounter] = {}
        self.by_segment: dict[str, DecayedCounter] = {}

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)

    @staticmethod
    def _bucket(table: dict, key: str, half_life: float, capacity: int, limit: int) -> DecayedCounter:
        counter = table.pop(key, None)  # re-insert: dict order is least recently used first
        if counter is None:
            counter = DecayedCounter(half_life, capacity)
            if len(table) >= limit:
                del table[next(iter(table))]
        table[key] = counter
        return counter

    def observe(self, item: str, category: str | None, popularity: float, ts: float) -> None:
        """Record an item's current global popularity (a value, not an increment)."""
        if popularity <= 0.0:
            return
        self.overall.set(item, popularity, ts)
        if category:
            bucket = self._bucket(self.by_category, category, self.half_life, self.per_category,
                                  self.max_categories)
            bucket.set(item, popularity, ts)

    def observe_segment(self, segment: str, item: str, weight: float, ts: float) -> None:
        """Count one interaction by a user of ``segment`` (an increment)."""
        if weight <= 0.0:
            return
        bucket = self._bucket(self.by_segment, segment, self.half_life, self.per_category,
                              self.max_categories)
        bucket.add(item, weight, ts)

    def set_segment(self, segment: str, item: str, value: float, ts: float) -> None:
        """Store a segment's item weight as of ``ts`` (a value, not an increment)."""
        bucket = self._bucket(self.by_segment, segment, self.half_life, self.per_category,
                              self.max_categories)
        bucket.set(item, value, ts)

    def segment_value(self, segment: str, item: str, ts: float) -> float:
        bucket = self.by_segment.get(segment)
        return bucket.value(item, ts) if bucket is not None else 0.0

    def forget(self, item: str) -> None:
        self.overall.remove(item)
        for bucket in self.by_category.values():
            bucket.remove(item)

    def top(self, n: int, ts: float) -> list[tuple[str, float]]:
        return self.overall.top(n, ts)

    def top_in(self, category: str, n: int, ts: float) -> list[tuple[str, float]]:
        bucket = self.by_category.get(category)
        return bucket.top(n, ts) if bucket is not None else []

    def top_segment(self, segment: str, n: int, ts: float) -> list[tuple[str, float]]:
        bucket = self.by_segment.get(segment)
        return bucket.top(n, ts) if bucket is not None else []
