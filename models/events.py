"""The input-event contract: parsing, validation and engagement weight.

Shared by the dataflow and the HTTP collector, so both accept and reject exactly
the same events. A bad event raises :class:`InvalidEvent` with a short, stable
``reason`` code (``field:problem``) that goes to the dead-letter outputs.

>>> e = parse_event(b'{"event_id":"e1","ts":"2024-11-27T04:00:00+00:00","user_id":"u1","type":"click","item_id":"p9"}')
>>> e.ts, e.type, e.item_id
(1732680000.0, 'click', 'p9')
>>> try:
...     parse_event(b'{"event_id":"e1","ts":1,"user_id":"u1","type":"teleport"}')
... except InvalidEvent as ex:
...     ex.reason
'type:unknown'
"""

from __future__ import annotations

import math
import sys
from datetime import datetime
from typing import Any, Mapping

import orjson

__all__ = [
    "EVENT_TYPES",
    "ITEM_REQUIRED_TYPES",
    "CONTROL_TYPES",
    "Event",
    "InvalidEvent",
    "parse_event",
    "validate_event",
    "engagement",
    "erasure_receipt",
    "MAX_EVENT_BYTES",
    "MAX_RECEIPT_CHARS",
]

EVENT_TYPES = frozenset(
    {
        "view", "click", "hover", "scroll", "dwell", "add_to_cart", "remove_from_cart",
        "wishlist", "purchase", "rating", "filter", "search", "impression", "consent", "erase",
    }
)
ITEM_REQUIRED_TYPES = frozenset(
    {"view", "click", "hover", "add_to_cart", "remove_from_cart", "wishlist", "purchase", "rating"}
)
CONTROL_TYPES = frozenset({"consent", "erase"})
MAX_EVENT_BYTES = 64 * 1024
MAX_ID_CHARS = 256
MAX_RECEIPT_CHARS = 64
# Unix seconds accepted: 1973-03-03 .. 2100-01-01 (recorded datasets go back to the 1990s).
# The upper bound catches milliseconds sent where seconds are expected.
MIN_TS, MAX_TS = 1.0e8, 4102444800.0

_intern = sys.intern


