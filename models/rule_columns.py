"""The candidate rows' catalog facts (category, price, attributes) as arrays, for rules.

:class:`RuleColumns` turns an item match (``models.rules.ItemMatch``) into a boolean mask
over a batch's candidate rows; :class:`FactCache` keeps the facts per item slot of the
worker's ``ItemCodes``, so that in steady state a rule costs array look-ups and no
dictionary look-up per candidate.

>>> facts = ItemFacts({"p1": "hats", "p2": "shoes"}, {"p1": 5.0}, {})
>>> cols = RuleColumns(["p1", "p2", "p1"], np.array([0, 1, 0]), facts, None, None)
>>> cols.category().tolist(), cols.price()[:2].tolist()
([0, 1, 0], [5.0, nan])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

__all__ = ["ItemFacts", "FactCache", "RuleColumns"]

_NONE: Mapping[str, str] = {}


@dataclass(slots=True)
class ItemFacts:
    """What rules match items on: the shared item-side catalog maps."""

    category: Mapping[str, str]
    price: Mapping[str, float]
    attributes: Mapping[str, Mapping[str, str]]


class FactCache:
    """The catalog facts of item slots (``models.batch_ranking.ItemCodes``) as arrays,
    filled on first use: rules then cost array look-ups, not a dict look-up per row.

    Valid while the facts' ``version`` stays (the worker models count changes of an
    item's known facts); an unknown fact is never cached, so an item that gets one later
    is read again. Only a cache: it never changes a list.
    """

    __slots__ = ("version", "codes", "cat", "price", "attrs", "rules", "mult", "boosted",
                 "allowed")

    _TODO = -2  # a code not looked up yet

    def __init__(self) -> None:
        self.version: object = None
        self.codes: dict[str | None, int] = {None: -1}
        self.cat = np.full(0, self._TODO, dtype=np.int64)
        self.price = np.full(0, -np.inf)  # -inf: not looked up; NaN: no price
        self.attrs: dict[str, tuple[dict, np.ndarray]] = {}
        # What the rules in force (``rules``, compared by identity) decided per slot, in
        # one number: ``mult`` 0 dropped (a block or filter), NaN not decided yet, else
        # the product of the boosts that matched (1: none); ``boosted`` the first boost
        # that matched, -1 none (``models.rules``).
        self.rules: object = None
        self.mult = np.full(0, np.nan)
        self.boosted = np.full(0, -1, dtype=np.intp)
        self.allowed: dict[str, bool] = {}  # pinned and new items: may the rules list them?

    def sync(self, version, size: int) -> None:
        """Forget everything when the facts changed; make room for ``size`` slots."""
        if version != self.version:
            self.version = version
            self.codes = {None: -1}
            self.cat[:] = self._TODO
            self.price[:] = -np.inf
            self.attrs = {}
            self.mult[:] = np.nan
            self.allowed = {}
        if len(self.cat) < size:
            grow = max(size, 2 * len(self.cat), 256) - len(self.cat)
            self.cat = np.concatenate([self.cat, np.full(grow, self._TODO, dtype=np.int64)])
            self.price = np.concatenate([self.price, np.full(grow, -np.inf)])
            self.attrs = {n: (c, np.concatenate([a, np.full(grow, self._TODO, dtype=np.int64)]))
                          for n, (c, a) in self.attrs.items()}
            self.mult = np.concatenate([self.mult, np.full(grow, np.nan)])
            self.boosted = np.concatenate([self.boosted, np.full(grow, -1, dtype=np.intp)])

    def categories(self, slots: np.ndarray, items, category: Mapping) -> np.ndarray:
        """Category codes of ``slots`` (-1: none), ``items[j]`` naming the item of
        ``slots[j]``; slots not cached are looked up in ``category`` (and cached when
        known)."""
        codes, get = self.codes, category.get

        def look(item):
            c = get(item)
            return codes.setdefault(c, len(codes) - 1), c is not None
        return _fill(self.cat, slots, items, self._TODO, look)

    def row_categories(self, row_slot: np.ndarray, row_items: list[str], category: Mapping):
        """For diversity: a function giving the category codes of candidate rows (-1:
        none; an empty category counts as none, as ``models.diversity.diversify`` reads
        them), from this cache."""
        def categories(rows: np.ndarray) -> np.ndarray:
            cats = self.categories(row_slot[rows], _Rows(row_items, rows), category)
            empty = self.codes.get("")
            if empty is not None:
                cats[cats == empty] = -1
            return cats
        return categories

    def sync_rules(self, rules: object) -> None:
        """Forget the verdicts when the rules in force changed."""
        if rules is not self.rules:
            self.rules = rules
            self.mult[:] = np.nan
            self.allowed = {}

    def evict(self, slots: list[int]) -> None:
        """Slots handed to other items."""
        if len(self.cat):
            self.cat[slots] = self._TODO
            self.price[slots] = -np.inf
            self.mult[slots] = np.nan
            for _, a in self.attrs.values():
                a[slots] = self._TODO


class _Rows:
    """``items[rows[j]]`` as ``[j]``: the names of some candidate rows, read on demand."""

    __slots__ = ("items", "rows")

    def __init__(self, items: list[str], rows: np.ndarray) -> None:
        self.items, self.rows = items, rows

    def __getitem__(self, j: int) -> str:
        return self.items[self.rows[j]]


def _fill(col: np.ndarray, slots: np.ndarray, items: list[str], todo_value, lookup) -> np.ndarray:
    """``col[slots]``, looking up (and caching, when known) the rows not cached."""
    out = col[slots]
    todo = np.flatnonzero(out == todo_value) if todo_value != -np.inf else np.flatnonzero(np.isneginf(out))
    if len(todo) == 0:
        return out
    # One look-up per slot, not per row: a slot new to the cache often stands in many
    # requests' candidates of the same call.
    _, first, inverse = np.unique(slots[todo], return_index=True, return_inverse=True)
    values = np.empty(len(first), dtype=out.dtype)
    for j, row in enumerate(todo[first].tolist()):
        value, known = lookup(items[row])
        values[j] = value
        if known:
            col[slots[row]] = value
    out[todo] = values[inverse.ravel()]
    return out


class RuleColumns:
    """The candidate rows' catalog facts as arrays, each built on first use (from the
    per-slot cache when there is one)."""

    def __init__(self, items: list[str], slots: np.ndarray, facts: ItemFacts, lookup,
                 cache: FactCache | None) -> None:
        self.items, self.slots, self.facts, self.lookup = items, slots, facts, lookup
        self.cache = cache if cache is not None else FactCache()
        self.codes = self.cache.codes
        self.cached = cache is not None
        self._cat: np.ndarray | None = None
        self._price: np.ndarray | None = None
        self._attrs: dict[str, tuple[dict, np.ndarray]] = {}

    def category(self) -> np.ndarray:
        if self._cat is None:
            codes, get = self.codes, self.facts.category.get
            if self.cached:
                self._cat = self.cache.categories(self.slots, self.items, self.facts.category)
            else:
                self._cat = np.fromiter((codes.setdefault(get(i), len(codes) - 1) for i in self.items),
                                        dtype=np.int64, count=len(self.items))
        return self._cat

    def price(self) -> np.ndarray:
        if self._price is None:
            get, nan = self.facts.price.get, math.nan
            if self.cached:
                def look(item):
                    p = get(item)
                    return (nan, False) if p is None else (p, True)
                self._price = _fill(self.cache.price, self.slots, self.items, -np.inf, look)
            else:
                self._price = np.fromiter((get(i, nan) for i in self.items), dtype=np.float64,
                                          count=len(self.items))
        return self._price

    def attribute(self, name: str) -> tuple[dict, np.ndarray]:
        got = self._attrs.get(name)
        if got is None:
            get = self.facts.attributes.get
            if self.cached:
                held = self.cache.attrs.get(name)
                if held is None:
                    held = self.cache.attrs[name] = (
                        {None: -1}, np.full(len(self.cache.cat), FactCache._TODO, dtype=np.int64))
                codes, store = held

                def look(item):
                    v = get(item, _NONE).get(name)
                    return codes.setdefault(v, len(codes) - 1), v is not None
                col = _fill(store, self.slots, self.items, FactCache._TODO, look)
            else:
                codes = {None: -1}
                col = np.fromiter((codes.setdefault(get(i, _NONE).get(name), len(codes) - 1)
                                   for i in self.items), dtype=np.int64, count=len(self.items))
            got = self._attrs[name] = (codes, col)
        return got

    def mask(self, m) -> np.ndarray:
        """Rows matching ``m`` (a ``models.rules.ItemMatch``)."""
        out = np.ones(len(self.items), dtype=bool)
        if m.item_ids is not None:
            s = self.lookup(m.item_ids)
            out &= _member(self.slots, s[s >= 0])
        if m.categories is not None:
            col = self.category()
            out &= _member(col, [self.codes[c] for c in m.categories if c in self.codes])
        if m.price_min is not None:
            out &= self.price() >= m.price_min  # unknown price (NaN): no match
        if m.price_max is not None:
            out &= self.price() <= m.price_max
        for name, values in m.attributes:
            codes, col = self.attribute(name)
            out &= _member(col, [codes[v] for v in values if v in codes])
        return out


def _member(col: np.ndarray, wanted) -> np.ndarray:
    """``np.isin(col, wanted)`` for small non-negative codes (-1: none): one gather from
    a table of the codes, no sort."""
    wanted = np.asarray(wanted, dtype=np.int64)
    if len(wanted) == 0 or len(col) == 0:
        return np.zeros(len(col), dtype=bool)
    table = np.zeros(max(int(wanted.max()), int(col.max())) + 2, dtype=bool)
    table[wanted + 1] = True
    return table[col + 1]
