"""What is placed into a list after top-K: pinned items and new catalog items.

Pins (``models.rules``) go to their position in the lists whose context matches; new
items (catalog records that arrived while events flowed and have had no interaction
yet, kept per category by :class:`NewItems`) take the last slots of lists of users of
their category, so a new product can be shown before anyone has interacted with it.

Both only place items that may be listed: available, not purchased by the user, not
blocked or filtered out by a rule, of the page's category when the list is restricted
to one. Neither duplicates an item: a pinned item already in the list moves.

>>> new = NewItems(per_category=2, window=3600.0)
>>> new.add("n1", "shoes", 10.0); new.add("n2", "shoes", 20.0); new.add("n3", "shoes", 30.0)
>>> new.newest("shoes", ts=40.0)
['n3', 'n2']
>>> new.forget("n3"); new.newest("shoes", ts=4000.0)
[]
"""

from __future__ import annotations

from typing import Sequence

from models.rules import ItemFacts, RuleSet

__all__ = ["NewItems", "place"]


class NewItems:
    """Per category, the most recently added items that have had no interaction yet."""

    __slots__ = ("per_category", "window", "by_category", "category_of")

    def __init__(self, per_category: int = 20, window: float = 7 * 24 * 3600.0) -> None:
        self.per_category = per_category
        self.window = window
        self.by_category: dict[str, dict[str, float]] = {}  # category -> item -> added at
        self.category_of: dict[str, str] = {}

    def __getstate__(self):
        return (self.per_category, self.window, self.by_category, self.category_of)

    def __setstate__(self, state):
        self.per_category, self.window, self.by_category, self.category_of = state

    def __len__(self) -> int:
        return len(self.category_of)

    def add(self, item: str, category: str, ts: float) -> None:
        """``item`` of ``category`` entered the catalog at event time ``ts``."""
        self.forget(item)
        items = self.by_category.setdefault(category, {})
        items[item] = ts
        self.category_of[item] = category
        while len(items) > self.per_category:
            self.category_of.pop(next(iter(items)), None)
            del items[next(iter(items))]

    def forget(self, item: str) -> None:
        """``item`` is not new any more (it trends, or left the catalog)."""
        category = self.category_of.pop(item, None)
        if category is not None:
            items = self.by_category[category]
            del items[item]
            if not items:
                del self.by_category[category]

    def newest(self, category: str, ts: float) -> list[str]:
        """New items of ``category`` added within the window before ``ts``, newest first."""
        items = self.by_category.get(category)
        if not items:
            return []
        since = ts - self.window
        return [i for i, added in reversed(items.items()) if added >= since]


def _top_category(inp) -> str | None:
    for cats in (inp.session_categories, inp.categories):
        if cats:
            return cats[0][0]
    return inp.preferences[0] if inp.preferences else None


def _categories(inp) -> list[str]:
    """The user's top categories, session taste first (the page's, when it names one)."""
    if inp.page_category:
        return [inp.page_category]
    out: list[str] = []
    for cats in (inp.session_categories, inp.categories):
        for c, _ in cats:
            if c not in out:
                out.append(c)
    for c in inp.preferences or ():
        if c not in out:
            out.append(c)
    return out[:4]


def place(results: list, inputs: Sequence, k: int, rules: RuleSet | None, facts: ItemFacts,
          unavailable, new_items: NewItems | None, new_slots: int,
          permitted: dict[str, bool] | None = None) -> None:
    """Put new items (last slots) and pins (their positions) into ``results`` in place.

    ``permitted`` caches what the rules say of an item (``rules.allows``); the caller
    keeps it while the rules and the catalog facts stay (``FactCache.allowed``).
    """
    pins = rules.pins if rules is not None else ()
    fresh = new_items is not None and len(new_items) > 0 and new_slots > 0
    if not pins and not fresh:
        return
    if permitted is None:
        permitted = {}

    def listable(item: str) -> bool:
        """What no request changes: in stock, and the rules let it be listed."""
        if item in unavailable:
            return False
        ok = permitted.get(item)
        if ok is None:
            ok = rules is None or rules.allows(item, facts)
            if len(permitted) < 100_000 and (rules is None or rules.knows(item, facts)):
                permitted[item] = ok  # a fact learnt later would not move the version
        return ok

    def allowed(item: str, inp) -> bool:
        if not listable(item) or item in inp.excluded:
            return False
        return not inp.page_category or facts.category.get(item) == inp.page_category

    if pins:
        by_context = rules.pins_by_context
        # The pins that may be listed at all, once per batch: (index, rule).
        open_pins = [(i, r) for i, r in enumerate(pins) if listable(r.item_id)]
    for inp, res in zip(inputs, results):
        if not res.items:
            continue  # nothing ranked: the rank step's fallback list has no rules
        items, reasons = res.items, res.reasons
        if fresh:
            _place_new(inp, items, reasons, k, new_items, new_slots, allowed)
        if pins and open_pins:
            top = _top_category(inp) if by_context else None
            page_category, excluded = inp.page_category, inp.excluded
            chosen = []
            for i, r in open_pins:
                if r.lists is not None and not r.lists.matches(page_category, top, inp.page,
                                                               inp.segment):
                    continue
                if r.item_id in excluded or (
                        page_category and facts.category.get(r.item_id) != page_category):
                    continue
                chosen.append(i)
            if chosen:
                _place_pins(items, reasons, k, rules.pin_layout(tuple(chosen), k))


def _place_new(inp, items: list, reasons: list, k: int, new_items: NewItems, slots: int,
               allowed) -> None:
    listed = {i for i, _ in items}
    queues = [(c, new_items.newest(c, inp.ts)) for c in _categories(inp)]
    picked: list[tuple[str, str]] = []
    while len(picked) < slots and any(q for _, q in queues):
        for category, queue in queues:  # round robin: the top category first
            while queue:
                item = queue.pop(0)
                if item not in listed and allowed(item, inp):
                    picked.append((item, category))
                    listed.add(item)
                    break
            if len(picked) >= slots:
                break
    if not picked:
        return
    cut = max(0, min(len(items), k - len(picked)))
    score = items[cut - 1][1] if cut else items[0][1]
    del items[cut:], reasons[cut:]
    for item, category in picked:
        items.append((item, score))
        reasons.append({"kind": "new", "category": category})


def _place_pins(items: list, reasons: list, k: int, layout: tuple) -> None:
    """Pinned items at their positions (``RuleSet.pin_layout``); the ranked items keep
    their order around them, and a pin past the end of a shorter list comes last."""
    taken, placed = layout
    if not taken:
        return
    last = len(items) - 1
    scores = [items[min(at, last)][1] for at, _, _ in taken]  # a pin takes its slot's score
    ranked = [j for j, (item, _) in enumerate(items) if item in placed]
    for j in reversed(ranked):  # ranked too: it moves to its pinned place
        del items[j], reasons[j]
    for (at, item, rule_id), score in zip(taken, scores):  # ascending: earlier pins keep their index
        where = min(at, len(items))
        items.insert(where, (item, score))
        reasons.insert(where, {"kind": "pinned", "rule": rule_id})
    del items[k:], reasons[k:]
