"""Merchandising rules: what a shop decides on top of the learned ranking.

A rule is a JSON record (the controls topic, ``streamrec rules add``):

- ``boost``: multiply the score of matching items by ``factor`` (> 0; below 1 buries);
- ``block``: never list matching items;
- ``filter``: list only matching items (e.g. ``{"price_max": 100}``);
- ``pin``: put ``item_id`` at ``position`` (1 = first) of the lists whose context matches
  (all lists without ``match``);
- ``delete``: remove the rule ``rule_id``.

Items are matched by ``item_id``, ``category`` (a value or a list), ``price_min`` /
``price_max`` and ``attributes`` (``{"brand": "x"}`` or ``{"brand": ["x", "y"]}``); all
keys given must hold. A pin's ``match`` names the lists: ``category`` (the page's
category or the user's top category), ``page`` and ``segment``.

:func:`models.rule_apply.apply_item_rules` finds the rows blocks and filters drop and
the boost of each row, as array operations over a batch's candidate table (the dropped
rows go with the other exclusions, before scoring; ``boost`` then multiplies the
scores); pins are placed after top-K (``models.placement``).

>>> rule = parse_rule({"rule_id": "r1", "action": "boost", "match": {"category": "shoes"},
...                    "factor": 1.5})
>>> rule.action, rule.factor, rule.match.matches("p1", "shoes", None, {})
('boost', 1.5, True)
>>> parse_rule({"rule_id": "r1", "action": "delete"}).action
'delete'
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

from models.rule_columns import FactCache, ItemFacts

__all__ = ["InvalidRule", "ItemMatch", "ListMatch", "Rule", "RuleSet", "ItemFacts", "FactCache",
           "parse_rule", "apply_item_rules", "boost", "item_attributes", "MAX_RULES"]

ACTIONS = ("boost", "block", "filter", "pin", "delete")
MAX_RULES = 1000  # rules a shop keeps at once (each is checked for every candidate)
MAX_ATTRIBUTES = 16  # attributes of an item the rules can see
_MAX_VALUES = 100  # values in one match list
_MAX_TEXT = 128


class InvalidRule(ValueError):
    """A rule record breaks the contract; ``reason`` is a short stable code for the DLQ."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def _text(value) -> str | None:
    """Attribute values compare as text: ``1``, ``1.0`` and ``"1"`` differ, ``True`` is "true"."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)[:_MAX_TEXT]
    return None


def item_attributes(raw) -> dict[str, str]:
    """The bounded attribute dict of a catalog record (what rules can match)."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, str] = {}
    for name, value in raw.items():
        text = _text(value)
        if isinstance(name, str) and text is not None:
            out[name[:64]] = text
            if len(out) >= MAX_ATTRIBUTES:
                break
    return out


@dataclass(frozen=True, slots=True)
class ItemMatch:
    """Which items a rule is about (every key given must hold)."""

    item_ids: frozenset[str] | None = None
    categories: frozenset[str] | None = None
    price_min: float | None = None
    price_max: float | None = None
    attributes: tuple[tuple[str, frozenset[str]], ...] = ()

    def matches(self, item: str, category: str | None, price: float | None,
                attributes: Mapping[str, str]) -> bool:
        """One item (pins, new items; the batch uses :func:`apply_item_rules`)."""
        if self.item_ids is not None and item not in self.item_ids:
            return False
        if self.categories is not None and category not in self.categories:
            return False
        if self.price_min is not None and (price is None or not price >= self.price_min):
            return False
        if self.price_max is not None and (price is None or not price <= self.price_max):
            return False
        return all(attributes.get(name) in values for name, values in self.attributes)


@dataclass(frozen=True, slots=True)
class ListMatch:
    """Which lists a pin goes into (every key given must hold)."""

    categories: frozenset[str] | None = None
    pages: frozenset[str] | None = None
    segments: frozenset[str] | None = None

    def matches(self, page_category: str | None, top_category: str | None, page: str | None,
                segment: str | None) -> bool:
        if self.categories is not None and not (
                page_category in self.categories or top_category in self.categories):
            return False
        if self.pages is not None and page not in self.pages:
            return False
        return self.segments is None or segment in self.segments