class InvalidEvent(ValueError):
    """An event breaks the contract; ``reason`` is a short stable code for the DLQ."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class Event:
    """One validated interaction. Small, slotted and picklable."""

    __slots__ = (
        "event_id", "ts", "user_id", "session_id", "type", "item_id", "value",
        "category", "context", "consent",
    )

    def __init__(
        self,
        event_id: str,
        ts: float,
        user_id: str,
        type: str,
        item_id: str | None = None,
        session_id: str | None = None,
        value: float | None = None,
        category: str | None = None,
        context: dict | None = None,
        consent: bool | None = None,
    ) -> None:
        self.event_id = event_id
        self.ts = ts
        self.user_id = user_id
        self.type = type
        self.item_id = item_id
        self.session_id = session_id
        self.value = value
        self.category = category
        self.context = context
        self.consent = consent

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Event) and self.__getstate__() == other.__getstate__()

    def __repr__(self) -> str:
        return f"Event({self.event_id!r}, {self.type!r}, item={self.item_id!r}, ts={self.ts})"

    def to_dict(self) -> dict:
        out = {s: getattr(self, s) for s in self.__slots__}
        return {k: v for k, v in out.items() if v is not None}


def erasure_receipt(event: Event) -> str | None:
    """The receipt an ``erase`` event asks to be confirmed with, or None.

    ``context.receipt`` counts when it is a printable string of 1 to 64 characters;
    anything else is ignored (the erasure itself still happens, without a receipt).

    >>> erasure_receipt(Event("e1", 1e9, "u1", "erase", context={"receipt": "r-1"}))
    'r-1'
    >>> erasure_receipt(Event("e1", 1e9, "u1", "erase", context={"receipt": "a\\nb"})) is None
    True
    """
    if event.type != "erase" or not event.context:
        return None
    receipt = event.context.get("receipt")
    if isinstance(receipt, str) and 0 < len(receipt) <= MAX_RECEIPT_CHARS and receipt.isprintable():
        return receipt
    return None


def _text(raw: Mapping, name: str, required: bool, shared: bool = True) -> str | None:
    value = raw.get(name)
    if value is None:
        if required:
            raise InvalidEvent(f"{name}:missing")
        return None
    if not isinstance(value, str):
        raise InvalidEvent(f"{name}:not_string", type(value).__name__)
    if not value or len(value) > MAX_ID_CHARS:
        raise InvalidEvent(f"{name}:bad_length", str(len(value)))
    return _intern(value) if shared else value


def _timestamp(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidEvent("ts:not_number_or_iso8601", "bool")
    if isinstance(value, (int, float)):
        try:
            ts = float(value)
        except OverflowError:  # a decoded integer beyond any float
            raise InvalidEvent("ts:out_of_range", "integer too large") from None
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError as ex:
            raise InvalidEvent("ts:bad_iso8601", value[:40]) from ex
        if parsed.tzinfo is None:
            raise InvalidEvent("ts:iso8601_without_offset", value[:40])
        ts = parsed.timestamp()
    elif value is None:
        raise InvalidEvent("ts:missing")
    else:
        raise InvalidEvent("ts:not_number_or_iso8601", type(value).__name__)
    if not math.isfinite(ts) or not (MIN_TS <= ts <= MAX_TS):
        raise InvalidEvent("ts:out_of_range", repr(value)[:40])
    return ts


MAX_CONTEXT_DEPTH = 16  # nesting levels of objects and lists a context may have


def _too_deep(value, limit: int) -> bool:
    """Whether ``value`` nests more than ``limit`` levels of dicts and lists (no recursion:
    the point is to refuse what recursion could not handle).

    >>> _too_deep({"a": [{"b": 1}]}, 3), _too_deep({"a": [{"b": {}}]}, 3)
    (False, True)
    """
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return False


def validate_event(raw: Any, now: float | None = None, max_skew: float | None = None,
                   max_age: float | None = None) -> Event:
    """Check a decoded JSON value against the contract and build an :class:`Event`.

    ``now``/``max_skew``: when both are given, events stamped more than ``max_skew``
    seconds in the future are rejected (a client with a broken clock).
    ``now``/``max_age``: likewise events older than ``max_age`` seconds (``ts:too_old``):
    decayed state is kept relative to a user's latest event, and an event weeks older
    than that cannot be weighed (its decay factor leaves the range of a float).
    """
    if not isinstance(raw, dict):
        raise InvalidEvent("event:not_object", type(raw).__name__)
    event_id = _text(raw, "event_id", True, shared=False)  # unique: nothing to share
    user_id = _text(raw, "user_id", True)
    etype = raw.get("type")
    if etype is None:
        raise InvalidEvent("type:missing")
    if not isinstance(etype, str):
        raise InvalidEvent("type:not_string", type(etype).__name__)
    if etype not in EVENT_TYPES:
        raise InvalidEvent("type:unknown", etype[:40])
    etype = _intern(etype)
    ts = _timestamp(raw.get("ts"))
    if now is not None and max_skew is not None and ts > now + max_skew:
        raise InvalidEvent("ts:in_future", f"{ts - now:.0f}s ahead")
    if now is not None and max_age is not None and ts < now - max_age:
        raise InvalidEvent("ts:too_old", f"{now - ts:.0f}s old")
    item_id = _text(raw, "item_id", etype in ITEM_REQUIRED_TYPES)
    session_id = _text(raw, "session_id", False)
    category = _text(raw, "category", False)
    value = raw.get("value")
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidEvent("value:not_number", type(value).__name__)
        try:
            value = float(value)
        except OverflowError:
            value = math.inf
        if not math.isfinite(value):
            raise InvalidEvent("value:not_finite")
    context = raw.get("context")
    if context is not None and not isinstance(context, dict):
        raise InvalidEvent("context:not_object", type(context).__name__)
    if context and _too_deep(context, MAX_CONTEXT_DEPTH):
        # Copying or pickling it (between workers, into snapshots) would recurse that deep.
        raise InvalidEvent("context:too_deep", f"more than {MAX_CONTEXT_DEPTH} levels")
    consent = raw.get("consent")
    if consent is not None and not isinstance(consent, bool):
        raise InvalidEvent("consent:not_bool", type(consent).__name__)
    if etype == "rating" and value is None:
        raise InvalidEvent("value:missing_for_rating")
    if etype == "consent" and value not in (0.0, 1.0) and consent is None:
        raise InvalidEvent("value:consent_needs_0_or_1")
    if etype in ("hover", "dwell") and value is not None and value < 0:
        raise InvalidEvent("value:negative_duration")
    if context:
        items = context.get("items")
        if items is not None and (
            not isinstance(items, list) or not all(isinstance(i, str) for i in items)
        ):
            raise InvalidEvent("context.items:not_list_of_strings")
        prefs = context.get("preferences")
        if prefs is not None and (
            not isinstance(prefs, list) or not all(isinstance(i, str) for i in prefs)
        ):
            raise InvalidEvent("context.preferences:not_list_of_strings")
        attrs = context.get("user_attrs")
        if attrs is not None and not isinstance(attrs, dict):
            raise InvalidEvent("context.user_attrs:not_object")
    return Event(event_id, ts, user_id, etype, item_id, session_id, value, category, context, consent)


def parse_event(
    payload: bytes | str | None, now: float | None = None, max_skew: float | None = None,
    max_age: float | None = None,
) -> Event:
    """Decode one Kafka value or JSONL line and validate it."""
    if payload is None:
        raise InvalidEvent("payload:empty")
    if len(payload) > MAX_EVENT_BYTES:
        raise InvalidEvent("payload:too_large", f"{len(payload)} bytes > {MAX_EVENT_BYTES}")
    try:
        raw = orjson.loads(payload)
    except orjson.JSONDecodeError as ex:
        # orjson rejects NaN/Infinity literals, as JSON does.
        raise InvalidEvent("payload:not_json", str(ex)[:80]) from ex
    return validate_event(raw, now, max_skew, max_age)


def engagement(etype: str, value: float | None, weights: Mapping[str, float]) -> float:
    """How much one event says about interest in its item.

    Durations and depths scale the type's base weight, capped so one long dwell
    cannot outweigh a purchase.

    >>> w = {"dwell": 1.0, "view": 1.0, "scroll": 0.5}
    >>> engagement("dwell", 30000.0, w), engagement("view", None, w), engagement("scroll", 0.5, w)
    (3.0, 1.0, 0.25)
    """
    base = weights.get(etype, 0.0)
    if value is None:
        return base
    if etype == "dwell":
        return base * min(value / 10_000.0, 3.0)
    if etype == "hover":
        return base * min(value / 2_000.0, 3.0)
    if etype == "scroll":
        return base * min(max(value, 0.0), 1.0)
    if etype == "rating":
        return base * (0.5 + min(max(value, 0.0), 5.0) / 5.0)
    return base
