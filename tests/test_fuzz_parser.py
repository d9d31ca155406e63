"""Property tests: hostile payloads through the event parser, the catalog parser and the
collector's batch check. Whatever comes in, the answer is a valid event (or catalog
record) or a DeadLetter with a reason code, never an exception. The long run of the same
generators is ``streamrec fuzz --payloads 1000000``."""

from __future__ import annotations

import pickle
import random
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.collector import accept_batch
from models.events import EVENT_TYPES, MAX_EVENT_BYTES, Event, validate_event
from operators.item_step import CatalogRecord
from operators.messages import DeadLetter, Envelope
from operators.parse import EventParser, parse_catalog
from streamrec.hostile import catalog_payloads, event_dicts, event_payloads, mutate, valid_event

NOW = 1_732_680_000.0
REASON = re.compile(r"^[a-z_.]+:[a-z_0-9]+$")
FUZZ = settings(max_examples=400, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _check_dead_letter(result: DeadLetter) -> None:
    assert REASON.match(result.reason), result.reason
    assert isinstance(result.payload, bytes)


def _check_event(result, max_skew: float | None) -> Event:
    event, ingested_at = result
    assert isinstance(event, Event) and ingested_at is None
    assert event.type in EVENT_TYPES
    assert all(isinstance(getattr(event, f), str) and 0 < len(getattr(event, f)) <= 256
               for f in ("event_id", "user_id"))
    assert 1e8 <= event.ts <= 4102444800.0
    if max_skew is not None:
        assert event.ts <= NOW + max_skew
    assert validate_event(event.to_dict()) == event  # what passes, passes again
    assert pickle.loads(pickle.dumps(event)) == event
    return event


@FUZZ
@given(event_payloads())
def test_every_payload_is_an_event_or_a_dead_letter(payload):
    for parser, skew in ((EventParser(86_400.0, lambda: NOW), 86_400.0), (EventParser(None, None), None)):
        result = parser(Envelope(payload, None))
        if isinstance(result, DeadLetter):
            _check_dead_letter(result)
        else:
            _check_event(result, skew)


@FUZZ
@given(st.integers(min_value=0, max_value=10**6), st.randoms(use_true_random=False))
def test_mutated_valid_events_never_raise(n, rng):
    payload = valid_event(n, random.Random(n), now=NOW)
    raw = __import__("orjson").dumps(payload)
    for _ in range(20):
        raw = mutate(raw, rng) if len(raw) < MAX_EVENT_BYTES * 2 else raw[:1000]
        result = EventParser(86_400.0, lambda: NOW)(Envelope(raw, None))
        if isinstance(result, DeadLetter):
            _check_dead_letter(result)
        else:
            _check_event(result, 86_400.0)


@FUZZ
@given(catalog_payloads())
def test_every_catalog_record_is_kept_or_dead_lettered(payload):
    result = parse_catalog(Envelope(payload, None, "items"))
    if isinstance(result, DeadLetter):
        assert REASON.match(result.reason) and result.source == "items"
    else:
        item_id, record = result
        assert isinstance(record, CatalogRecord) and record.item_id == item_id
        assert isinstance(item_id, str) and 0 < len(item_id) <= 256


@FUZZ
@given(st.lists(event_dicts, max_size=5), st.sampled_from([None, NOW - 7200.0, NOW + 30.0]))
def test_the_collector_accepts_or_explains_every_event(events, sent_at):
    batch = accept_batch(events, now=NOW, sent_at=sent_at, max_skew=300.0)
    assert len(batch.messages) + len(batch.rejected) == len(events)
    assert all(REASON.match(r["reason"]) for r in batch.rejected)


def test_the_collector_rejects_what_it_cannot_encode():
    # Found by the property test above: a context integer beyond 64 bits (orjson's limit).
    base = {"event_id": "e", "user_id": "u", "type": "view", "item_id": "p", "ts": NOW}
    batch = accept_batch([{**base, "context": {"n": 10**30}}, base], now=NOW, sent_at=None,
                         max_skew=300.0)
    assert [r["reason"] for r in batch.rejected] == ["payload:not_encodable"]
    assert len(batch.messages) == 1


def test_the_crashes_the_fuzzer_found_are_dead_letters_now():
    deep: dict = {}
    node = deep
    for _ in range(50_000):
        node["d"] = {}
        node = node["d"]
    parser = EventParser(86_400.0, lambda: NOW)
    base = {"event_id": "e", "user_id": "u", "type": "view", "item_id": "p", "ts": NOW}
    cases = {"ts:out_of_range": {**base, "ts": 10**400},
             "value:not_finite": {**base, "value": -(10**400)},
             "ts:bad_iso8601": {**base, "ts": "x", "context": deep}}
    for reason, payload in cases.items():
        result = parser(Envelope(payload, None))
        assert isinstance(result, DeadLetter) and result.reason == reason, result


def test_with_a_max_age_old_events_are_dead_letters_in_the_live_worker():
    from streamrec.settings import Settings

    old = {"event_id": "e", "user_id": "u", "type": "view", "item_id": "p", "ts": NOW - 8 * 86_400}
    assert EventParser.from_settings(Settings(), lambda: NOW)(Envelope(old, None))[0].ts == old["ts"]
    live = EventParser.from_settings(Settings(max_event_age=7 * 86_400.0), lambda: NOW)
    assert live(Envelope(old, None)).reason == "ts:too_old"
    assert live(Envelope({**old, "ts": NOW - 6 * 86_400}, None))[0].ts == NOW - 6 * 86_400
    replay = EventParser.from_settings(Settings(), None)  # recorded files keep their own clock
    assert replay(Envelope({**old, "ts": 1.0e8}, None))[0].ts == 1.0e8