@dataclass(frozen=True, slots=True)
class Rule:
    rule_id: str
    action: str
    match: ItemMatch | None = None  # boost, block, filter
    lists: ListMatch | None = None  # pin
    factor: float = 1.0  # boost
    item_id: str | None = None  # pin
    position: int = 0  # pin, 1-based

    def to_record(self) -> dict:
        """The rule as a JSON-ready record (what ``streamrec rules list`` shows)."""
        out: dict = {"rule_id": self.rule_id, "action": self.action}
        if self.action == "boost":
            out["factor"] = self.factor
        if self.action == "pin":
            out["item_id"] = self.item_id
            out["position"] = self.position
        match: dict = {}
        if self.match is not None:
            m = self.match
            for key, values in (("item_id", m.item_ids), ("category", m.categories)):
                if values is not None:
                    match[key] = sorted(values)
            if m.price_min is not None:
                match["price_min"] = m.price_min
            if m.price_max is not None:
                match["price_max"] = m.price_max
            if m.attributes:
                match["attributes"] = {k: sorted(v) for k, v in m.attributes}
        if self.lists is not None:
            for key, values in (("category", self.lists.categories), ("page", self.lists.pages),
                                ("segment", self.lists.segments)):
                if values is not None:
                    match[key] = sorted(values)
        if match:
            out["match"] = match
        return out


def _names(value, key: str) -> frozenset[str]:
    values = [value] if isinstance(value, str) else value
    if (not isinstance(values, list) or not values or len(values) > _MAX_VALUES
            or not all(isinstance(v, str) and 0 < len(v) <= 256 for v in values)):
        raise InvalidRule(f"match.{key}:not_string_or_list", f"1-{_MAX_VALUES} non-empty strings")
    return frozenset(values)


