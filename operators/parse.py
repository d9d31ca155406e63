"""Parse and validate raw input into events and catalog records; bad input becomes a
``DeadLetter`` with a reason, never an exception."""

from __future__ import annotations

import time
from typing import Callable

import orjson

from models.events import MAX_EVENT_BYTES, Event, InvalidEvent, parse_event, validate_event
from operators.item_step import CatalogRecord
from models.rules import InvalidRule, parse_rule
from operators.messages import DeadLetter, Envelope, RuleChange
from streamrec.metrics import EVENTS
from streamrec.pseudonyms import UserPseudonyms

__all__ = ["EventParser", "parse_catalog", "parse_control", "raw_bytes"]


def raw_bytes(payload: object) -> bytes:
    """The payload as bytes for the dead-letter outputs (whatever its type)."""
    if payload is None:
        return b""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, str):
        return payload.encode("utf-8", "replace")
    try:
        return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:  # not JSON (or nested deeper than orjson goes)
        pass
    try:
        return repr(payload).encode("utf-8", "replace")
    except RecursionError:
        return f"<{type(payload).__name__} nested too deeply to show>".encode()


class EventParser:
    """Callable for ``op.map``: Envelope -> (Event, ingested_at) or DeadLetter.

    ``now`` is injected (``None`` disables the future-timestamp and age guards, e.g. for
    replays of recorded files whose clock is not ours). With ``user_id_key`` every
    event's user id is replaced by its pseudonym (:mod:`streamrec.pseudonyms`) here,
    before any state or output sees it; so is the ``user_id`` of a dead letter's payload
    when that payload is a JSON object.
    """

    def __init__(self, max_skew: float | None, now: Callable[[], float] | None = time.time, *,
                 max_age: float | None = None, user_id_key: str = "") -> None:
        self.max_skew = max_skew
        self.now = now
        self.max_age = max_age
        self.user_id_key = user_id_key
        self.pseudonyms = UserPseudonyms(user_id_key) if user_id_key else None

    @classmethod
    def from_settings(cls, settings, now: Callable[[], float] | None) -> "EventParser":
        """The worker's parser: time guards only with a clock (live), never for replays."""
        live = now is not None
        return cls(settings.max_clock_skew if live else None, now,
                   max_age=settings.max_event_age if live and settings.max_event_age > 0 else None,
                   user_id_key=settings.user_id_key)

    def __call__(self, env: Envelope):
        guarded = self.now is not None and (self.max_skew is not None or self.max_age is not None)
        now = self.now() if guarded else None
        payload = env.payload
        try:
            if isinstance(payload, (bytes, str)) or payload is None:
                event = parse_event(payload, now, self.max_skew, self.max_age)
            else:
                event = validate_event(payload, now, self.max_skew, self.max_age)
        except InvalidEvent as ex:
            return DeadLetter(ex.reason, self._dead_payload(payload), env.source, ex.detail)
        except RecursionError as ex:  # absurdly nested JSON
            return DeadLetter("payload:too_deep", raw_bytes(payload)[:256], env.source, str(ex)[:80])
        EVENTS.add(event.type)  # a dict increment; dead letters are counted by the sink
        if self.pseudonyms is not None:
            event.user_id = self.pseudonyms(event.user_id)
        return (event, env.ingested_at)

    def _dead_payload(self, payload) -> bytes:
        raw = raw_bytes(payload)
        if self.pseudonyms is None:
            return raw
        try:
            obj = orjson.loads(raw) if not isinstance(payload, dict) else dict(payload)
        except orjson.JSONDecodeError:
            return raw  # not JSON: kept as it came (the DLQ truncates it)
        if isinstance(obj, dict) and isinstance(obj.get("user_id"), str):
            obj["user_id"] = self.pseudonyms(obj["user_id"])
            return raw_bytes(obj)
        return raw


def parse_catalog(env: Envelope):
    """Envelope -> (item_id, CatalogRecord) or DeadLetter."""
    payload = env.payload
    raw = payload
    if isinstance(payload, (bytes, str)):
        if len(payload) > MAX_EVENT_BYTES:
            return DeadLetter("item:too_large", raw_bytes(payload)[:256], "items")
        try:
            raw = orjson.loads(payload)
        except orjson.JSONDecodeError as ex:
            return DeadLetter("item:not_json", raw_bytes(payload), "items", str(ex)[:80])
    if not isinstance(raw, dict):
        return DeadLetter("item:not_object", raw_bytes(payload), "items")
    item_id = raw.get("item_id")
    if not isinstance(item_id, str) or not item_id or len(item_id) > 256:
        return DeadLetter("item_id:missing_or_not_string", raw_bytes(payload), "items")
    return (item_id, CatalogRecord(item_id, raw))


def parse_control(env: Envelope):
    """Envelope -> ("controls", RuleChange) or DeadLetter (a merchandising rule record,
    see ``models.rules``)."""
    payload = env.payload
    raw = payload
    if isinstance(payload, (bytes, str)):
        if len(payload) > MAX_EVENT_BYTES:
            return DeadLetter("rule:too_large", raw_bytes(payload)[:256], "controls")
        try:
            raw = orjson.loads(payload)
        except orjson.JSONDecodeError as ex:
            return DeadLetter("rule:not_json", raw_bytes(payload), "controls", str(ex)[:80])
    try:
        rule = parse_rule(raw)
    except InvalidRule as ex:
        return DeadLetter(ex.reason, raw_bytes(payload), "controls", ex.detail[:200])
    return ("controls", RuleChange("controls", rule))


def is_event(x) -> bool:
    return isinstance(x, tuple) and isinstance(x[0], Event)
