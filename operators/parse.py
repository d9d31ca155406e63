"""Parse and validate raw input into events and catalog records; bad input becomes a
``DeadLetter`` with a reason, never an exception."""

from __future__ import annotations

import time
from typing import Callable

import orjson

from models.events import MAX_EVENT_BYTES, Event, InvalidEvent, parse_event, validate_event
from operators.item_step import CatalogRecord
from operators.messages import DeadLetter, Envelope
from streamrec.metrics import EVENTS

__all__ = ["EventParser", "parse_catalog", "raw_bytes"]


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
    except TypeError:
        return repr(payload).encode("utf-8", "replace")


class EventParser:
    """Callable for ``op.map``: Envelope -> (Event, ingested_at) or DeadLetter.

    ``now`` is injected (``None`` disables the future-timestamp guard, e.g. for replays of
    recorded files whose clock is not ours).
    """

    def __init__(self, max_skew: float | None, now: Callable[[], float] | None = time.time) -> None:
        self.max_skew = max_skew
        self.now = now

    def __call__(self, env: Envelope):
        now = self.now() if self.now is not None and self.max_skew is not None else None
        payload = env.payload
        try:
            if isinstance(payload, (bytes, str)) or payload is None:
                event = parse_event(payload, now, self.max_skew)
            else:
                event = validate_event(payload, now, self.max_skew)
        except InvalidEvent as ex:
            return DeadLetter(ex.reason, raw_bytes(payload), env.source, ex.detail)
        except RecursionError as ex:  # absurdly nested JSON
            return DeadLetter("payload:too_deep", raw_bytes(payload)[:256], env.source, str(ex)[:80])
        EVENTS.add(event.type)  # a dict increment; dead letters are counted by the sink
        return (event, env.ingested_at)


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


def is_event(x) -> bool:
    return isinstance(x, tuple) and isinstance(x[0], Event)