def _number(value, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidRule(f"{key}:not_number", repr(value)[:40])
    return float(value)


_ITEM_KEYS = ("item_id", "category", "price_min", "price_max", "attributes")
_LIST_KEYS = ("category", "page", "segment")


def _item_match(raw) -> ItemMatch:
    if not isinstance(raw, dict) or not raw:
        raise InvalidRule("match:missing", "a non-empty object, e.g. {\"category\": \"shoes\"}")
    unknown = sorted(set(raw) - set(_ITEM_KEYS))
    if unknown:
        raise InvalidRule("match:unknown_key", f"{unknown[0]!r}; known: {', '.join(_ITEM_KEYS)}")
    attrs = raw.get("attributes")
    pairs: list[tuple[str, frozenset[str]]] = []
    if attrs is not None:
        if not isinstance(attrs, dict) or not attrs or len(attrs) > MAX_ATTRIBUTES:
            raise InvalidRule("match.attributes:not_object", f"1-{MAX_ATTRIBUTES} name: value pairs")
        for name, value in sorted(attrs.items()):
            values = value if isinstance(value, list) else [value]
            texts = [_text(v) for v in values[:_MAX_VALUES]]
            if not values or None in texts:
                raise InvalidRule("match.attributes:bad_value", f"{name!r}: a value or a list of values")
            pairs.append((name[:64], frozenset(texts)))
    low = _number(raw["price_min"], "match.price_min") if "price_min" in raw else None
    high = _number(raw["price_max"], "match.price_max") if "price_max" in raw else None
    if low is not None and high is not None and low > high:
        raise InvalidRule("match.price:empty_range", f"price_min {low} > price_max {high}")
    return ItemMatch(
        _names(raw["item_id"], "item_id") if "item_id" in raw else None,
        _names(raw["category"], "category") if "category" in raw else None,
        low, high, tuple(pairs))


def _list_match(raw) -> ListMatch | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise InvalidRule("match:not_object")
    unknown = sorted(set(raw) - set(_LIST_KEYS))
    if unknown:
        raise InvalidRule("match:unknown_key",
                          f"{unknown[0]!r}; a pin matches lists by {', '.join(_LIST_KEYS)}")
    if not raw:
        return None
    return ListMatch(*(_names(raw[k], k) if k in raw else None for k in _LIST_KEYS))


def parse_rule(raw) -> Rule:
    """A validated :class:`Rule` from a JSON object; raise :class:`InvalidRule`."""
    if not isinstance(raw, dict):
        raise InvalidRule("rule:not_object", type(raw).__name__)
    rule_id = raw.get("rule_id")
    if not isinstance(rule_id, str) or not 0 < len(rule_id) <= _MAX_TEXT:
        raise InvalidRule("rule_id:missing_or_not_string", f"1-{_MAX_TEXT} characters")
    action = raw.get("action")
    if action not in ACTIONS:
        raise InvalidRule("action:unknown", f"{action!r}; one of {', '.join(ACTIONS)}")
    if action == "delete":
        return Rule(rule_id, action)
    if action == "pin":
        item = raw.get("item_id")
        if not isinstance(item, str) or not 0 < len(item) <= 256:
            raise InvalidRule("item_id:missing_or_not_string", "a pin names the item it places")
        position = raw.get("position", 1)
        if isinstance(position, bool) or not isinstance(position, int) or not 1 <= position <= 1000:
            raise InvalidRule("position:not_1_to_1000", repr(position)[:40])
        return Rule(rule_id, action, lists=_list_match(raw.get("match")), item_id=item,
                    position=position)
    match = _item_match(raw.get("match"))
    if action == "boost":
        factor = _number(raw.get("factor"), "factor")
        if not 0.0 < factor <= 1000.0:
            raise InvalidRule("factor:out_of_range", f"{factor}; a boost factor is in (0, 1000]")
        return Rule(rule_id, action, match, factor=factor)
    return Rule(rule_id, action, match)


class RuleSet:
    """The rules in force, in the order they were first added (later boosts multiply)."""

    __slots__ = ("rules", "boosts", "boost_ids", "blocks", "filters", "pins", "reads", "item_rules",
                 "pins_by_context", "_layouts")

    def __init__(self, rules: Sequence[Rule] = ()) -> None:
        self.rules = tuple(rules)
        self.boosts = tuple(r for r in self.rules if r.action == "boost")
        self.boost_ids = [r.rule_id for r in self.boosts]
        self.blocks = tuple(r for r in self.rules if r.action == "block")
        self.filters = tuple(r for r in self.rules if r.action == "filter")
        self.pins = tuple(sorted((r for r in self.rules if r.action == "pin"),
                                 key=lambda r: r.position))
        # Which catalog facts the item rules read: (category, price, attributes).
        matches = [r.match for r in self.boosts + self.blocks + self.filters]
        self.reads = (any(m.categories is not None for m in matches),
                      any(m.price_min is not None or m.price_max is not None for m in matches),
                      any(m.attributes for m in matches))
        self.item_rules = bool(self.boosts or self.blocks or self.filters)
        self.pins_by_context = any(r.lists is not None for r in self.pins)
        self._layouts: dict[tuple, tuple] = {}

    def pin_layout(self, chosen: tuple[int, ...], k: int) -> tuple:
        """Where the pins ``chosen`` (indices into :attr:`pins`) go in a list of ``k``:
        ``((index, item_id, rule_id), ...)`` ascending, and the set of pinned items. The
        first pin takes a contested position, the next free one goes to the next; a pin
        whose position is past ``k`` is not placed. Cached: lists share a few layouts."""
        key = (chosen, k)
        layout = self._layouts.get(key)
        if layout is None:
            taken: dict[int, Rule] = {}
            placed: set[str] = set()
            for rule in (self.pins[i] for i in chosen):  # by position
                if rule.item_id in placed:
                    continue
                at = rule.position - 1
                while at in taken:
                    at += 1
                if at < k:
                    taken[at] = rule
                    placed.add(rule.item_id)
            layout = (tuple((at, taken[at].item_id, taken[at].rule_id) for at in sorted(taken)),
                      frozenset(placed))
            if len(self._layouts) < 4096:
                self._layouts[key] = layout
        return layout

    def __getstate__(self):
        return self.rules

    def __setstate__(self, rules):
        self.__init__(rules)

    def __len__(self) -> int:
        return len(self.rules)

    def knows(self, item: str, facts: "ItemFacts") -> bool:
        """Whether every catalog fact the item rules read is known for ``item`` (what
        they decide may then be cached: a fact learnt later, unknown before, does not
        move the facts version)."""
        need_cat, need_price, need_attr = self.reads
        return ((not need_cat or item in facts.category) and (not need_price or item in facts.price)
                and (not need_attr or item in facts.attributes))

    def allows(self, item: str, facts: "ItemFacts") -> bool:
        """Whether blocks and filters let one item be listed."""
        args = (item, facts.category.get(item), facts.price.get(item),
                facts.attributes.get(item, {}))
        return (not any(r.match.matches(*args) for r in self.blocks)
                and all(r.match.matches(*args) for r in self.filters))


# Applied to a candidate table by models.rule_apply (re-exported: they were defined here).
from models.rule_apply import apply_item_rules, boost  # noqa: E402
