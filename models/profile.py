"""A user's decayed profile: long-term taste apart from the current session.

Everything is bounded: recent items, categories, purchases, the dedupe window. Time is
event time, so replaying history gives the same profile as living through it.

Bytewax keeps one live profile per active user, so the layout is compact (~1.5 KB for
a user with 20 events, ~4 KB at most; a layout of dicts and lists took about twice as
much): slots, numbers in arrays instead of dicts of floats and ints, the session as a
suffix of the recency list, the dedupe window as packed hashes, the seen-items filter as
its set bits until it fills up, ids interned (one copy per item or category for all
users, after a restore too), and members many users never need created on first use.

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

import sys
import zlib
from array import array
from dataclasses import dataclass, field
from typing import Mapping

from models.compact import CompactCounter
from models.decay import DecayedScalar
from models.events import EVENT_TYPES, Event, engagement
from models.ranking import SeenFilter

__all__ = ["ProfileConfig", "UserProfile"]

_NON_ITEM_SIGNAL = frozenset({"impression", "filter", "search", "consent", "erase"})
_intern = sys.intern


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


def _i(value):
    """Intern a string (one shared copy per distinct id); anything else unchanged."""
    return _intern(value) if type(value) is str else value


# Event counts: one array('Q') element per type in first-seen order, count << 16 | type.
# Type numbers are process-local (a pickle stores names), known types first.
_TYPE_NAMES: list[str] = sorted(EVENT_TYPES)
_TYPE_NO: dict[str, int] = {t: n for n, t in enumerate(_TYPE_NAMES)}
_ITEM_TYPE: list[bool] = [t not in _NON_ITEM_SIGNAL for t in _TYPE_NAMES]
_COUNT_SHIFT = 16
_TYPE_MASK = (1 << _COUNT_SHIFT) - 1


def _type_no(etype: str) -> int:
    n = _TYPE_NO.get(etype)
    if n is None:  # not a contract type (a direct caller): numbered on first sight
        n = len(_TYPE_NAMES)
        if n > _TYPE_MASK:
            raise ValueError("too many distinct event types")
        etype = _intern(etype)
        _TYPE_NAMES.append(etype)
        _ITEM_TYPE.append(etype not in _NON_ITEM_SIGNAL)
        _TYPE_NO[etype] = n
    return n


# The dedupe window: 5 bytes per event id (crc32, length - 1) while every id is 1..256
# characters long (the contract's bound); otherwise the full 64-bit hashes of
# ``_event_hash`` in array('Q'). Both hold exactly the values ``_event_hash`` compares.
_REC = 5
_LEN_BYTE = [bytes((n,)) for n in range(256)]
# The seen filter is kept as its set bit numbers until there are this many (2 bytes each;
# the dense filter is SeenFilter.BITS // 8 = 512 bytes).
_SPARSE_BITS = 240
_BIT_BYTE = [b >> 3 for b in range(SeenFilter.BITS)]  # byte and mask of each bit (SeenFilter.add)
_BIT_MASK = [1 << (b & 7) for b in range(SeenFilter.BITS)]


class UserProfile:
    """Per-user state: recency, frequency, category taste, session context, seen items.

    ``session_items``, ``purchased``, ``counts``, ``attrs``, ``preferences``,
    ``session_id`` and ``seen_bits`` read as before (lists, dicts, str, bytearray) but are
    built on read from the compact members: treat them as read-only snapshots.
    """

    __slots__ = (
        "user_id", "seq", "first_ts", "last_ts", "_session_id", "session_n", "session_start",
        "_session", "recent_items", "categories", "session_categories", "_purchased",
        "engagement", "_counts", "_attrs", "_preferences", "consent", "_dedupe", "_dedupe_pos",
        "_burst_start", "_burst_count", "_seen",
    )

    def __init__(self, user_id: str) -> None:
        self.user_id = _i(user_id)
        self.seq = 0
        self.first_ts: float | None = None
        self.last_ts: float | None = None
        self._session_id: str | None = None  # None: none yet, or "<user_id>#<session_n>"
        self.session_n = 0
        self.session_start: float | None = None
        # The session's items are always the newest items of ``recent_items`` (same moves,
        # same order): kept as their number, or as a list in the rare case they no longer
        # fit in ``recent_items`` (max_session_items > max_recent_items).
        self._session: int | list[str] = 0
        self.recent_items: list[str] = []
        self.categories: CompactCounter | None = None  # created on the first category
        self.session_categories: CompactCounter | None = None  # the same, per session
        self._purchased: list[str] | None = None
        self.engagement: DecayedScalar | None = None
        self._counts: array | None = None  # array('Q'): count << 16 | type number
        self._attrs: tuple[str, ...] | None = None  # (key, value, key, value, ...)
        self._preferences: tuple[str, ...] | None = None
        self.consent = True
        self._dedupe: bytearray | array | None = None
        self._dedupe_pos = 0
        self._burst_start = 0.0
        self._burst_count = 0
        # Bloom filter of every item interacted with: array('H') of set bits, or the
        # dense bytearray (SeenFilter layout) once there are more than _SPARSE_BITS.
        self._seen: array | bytearray | None = None

    # --- read-only views ----------------------------------------------------------
    @property
    def session_id(self) -> str | None:
        sid = self._session_id
        if sid is None and self.session_n:
            return f"{self.user_id}#{self.session_n}"
        return sid

    @property
    def session_items(self) -> list[str]:
        """This session's items, oldest first (a new list)."""
        s = self._session
        if type(s) is int:
            return self.recent_items[len(self.recent_items) - s:] if s else []
        return list(s)

    @property
    def purchased(self) -> list[str]:
        p = self._purchased
        return p if p is not None else []

    @property
    def counts(self) -> dict[str, int]:
        """Applied events per type, in first-seen order (a new dict)."""
        c = self._counts
        if c is None:
            return {}
        names = _TYPE_NAMES
        return {names[v & _TYPE_MASK]: v >> _COUNT_SHIFT for v in c}

    @property
    def attrs(self) -> dict[str, str] | None:
        a = self._attrs
        return dict(zip(a[::2], a[1::2])) if a is not None else None

    @property
    def preferences(self) -> list[str] | None:
        p = self._preferences
        return list(p) if p is not None else None

    @property
    def seen_bits(self) -> bytearray | None:
        """The Bloom filter of every item interacted with (a new bytearray)."""
        s = self._seen
        if s is None:
            return None
        if type(s) is bytearray:
            return bytearray(s)
        bits = bytearray(SeenFilter.BITS // 8)
        byte, bit = _BIT_BYTE, _BIT_MASK
        for b in s:
            bits[byte[b]] |= bit[b]
        return bits

    def seen_filter(self) -> bytes | None:
        """``seen_bits`` as bytes, for a rank request."""
        s = self._seen
        if s is None:
            return None
        return bytes(s) if type(s) is bytearray else bytes(self.seen_bits)

    # --- pickling (Bytewax snapshots) -------------------------------------------
    _STATE_VERSION = 2

    def __getstate__(self):
        s = self._session
        return (
            self._STATE_VERSION, self.user_id, self.seq, self.first_ts, self.last_ts,
            self._session_id, self.session_n, self.session_start,
            s if type(s) is int else tuple(s), tuple(self.recent_items), self.categories,
            self.session_categories,
            tuple(self._purchased) if self._purchased is not None else None,
            self.engagement, self._counts_state(), self._attrs, self._preferences, self.consent,
            self._dedupe, self._dedupe_pos, self._burst_start, self._burst_count, self._seen,
        )

    def _counts_state(self) -> tuple | None:
        c = self._counts
        if c is None:
            return None
        names = _TYPE_NAMES
        return tuple(x for v in c for x in (names[v & _TYPE_MASK], v >> _COUNT_SHIFT))

    def __setstate__(self, state):
        if state and state[0] == self._STATE_VERSION and len(state) == 23:
            (_, user_id, self.seq, self.first_ts, self.last_ts, session_id, self.session_n,
             self.session_start, session, recent, self.categories, self.session_categories,
             purchased, self.engagement, counts, attrs, prefs, self.consent, self._dedupe,
             self._dedupe_pos, self._burst_start, self._burst_count, self._seen) = state
            self.user_id = _i(user_id)
            self._session_id = _i(session_id)
            self.recent_items = [_i(x) for x in recent]
            self._session = session if type(session) is int else [_i(x) for x in session]
            self._purchased = [_i(x) for x in purchased] if purchased is not None else None
            self._counts = None
            if counts is not None:
                self._counts = array("Q", [n << _COUNT_SHIFT | _type_no(t)
                                           for t, n in zip(counts[::2], counts[1::2])])
            self._attrs = tuple(_i(x) for x in attrs) if attrs is not None else None
            self._preferences = tuple(_i(x) for x in prefs) if prefs is not None else None
            return
        self._set_legacy_state(state)

    def _set_legacy_state(self, state) -> None:
        """Snapshots written before the compact layout (one value per old slot)."""
        (user_id, self.seq, self.first_ts, self.last_ts, session_id, self.session_n,
         self.session_start, session_items, recent_items, categories, session_categories,
         purchased, self.engagement, counts, attrs, prefs, self.consent, dedupe,
         self._dedupe_pos, self._burst_start, self._burst_count, seen_bits) = state
        self.user_id = _i(user_id)
        implicit = session_id is None or session_id == f"{self.user_id}#{self.session_n}"
        self._session_id = None if implicit else _i(session_id)
        self.recent_items = [_i(x) for x in recent_items]
        k = len(session_items)
        if k <= len(recent_items) and (k == 0 or recent_items[-k:] == session_items):
            self._session = k
        else:
            self._session = [_i(x) for x in session_items]
        self.categories = _compact(categories)
        self.session_categories = _compact(session_categories)
        self._purchased = [_i(x) for x in purchased] if purchased else None
        self._counts = None
        for t, n in counts.items():
            self._count(t, n)
        self._attrs = None
        if attrs is not None:
            self._attrs = tuple(_i(x) for kv in attrs.items() for x in kv)
        self._preferences = tuple(_i(x) for x in prefs) if prefs is not None else None
        self._dedupe = None
        if dedupe:
            if all(1 <= h >> 32 <= 256 for h in dedupe):
                self._dedupe = bytearray(b"".join(
                    (h & 0xFFFFFFFF).to_bytes(4, "little") + _LEN_BYTE[(h >> 32) - 1]
                    for h in dedupe))
            else:
                self._dedupe = array("Q", dedupe)
        self._seen = None
        if seen_bits is not None:
            bits = [b for b in range(len(seen_bits) * 8) if seen_bits[b >> 3] >> (b & 7) & 1]
            if len(seen_bits) == SeenFilter.BITS // 8 and len(bits) <= _SPARSE_BITS:
                self._seen = array("H", bits)
            else:
                self._seen = bytearray(seen_bits)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UserProfile):
            return NotImplemented
        return self.to_json_dict() == other.to_json_dict() and self.seq == other.seq

    # --- guards -----------------------------------------------------------------
    def _seen_event(self, event_id: str, window: int) -> bool:
        d = self._dedupe
        if d is None:
            d = self._dedupe = bytearray()
        n = len(event_id)
        crc = zlib.crc32(event_id.encode())
        if type(d) is bytearray:
            if 0 < n <= 256:
                key = crc.to_bytes(4, "little") + _LEN_BYTE[n - 1]
                i = d.find(key)
                while i >= 0:
                    if i % _REC == 0:
                        return True
                    i = d.find(key, i + 1)
                if len(d) < window * _REC:
                    d += key
                else:
                    pos = self._dedupe_pos * _REC
                    d[pos : pos + _REC] = key
                    self._dedupe_pos = (self._dedupe_pos + 1) % window
                return False
            d = self._dedupe = array("Q", [
                int.from_bytes(d[j : j + 4], "little") | ((d[j + 4] + 1) << 32)
                for j in range(0, len(d), _REC)])
        h = crc | (n << 32)
        if h in d:
            return True
        if len(d) < window:
            d.append(h)
        else:
            d[self._dedupe_pos] = h
            self._dedupe_pos = (self._dedupe_pos + 1) % window
        return False

    def _burst(self, ts: float, limit: int) -> bool:
        # A fixed one-minute window: more than `limit` events is a bot or a replaying
        # client; the excess is dropped (counted, not learned from). `ts` is the broker's
        # time when known (a client can lie about its own), else the event's.
        if ts - self._burst_start >= 60.0 or ts < self._burst_start:
            self._burst_start = ts
            self._burst_count = 0
        self._burst_count += 1
        return self._burst_count > limit

    # --- learning ---------------------------------------------------------------
    def apply(self, event: Event, cfg: ProfileConfig, arrived: float | None = None) -> str:
        """Learn from one event. Returns ``applied``, ``duplicate`` or ``burst``.

        ``arrived``: when the event entered the broker; the burst guard counts by it, since
        a bot can make up its events' timestamps but not the broker's clock.
        """
        if self._seen_event(event.event_id, cfg.dedupe_window):
            return "duplicate"
        ts = event.ts
        if self._burst(ts if arrived is None else arrived, cfg.max_events_per_minute):
            return "burst"
        self.seq += 1
        if self.first_ts is None:
            self.first_ts = ts
        self._update_session(event, cfg)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
        etype = event.type
        self._count(etype, 1)
        ctx = event.context
        if ctx:
            attrs = ctx.get("user_attrs")
            if attrs:
                kept = {str(k)[:32]: str(v)[:64] for k, v in list(attrs.items())[:8]}
                self._attrs = tuple(_i(x) for kv in kept.items() for x in kv)
            prefs = ctx.get("preferences")
            if prefs:
                self._preferences = tuple(_i(p[:64]) for p in prefs[:10])
        if etype in _NON_ITEM_SIGNAL or event.item_id is None:
            return "applied"
        weight = engagement(etype, event.value, cfg.event_weights)
        item = _i(event.item_id)
        self._see(item)
        if event.category is not None and weight > 0:
            if self.categories is None:
                self.categories = CompactCounter(cfg.long_half_life, cfg.max_categories)
            if self.session_categories is None:
                self.session_categories = CompactCounter(cfg.session_half_life, 8)
            self.categories.add(event.category, weight, ts)
            self.session_categories.add(event.category, weight, ts)
        if weight > 0:
            if self.engagement is None:
                self.engagement = DecayedScalar(cfg.long_half_life)
            self.engagement.add(weight, ts)
        if etype == "purchase":
            purchased = self._purchased
            if purchased is None:
                purchased = self._purchased = []
            if item not in purchased:
                purchased.append(item)
                if len(purchased) > cfg.max_purchased:
                    del purchased[0]
        if etype in ("hover", "scroll", "dwell") and self._session_last() == item:
            return "applied"  # engagement on the item already in view: no new position
        self._push(item, cfg)
        return "applied"

    def _count(self, etype: str, n: int) -> None:
        c = self._counts
        if c is None:
            c = self._counts = array("Q")
        no = _type_no(etype)
        for j, v in enumerate(c):
            if v & _TYPE_MASK == no:
                c[j] = v + (n << _COUNT_SHIFT)
                return
        c.append(n << _COUNT_SHIFT | no)

    def _see(self, item: str) -> None:
        s = self._seen
        if s is None:
            s = self._seen = array("H")
        if type(s) is bytearray:
            SeenFilter.add(s, item)
            return
        for b in SeenFilter._slots(item):
            if b not in s:
                s.append(b)
        if len(s) > _SPARSE_BITS:
            self._seen = self.seen_bits

    def _session_last(self) -> str | None:
        s = self._session
        if type(s) is int:
            return self.recent_items[-1] if s else None
        return s[-1] if s else None

    def _push(self, item: str, cfg: ProfileConfig) -> None:
        """``_push`` the item onto the session's and the recent items."""
        recent = self.recent_items
        s = self._session
        if type(s) is not int:
            _push(s, item, cfg.max_session_items)
            _push(recent, item, cfg.max_recent_items)
            return
        try:
            i = recent.index(item)
        except ValueError:
            i = -1
        if i >= 0:
            in_session = i >= len(recent) - s
            del recent[i]
        else:
            in_session = False
        recent.append(item)
        if not in_session:
            s += 1
        if s > cfg.max_session_items:
            s -= 1  # the session list drops its oldest
        if len(recent) > cfg.max_recent_items:
            if s >= len(recent):  # the session would lose an item it keeps: own list
                self._session = recent[len(recent) - s:]
                del recent[0]
                return
            del recent[0]
        self._session = s

    def _update_session(self, event: Event, cfg: ProfileConfig) -> None:
        new_session = False
        if event.session_id is not None:
            new_session = event.session_id != self.session_id
        elif self.last_ts is None or event.ts - self.last_ts > cfg.session_gap:
            new_session = True
        if new_session:
            self.session_n += 1
            self._session_id = _i(event.session_id)  # None: "<user_id>#<session_n>"
            self.session_start = event.ts
            self._session = 0
            self.session_categories = None  # created on the session's first category

    # --- reading ----------------------------------------------------------------
    def top_categories(self, n: int, ts: float) -> list[tuple[str, float]]:
        return self.categories.top(n, ts) if self.categories is not None else []

    def session_top_categories(self, n: int, ts: float) -> list[tuple[str, float]]:
        return self.session_categories.top(n, ts) if self.session_categories is not None else []

    def item_events(self) -> int:
        c = self._counts
        if c is None:
            return 0
        item = _ITEM_TYPE
        return sum(v >> _COUNT_SHIFT for v in c if item[v & _TYPE_MASK])

    def segment(self) -> str | None:
        """A coarse segment key from user attributes, for cold-start popularity."""
        a = self._attrs
        if not a:
            return None
        attrs = dict(zip(a[::2], a[1::2]))
        parts = [f"{k}={attrs[k]}" for k in ("age_band", "gender") if k in attrs]
        return "|".join(parts) if parts else None

    def to_json_dict(self) -> dict:
        ts = self.last_ts or 0.0
        return {
            "user_id": self.user_id,
            "events": self.seq,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "session_id": self.session_id,
            "session_items": self.session_items,
            "recent_items": list(self.recent_items),
            "top_categories": [[c, round(w, 4)] for c, w in self.top_categories(8, ts)],
            "session_categories": [[c, round(w, 4)] for c, w in self.session_top_categories(4, ts)],
            "purchased": list(self.purchased),
            "counts": self.counts,
            "engagement": round(self.engagement.value(ts), 4) if self.engagement else 0.0,
            "segment": self.segment(),
            "preferences": self.preferences,
        }


def _compact(counter) -> CompactCounter | None:
    if counter is None or isinstance(counter, CompactCounter):
        return counter
    return CompactCounter.from_counter(counter)


def _push(items: list[str], item: str, bound: int) -> None:
    """Move ``item`` to the end (most recent) of a bounded recency list."""
    try:
        items.remove(item)
    except ValueError:
        pass
    items.append(item)
    if len(items) > bound:
        del items[0]
