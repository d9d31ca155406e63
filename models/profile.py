"""A user's decayed profile: long-term taste apart from the current session.

Everything is bounded: recent items, categories, purchases, the dedupe window. Time is
event time, so replaying history gives the same profile as living through it.

>>> cfg = ProfileConfig()
>>> p = UserProfile("u1")
>>> p.apply(Event("e1", 1_700_000_000.0, "u1", "click", "p1", category="shoes"), cfg)
'applied'
>>> p.apply(Event("e1", 1_700_000_000.0, "u1", "click", "p1", category="shoes"), cfg)
'duplicate'
>>> p.session_items, p.top_categories(1, 1_700_000_000.0)[0][0]
(['p1'], 'shoes')
"""

from __future__ import annotations

import zlib
from array import array
from dataclasses import dataclass, field
from typing import Mapping

from models.decay import DecayedCounter, DecayedScalar
from models.events import Event, engagement
from models.ranking import SeenFilter

__all__ = ["ProfileConfig", "UserProfile"]

_NON_ITEM_SIGNAL = frozenset({"impression", "filter", "search", "consent", "erase"})


@dataclass(frozen=True)
class ProfileConfig:
    long_half_life: float = 7 * 24 * 3600.0
    session_half_life: float = 1800.0
    session_gap: float = 1800.0
    max_session_items: int = 20
    max_recent_items: int = 30
    max_categories: int = 32
    max_purchased: int = 50
    dedupe_window: int = 64
    max_events_per_minute: int = 600
    event_weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "view": 1.0, "click": 2.0, "hover": 0.5, "scroll": 0.5, "dwell": 1.0,
            "add_to_cart": 5.0, "remove_from_cart": -2.0, "wishlist": 4.0,
            "purchase": 10.0, "rating": 2.0, "impression": 0.0,
        }
    )


def _event_hash(event_id: str) -> int:
    return zlib.crc32(event_id.encode()) | (len(event_id) << 32)


