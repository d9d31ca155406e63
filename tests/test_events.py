"""The input event contract (models.events): stable reasons for bad input, bounds, every
event type."""

from __future__ import annotations

import pickle

import pytest

from models.events import InvalidEvent, parse_event, validate_event

T0 = 1_732_680_000.0


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"{", "payload:not_json"),
        (b"[1,2]", "event:not_object"),
        (b'{"ts":1732680000,"user_id":"u","type":"view","item_id":"p"}', "event_id:missing"),
        (b'{"event_id":1,"ts":1732680000,"user_id":"u","type":"view","item_id":"p"}', "event_id:not_string"),
        (b'{"event_id":"e","ts":1732680000,"user_id":"u","type":"fly"}', "type:unknown"),
        (b'{"event_id":"e","ts":"tomorrow","user_id":"u","type":"view","item_id":"p"}', "ts:bad_iso8601"),
        (b'{"event_id":"e","ts":"2024-11-27T04:00:00","user_id":"u","type":"view","item_id":"p"}', "ts:iso8601_without_offset"),
        (b'{"event_id":"e","ts":1732680000000,"user_id":"u","type":"view","item_id":"p"}', "ts:out_of_range"),
        (b'{"event_id":"e","ts":NaN,"user_id":"u","type":"view","item_id":"p"}', "payload:not_json"),
        (b'{"event_id":"e","ts":1732680000,"user_id":"u","type":"view"}', "item_id:missing"),
        (b'{"event_id":"e","ts":1732680000,"user_id":"u","type":"rating","item_id":"p"}', "value:missing_for_rating"),
        (b'{"event_id":"e","ts":1732680000,"user_id":"u","type":"view","item_id":"p","value":"x"}', "value:not_number"),
        (b'{"event_id":"e","ts":true,"user_id":"u","type":"view","item_id":"p"}', "ts:not_number_or_iso8601"),
        (b'{"event_id":"e","ts":1732680000,"user_id":"u","type":"view","item_id":"p","context":[]}', "context:not_object"),
    ],
)
def test_bad_events_have_stable_reasons(payload, reason):
    with pytest.raises(InvalidEvent) as info:
        parse_event(payload)
    assert info.value.reason == reason


def test_huge_payload_and_future_timestamps_are_rejected():
    with pytest.raises(InvalidEvent, match="payload:too_large"):
        parse_event(b'{"event_id":"' + b"x" * 70_000 + b'"}')
    with pytest.raises(InvalidEvent, match="ts:in_future"):
        validate_event({"event_id": "e", "ts": T0 + 10_000, "user_id": "u", "type": "search"},
                       now=T0, max_skew=60.0)


def test_every_event_type_parses():
    for t in ["view", "click", "hover", "scroll", "dwell", "add_to_cart", "remove_from_cart",
              "wishlist", "purchase", "filter", "search", "impression", "erase"]:
        e = validate_event({"event_id": "e", "ts": T0, "user_id": "u", "type": t, "item_id": "p"})
        assert e.type == t
    assert validate_event({"event_id": "e", "ts": T0, "user_id": "u", "type": "consent",
                           "value": 0}).value == 0.0
    assert pickle.loads(pickle.dumps(e)) == e
