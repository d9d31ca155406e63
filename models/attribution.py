"""Attribution: which list a user saw, and what they did with it.

Every ranked list is remembered for a while under its ``rec_id`` with what ranked it
(variant, propensity, strategy, segment). An ``impression`` event naming the list
(``context.rec_id``, ``context.items``: the items that were on screen) marks it seen; a
click on one of its items (an item event carrying its ``rec_id``) counts once per list
and item; an ``add_to_cart`` or ``purchase`` of an item is credited to the list that
showed it, the one named by ``rec_id`` or else the latest list seen within the
attribution window that held the item. Each of these yields an :class:`Outcome`, the
unit the windowed metrics count (impressions, CTR, conversion, revenue per variant,
strategy and segment).

Only a user's own lists count: a ``rec_id`` of another user's list is ignored. A click
on a list whose impression never arrived counts it as seen (the click proves it). Bounded:
see :class:`Attribution`.

>>> a = Attribution(window=3600.0)
>>> a.listed("r1", "u1", 100.0, ("p1", "p2", "p3"), "learned", 0.5, "covis", None)
>>> [o.kind for o in a.impression("u1", "r1", ["p1", "p2"], 101.0)]
['impression']
>>> o, = a.action("u1", "click", "p2", "r1", 102.0, None)
>>> o.kind, o.position, o.variant
('click', 2, 'learned')
>>> [o.kind for o in a.action("u1", "purchase", "p2", None, 200.0, 30.0)]
['purchase']
>>> a.fatigue("u1", 300.0)  # seen, not clicked
{'p1': 1}
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Attribution", "Outcome", "KINDS", "expire"]

KINDS = ("impression", "click", "cart", "purchase")


@dataclass(slots=True)
class Outcome:
    """One attributed fact about a list: seen, an item clicked, carted or bought."""

    kind: str  # one of KINDS
    variant: str
    strategy: str
    segment: str | None
    ts: float  # event time of the user's event
    position: int  # 1-based position of the item in the list (0: the list as a whole)
    value: float  # revenue of a purchase (its event's value), else 0
    propensity: float  # probability the variant was chosen for the list
    rec_id: str


class _Shown:
    __slots__ = ("user", "ts", "items", "variant", "propensity", "strategy", "segment",
                 "seen", "clicked")

    def __init__(self, user, ts, items, variant, propensity, strategy, segment) -> None:
        self.user, self.ts, self.items = user, ts, items
        self.variant, self.propensity = variant, propensity
        self.strategy, self.segment = strategy, segment
        self.seen: frozenset | set | None = None  # items seen on screen; None: not seen yet
        self.clicked: set | None = None

    def outcome(self, kind: str, ts: float, position: int = 0, value: float = 0.0,
                rec_id: str = "") -> Outcome:
        return Outcome(kind, self.variant, self.strategy, self.segment, ts, position, value,
                       self.propensity, rec_id)


def expire(table: dict, before: float, ts_of) -> None:
    """Drop the entries of ``table`` (oldest first, in insertion order) whose
    ``ts_of(value)`` is older than ``before``, up to the first one that is not."""
    while table:
        key = next(iter(table))
        if ts_of(table[key]) >= before:
            return
        del table[key]


def _listed_at(shown: _Shown) -> float:
    return shown.ts


def _last_seen_at(mine: list) -> float:
    return max((s.ts for _, s in mine), default=float("-inf"))


class Attribution:
    """Recently written lists by ``rec_id``, and the lists each user saw; see the module
    docstring.

    A list earns for ``window`` seconds of event time. Written lists wait for their
    impression in a first-in-first-out table (at most ``max_lists``: at 1,000 lists a
    second over 8 shards, about a minute); a list that was seen moves to its user's seen
    lists (at most ``per_user`` per user, ``max_users`` users, oldest out). The owner
    calls :meth:`expire` with a time two windows before its newest list, so the tables
    hold about what the last two windows wrote, not every user's last lists.
    """

    __slots__ = ("window", "max_lists", "max_users", "per_user", "lists", "seen")

    def __init__(self, window: float = 3600.0, max_lists: int = 8_192,
                 max_users: int = 20_000, per_user: int = 5) -> None:
        self.window, self.max_lists = window, max_lists
        self.max_users, self.per_user = max_users, per_user
        self.lists: dict[str, _Shown] = {}
        self.seen: dict[str, list[tuple[str, _Shown]]] = {}  # user -> seen lists, oldest first

    def listed(self, rec_id: str, user: str, ts: float, items: tuple, variant: str,
               propensity: float, strategy: str, segment: str | None) -> None:
        """A list was written."""
        lists = self.lists
        lists[rec_id] = _Shown(user, ts, items, variant, propensity, strategy, segment)
        if len(lists) > self.max_lists:
            del lists[next(iter(lists))]

    def expire(self, before: float) -> None:
        """Forget the lists written before ``before`` (event time) and the users whose
        seen lists are all older, as they reach the front of their tables (the owner
        calls this with two windows before its newest list: see the class docstring)."""
        expire(self.lists, before, _listed_at)
        expire(self.seen, before, _last_seen_at)

    def _mine(self, user: str, rec_id) -> _Shown | None:
        if not isinstance(rec_id, str):
            return None
        shown = self.lists.get(rec_id)
        if shown is None:
            for rid, s in self.seen.get(user, ()):
                if rid == rec_id:
                    return s
            return None
        return shown if shown.user == user else None

    def _mark_seen(self, user: str, rec_id: str, shown: _Shown, items, ts: float) -> list[Outcome]:
        if shown.seen is not None:  # seen before: more of it on screen now
            if items:
                shown.seen = set(shown.seen) | set(items)
            return []
        shown.seen = set(items) & set(shown.items) if items else frozenset(shown.items)
        mine = [(r, s) for r, s in self.seen.pop(user, ()) if ts - s.ts <= self.window]
        mine.append((rec_id, shown))
        self.seen[user] = mine[-self.per_user :]
        if len(self.seen) > self.max_users:
            del self.seen[next(iter(self.seen))]
        return [shown.outcome("impression", ts, rec_id=rec_id)]

    def impression(self, user: str, rec_id, items, ts: float) -> list[Outcome]:
        """An impression event: the list ``rec_id`` (``items`` of it) was on screen."""
        shown = self._mine(user, rec_id)
        if shown is None or ts - shown.ts > self.window:
            return []
        return self._mark_seen(user, rec_id, shown, items, ts)

    def action(self, user: str, kind: str, item: str | None, rec_id, ts: float,
               value: float | None) -> list[Outcome]:
        """A click, add to cart or purchase of ``item`` (``rec_id`` when the event named
        the list it came from)."""
        if item is None:
            return []
        shown = self._mine(user, rec_id)
        if shown is None and kind != "click":
            shown, rec_id = self._latest_with(user, item, ts)
        if shown is None or item not in shown.items or ts - shown.ts > self.window:
            return []
        out = self._mark_seen(user, rec_id, shown, (), ts) if shown.seen is None else []
        position = shown.items.index(item) + 1
        if kind == "click":
            if shown.clicked is None:
                shown.clicked = set()
            if item in shown.clicked:
                return out
            shown.clicked.add(item)
        revenue = float(value) if kind == "purchase" and value is not None and value > 0 else 0.0
        out.append(shown.outcome(kind, ts, position, revenue, rec_id))
        return out

    def _latest_with(self, user: str, item: str, ts: float) -> tuple[_Shown | None, str | None]:
        for rec_id, shown in reversed(self.seen.get(user, ())):
            if item in shown.items and ts - shown.ts <= self.window:
                return shown, rec_id
        return None, None

    def fatigue(self, user: str, ts: float) -> dict[str, int] | None:
        """Items ``user`` saw on screen in lists of the last ``window`` seconds and did not
        click: item -> in how many of those lists (None: none)."""
        mine = self.seen.get(user)
        if not mine:
            return None
        out: dict[str, int] = {}
        for _, shown in mine:
            if ts - shown.ts > self.window:
                continue
            clicked = shown.clicked or ()
            for item in shown.seen:
                if item not in clicked:
                    out[item] = out.get(item, 0) + 1
        return out or None

    def forget(self, user: str) -> None:
        """Erasure: nothing about ``user`` stays."""
        self.seen.pop(user, None)
        for rec_id in [r for r, s in self.lists.items() if s.user == user]:
            del self.lists[rec_id]