class UserProfile:
    """Per-user state: recency, frequency, category taste, session context, seen items."""

    __slots__ = (
        "user_id", "seq", "first_ts", "last_ts", "session_id", "session_n", "session_start",
        "session_items", "recent_items", "categories", "session_categories", "purchased",
        "engagement", "counts", "attrs", "preferences", "consent", "_dedupe", "_dedupe_pos",
        "_burst_start", "_burst_count", "seen_bits",
    )

    def __init__(self, user_id: str) -> None:
        self.user_id = user_id
        self.seq = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self.session_id: str | None = None
        self.session_n = 0
        self.session_start: float | None = None
        self.session_items: list[str] = []
        self.recent_items: list[str] = []
        self.categories: DecayedCounter | None = None
        self.session_categories: DecayedCounter | None = None
        self.purchased: list[str] = []
        self.engagement: DecayedScalar | None = None
        self.counts: dict[str, int] = {}
        self.attrs: dict | None = None
        self.preferences: list[str] | None = None
        self.consent = True
        self._dedupe = array("Q")
        self._dedupe_pos = 0
        self._burst_start = 0.0
        self._burst_count = 0
        self.seen_bits: bytearray | None = None  # Bloom filter of every item interacted with

    # --- pickling (Bytewax snapshots) -------------------------------------------
    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserProfile):
            return NotImplemented
        return self.to_json_dict() == other.to_json_dict() and self.seq == other.seq

    # --- guards -----------------------------------------------------------------
    def _seen_event(self, event_id: str, window: int) -> bool:
        h = _event_hash(event_id)
        if h in self._dedupe:
            return True
        if len(self._dedupe) < window:
            self._dedupe.append(h)
        else:
            self._dedupe[self._dedupe_pos] = h
            self._dedupe_pos = (self._dedupe_pos + 1) % window
        return False

    def _burst(self, ts: float, limit: int) -> bool:
        # A fixed one-minute window in event time: more than `limit` events is a bot or a
        # replaying client; the excess is dropped (counted, not learned from).
        if ts - self._burst_start >= 60.0 or ts < self._burst_start:
            self._burst_start = ts
            self._burst_count = 0
        self._burst_count += 1
        return self._burst_count > limit

    # --- learning ---------------------------------------------------------------
    def apply(self, event: Event, cfg: ProfileConfig) -> str:
        """Learn from one event. Returns ``applied``, ``duplicate`` or ``burst``."""
        if self._seen_event(event.event_id, cfg.dedupe_window):
            return "duplicate"
        ts = event.ts
        if self._burst(ts, cfg.max_events_per_minute):
            return "burst"
        self.seq += 1
        if self.first_ts is None:
            self.first_ts = ts
            self.categories = DecayedCounter(cfg.long_half_life, cfg.max_categories)
            self.engagement = DecayedScalar(cfg.long_half_life)
        self._update_session(event, cfg)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        self.counts[event.type] = self.counts.get(event.type, 0) + 1
        ctx = event.context
        if ctx:
            attrs = ctx.get("user_attrs")
            if attrs:
                self.attrs = {str(k)[:32]: str(v)[:64] for k, v in list(attrs.items())[:8]}
            prefs = ctx.get("preferences")
            if prefs:
                self.preferences = [p[:64] for p in prefs[:10]]
        if event.type in _NON_ITEM_SIGNAL or event.item_id is None:
            return "applied"
        weight = engagement(event.type, event.value, cfg.event_weights)
        item = event.item_id
        if self.seen_bits is None:
            self.seen_bits = SeenFilter.empty()
        SeenFilter.add(self.seen_bits, item)
        if event.category is not None and weight > 0:
            self.categories.add(event.category, weight, ts)
            self.session_categories.add(event.category, weight, ts)
        if weight > 0:
            self.engagement.add(weight, ts)
        if event.type == "purchase" and item not in self.purchased:
            self.purchased.append(item)
            if len(self.purchased) > cfg.max_purchased:
                del self.purchased[0]
        if event.type in ("hover", "scroll", "dwell") and self.session_items and self.session_items[-1] == item:
            return "applied"  # engagement on the item already in view: no new position
        _push(self.session_items, item, cfg.max_session_items)
        _push(self.recent_items, item, cfg.max_recent_items)
        return "applied"

    def _update_session(self, event: Event, cfg: ProfileConfig) -> None:
        new_session = False
        if event.session_id is not None:
            new_session = event.session_id != self.session_id
        elif self.last_ts is None or event.ts - self.last_ts > cfg.session_gap:
            new_session = True
        if new_session:
            self.session_n += 1
            self.session_id = event.session_id or f"{self.user_id}#{self.session_n}"
            self.session_start = event.ts
            self.session_items = []
            self.session_categories = DecayedCounter(cfg.session_half_life, 8)

    # --- reading ----------------------------------------------------------------
    def top_categories(self, n: int, ts: float) -> list[tuple[str, float]]:
        return self.categories.top(n, ts) if self.categories is not None else []

    def session_top_categories(self, n: int, ts: float) -> list[tuple[str, float]]:
        return self.session_categories.top(n, ts) if self.session_categories is not None else []

    def item_events(self) -> int:
        return sum(n for t, n in self.counts.items() if t not in _NON_ITEM_SIGNAL)

    def segment(self) -> str | None:
        """A coarse segment key from user attributes, for cold-start popularity."""
        if not self.attrs:
            return None
        parts = [f"{k}={self.attrs[k]}" for k in ("age_band", "gender") if k in self.attrs]
        return "|".join(parts) if parts else None

    def to_json_dict(self) -> dict:
        ts = self.last_ts or 0.0
        return {
            "user_id": self.user_id,
            "events": self.seq,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "session_id": self.session_id,
            "session_items": list(self.session_items),
            "recent_items": list(self.recent_items),
            "top_categories": [[c, round(w, 4)] for c, w in self.top_categories(8, ts)],
            "session_categories": [[c, round(w, 4)] for c, w in self.session_top_categories(4, ts)],
            "purchased": list(self.purchased),
            "counts": dict(self.counts),
            "engagement": round(self.engagement.value(ts), 4) if self.engagement else 0.0,
            "segment": self.segment(),
            "preferences": self.preferences,
        }


def _push(items: list[str], item: str, bound: int) -> None:
    """Move ``item`` to the end (most recent) of a bounded recency list."""
    try:
        items.remove(item)
    except ValueError:
        pass
    items.append(item)
    if len(items) > bound:
        del items[0]
