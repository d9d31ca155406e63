"""Item-side state: decayed co-visitation (sequential rules), popularity and catalog data.

One ``ItemState`` per item, keyed by item in the dataflow, so every update and every
"who follows you?" question for an item meets in one place: exact at any worker count.

>>> s = ItemState("p1")
>>> s.learn_followers([("p2", 1.0), ("p3", 0.5)], ts=0.0, half_life=3600.0, capacity=10)
>>> s.learn_followers([("p2", 1.0)], ts=0.0, half_life=3600.0, capacity=10)
>>> s.followers(2, ts=0.0)
[('p2', 0.8), ('p3', 0.2)]
"""

from __future__ import annotations

from models.content import item_vector
from models.decay import DecayedCounter, DecayedScalar, decayed_weight
from models.rules import item_attributes
from models.sessionknn import SessionNeighbours

__all__ = ["ItemState"]


class ItemState:
    """What the flow knows about one item."""

    __slots__ = ("item_id", "category", "tags", "available", "price", "popularity", "neighbours",
                 "in_catalog", "reported", "reported_ts", "vector", "sessions", "attributes",
                 "fresh_start", "fresh_count")

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self.category: str | None = None
        self.tags: tuple[str, ...] = ()
        self.available = True
        self.price: float | None = None
        self.popularity: DecayedScalar | None = None
        self.neighbours: DecayedCounter | None = None
        self.in_catalog = False
        self.reported = 0.0  # popularity last sent to the trending aggregator
        self.reported_ts = 0.0
        self.vector: bytes | None = None  # content features, see models.content
        self.sessions: SessionNeighbours | None = None  # session-kNN, see models.sessionknn
        self.attributes: dict[str, str] | None = None  # bounded, for rules (models.rules)
        # Interactions by brand-new user ids in the current minute of event time (the
        # guard against many fresh ids pumping one item, see fresh_flood).
        self.fresh_start = 0.0
        self.fresh_count = 0

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)
        if len(state) < len(self.__slots__) - 1:  # a snapshot from before session-kNN
            self.sessions = None
        if len(state) < len(self.__slots__) - 2:  # from before merchandising rules
            self.attributes = None
        if len(state) < len(self.__slots__):  # from before the fresh-id guard
            self.fresh_start, self.fresh_count = 0.0, 0

    def fresh_flood(self, ts: float, limit: int) -> bool:
        """Count one interaction by a brand-new user id; True when this minute of event
        time already had ``limit`` of them (the popularity increment is then dropped:
        a script that makes up ids to push one item gets nowhere).

        >>> s = ItemState("p1")
        >>> [s.fresh_flood(0.0, 2) for _ in range(3)], s.fresh_flood(61.0, 2)
        ([False, False, True], False)
        """
        if ts - self.fresh_start >= 60.0 or ts < self.fresh_start:
            self.fresh_start, self.fresh_count = ts, 0
        self.fresh_count += 1
        return self.fresh_count > limit

    def learn_session(self, key: int, nearby: list[tuple[str, float]], capacity: int,
                      max_items: int) -> None:
        """Session ``key`` went through this item with ``nearby`` items around it."""
        if self.sessions is None:
            self.sessions = SessionNeighbours()
        self.sessions.add(key, (item for item, _ in nearby if item != self.item_id),
                          capacity, max_items)

    def session_votes(self, context: list[tuple[str, float]], exclude: int, k: int,
                      n: int) -> list[tuple[str, float]]:
        if self.sessions is None:
            return []
        return self.sessions.votes(dict(context), exclude, k, n)

    def apply_catalog(self, record: dict) -> bool:
        """Take catalog fields; return True when availability changed."""
        was = self.available
        cat = record.get("category")
        if isinstance(cat, str) and cat:
            self.category = cat
        tags = record.get("tags")
        if isinstance(tags, list):
            self.tags = tuple(str(t)[:64] for t in tags[:32])
        avail = record.get("available")
        if isinstance(avail, bool):
            self.available = avail
        price = record.get("price")
        if isinstance(price, (int, float)) and not isinstance(price, bool):
            self.price = float(price)
        attributes = record.get("attributes")
        if isinstance(attributes, dict):
            self.attributes = item_attributes(attributes) or None
        self.vector = item_vector(self.category, self.tags,
                                  attributes if isinstance(attributes, dict) else None)
        self.in_catalog = True
        return was != self.available

    def learn_event(self, category: str | None, weight: float, ts: float, half_life: float) -> None:
        """Count one interaction with this item (popularity) and learn its category."""
        if category and self.category is None:
            self.category = category
            if self.vector is None:
                self.vector = item_vector(category, (), None)
        if self.popularity is None:
            self.popularity = DecayedScalar(half_life)
        if weight > 0:
            self.popularity.add(weight, ts)

    def learn_followers(
        self, followers: list[tuple[str, float]], ts: float, half_life: float, capacity: int
    ) -> None:
        """Items seen after this one in a session, with their position weights."""
        if self.neighbours is None:
            self.neighbours = DecayedCounter(half_life, capacity)
        for item, weight in followers:
            if item != self.item_id:
                self.neighbours.add(item, weight, ts)

    def followers(self, n: int, ts: float) -> list[tuple[str, float]]:
        """Top ``n`` followers with weights normalised to sum to 1 (a next-item distribution)."""
        if self.neighbours is None:
            return []
        top = self.neighbours.top(n, ts)
        total = sum(w for _, w in top)
        if total <= 0.0:
            return []
        return [(item, round(w / total, 6)) for item, w in top]

    def report_due(self, ts: float, growth: float, half_life: float) -> float | None:
        """Popularity to report when it grew by ``growth`` over the last report (decayed)."""
        now = self.popularity_at(ts)
        if now <= 0.0:
            return None
        last = (self.reported * decayed_weight(ts - self.reported_ts, half_life)
                if self.reported else 0.0)
        if now < last * growth:
            return None
        self.reported, self.reported_ts = now, ts
        return now

    def popularity_at(self, ts: float) -> float:
        return self.popularity.value(ts) if self.popularity is not None else 0.0
