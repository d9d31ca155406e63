"""Hostile input for the event parser, catalog records and the worker: Hypothesis
strategies for structured payloads, and fast seeded byte mutations for volume.

Everything here is what a producer could put on the events topic (bytes) or what a
replay could hand the flow (decoded dicts): deep nesting, huge numbers, NaN/Infinity,
invalid UTF-8, control characters, very long strings, duplicate keys, wrong types for
every field, far-future and negative timestamps. The parser's contract is that each of
them becomes either a valid event or a ``DeadLetter`` with a reason, never an exception.

>>> import random
>>> base = b'{"event_id":"e1","ts":1732680000,"user_id":"u1","type":"view","item_id":"p1"}'
>>> variants = [mutate(base, random.Random(n)) for n in range(200)]
>>> len(variants), all(isinstance(v, bytes) for v in variants), len(set(variants)) > 100
(200, True, True)
"""

from __future__ import annotations

import random
import time
from datetime import timedelta, timezone

import orjson
from hypothesis import strategies as st

from models.events import EVENT_TYPES

__all__ = ["FIELDS", "catalog_payloads", "event_dicts", "event_payloads", "mutate", "valid_event"]

FIELDS = ("event_id", "ts", "user_id", "session_id", "type", "item_id", "value", "category",
          "context", "consent")
_NOW = 1_732_680_000.0
_CONTROL = "".join(chr(c) for c in range(32)) + "\x7f\u2028\u2029\ufeff"

# -- values: everything JSON (and a decoded dict) can carry, with the awkward ones common
huge_ints = st.one_of(st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
                      st.integers(min_value=10**300, max_value=10**400),
                      st.integers(min_value=-(10**400), max_value=-(10**300)),
                      st.sampled_from([-(2**63), -1, 0, 10**20]))

numbers = st.one_of(st.integers(), huge_ints,
                    st.floats(allow_nan=True, allow_infinity=True),
                    st.sampled_from([float("nan"), float("inf"), -float("inf"), -0.0, 1e308, 5e-324]))
texts = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.sampled_from(_CONTROL), max_size=20),
    st.integers(min_value=250, max_value=70_000).map(lambda n: "x" * n),  # over every length limit
    st.sampled_from(["", " ", "null", "NaN", "\x00", "\ud800", "é" * 300, "a.b.c"]),
)
_valid_ts = st.floats(min_value=_NOW - 10 * 365 * 86_400, max_value=_NOW)
timestamps = st.one_of(
    _valid_ts, _valid_ts, _valid_ts, _valid_ts, _valid_ts,
    st.floats(min_value=1.0e8, max_value=4.1e9),
    st.sampled_from([_NOW, -1.0, 0, -_NOW, 1e18, _NOW * 1000, 4102444800.0 + 1, 99999999.0]),
    st.floats(min_value=_NOW + 86_400, max_value=4.1e9),  # far future within the range
    st.datetimes(timezones=st.sampled_from([None, timezone.utc, timezone(timedelta(hours=14)),
                                            timezone(timedelta(hours=-14))])).map(lambda d: d.isoformat()),
    st.sampled_from(["2024-11-27T04:00:00+00:00", "2024-11-27T04:00:00", "yesterday",
                     "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "2024-02-30T00:00:00Z"]),
    numbers, texts, st.booleans(), st.none(),
)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=20,
)


def _deep(depth: int) -> dict:
    node: dict = {}
    root = node
    for _ in range(depth):
        node["d"] = {}
        node = node["d"]
    return root


contexts = st.one_of(
    st.none(), json_values,
    st.fixed_dictionaries({}, optional={
        "items": st.one_of(st.lists(st.text(max_size=10), max_size=30), json_values),
        "preferences": st.one_of(st.lists(st.text(max_size=10), max_size=5), json_values),
        "user_attrs": st.one_of(st.dictionaries(st.sampled_from(["age_band", "gender"]), texts), json_values),
        "query": texts, "facets": json_values, "rec_id": texts, "receipt": texts,
    }),
    st.integers(min_value=500, max_value=3000).map(_deep),  # deeper than any JSON parser goes
)


def _field(valid, hostile):
    # Mostly valid, so that most events get far enough for the next field to matter.
    return st.one_of(valid, valid, valid, hostile)


ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
_EVENT_FIELDS = {
    "event_id": _field(ids, json_values),
    "ts": timestamps,
    "user_id": _field(ids, json_values),
    "type": _field(st.sampled_from(sorted(EVENT_TYPES)), json_values),
}
_OPTIONAL = {
    "item_id": _field(ids, json_values), "session_id": _field(ids, json_values),
    "value": _field(st.floats(min_value=0, max_value=10), json_values),
    "category": _field(ids, json_values), "context": contexts,
    "consent": _field(st.booleans(), json_values),
}
event_dicts = st.fixed_dictionaries(_EVENT_FIELDS, optional=_OPTIONAL).flatmap(
    lambda d: st.dictionaries(st.text(max_size=6), json_values, max_size=3).map(lambda extra: {**extra, **d}))


def _encode(value) -> bytes | None:
    try:
        return orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError):  # huge ints, lone surrogates, too deep
        return None


def _as_bytes(event: dict):
    raw = _encode(event)
    return raw if raw is not None else event


def event_payloads():
    """Whole payloads as the source may deliver them: decoded dicts, JSON bytes, JSON
    text, arbitrary bytes, and JSON bytes after a few hostile mutations."""
    mutated = st.tuples(event_dicts.map(_as_bytes), st.randoms(use_true_random=False)).map(
        lambda pair: mutate(pair[0], pair[1]) if isinstance(pair[0], bytes) else pair[0])
    return st.one_of(
        event_dicts,
        event_dicts.map(_as_bytes),
        event_dicts.map(_as_bytes).map(lambda b: b.decode("utf-8", "replace") if isinstance(b, bytes) else b),
        mutated,
        st.binary(max_size=200),
        json_values,
        st.none(),
    )


def catalog_payloads():
    """Catalog records (the ``items`` topic): right and wrong shapes, bytes and dicts."""
    records = st.fixed_dictionaries({"item_id": _field(ids, json_values)}, optional={
        "category": _field(ids, json_values), "tags": _field(st.lists(ids, max_size=5), json_values),
        "price": _field(st.floats(min_value=0, max_value=1000), numbers), "title": texts,
        "available": _field(st.booleans(), json_values),
        "attributes": _field(st.dictionaries(ids, ids, max_size=4), json_values)})
    return st.one_of(records, records.map(_as_bytes), json_values, st.binary(max_size=100))


def valid_event(n: int, rng: random.Random, *, now: float | None = None, users: int = 200,
                items: int = 500) -> dict:
    """A valid event of the contract (for mixing with hostile ones)."""
    etype = rng.choice(("view", "view", "click", "click", "add_to_cart", "purchase", "search"))
    event = {"event_id": f"ok-{n}", "ts": (time.time() if now is None else now) - rng.random() * 60,
             "user_id": f"u{rng.randrange(users)}", "type": etype}
    if etype == "search":
        event["context"] = {"query": "shoes"}
    else:
        item = rng.randrange(items)
        event.update(item_id=f"p{item}", category=f"c{item % 20}")
    return event


# -- fast mutations: for volume (a million payloads) on top of the generated ones
_INSERTS = (b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x00", b"\x1b[2J", b"\\u0000",
            b"\\ud800", b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1", b"null", b"[]", b"{}",
            b'"', b"\\", b",", b":", b"}", b"]", b"true", b'"\xe2\x80\xae"')
_FIELD_VALUES = (b"NaN", b"Infinity", b"-1e400", b"1" + b"0" * 400, b"18446744073709551616",
                 b"-9223372036854775809", b"true", b"null", b"[]", b"{}", b'""', b'"\xff\xfe"',
                 b'"' + b"x" * 70_000 + b'"', b"[" * 2000 + b"]" * 2000, b'"2024-11-27T04:00:00"',
                 b'"9999-12-31T23:59:59+00:00"', b"-1732680000", b"4102444801", b"1732680000000",
                 b'{"items": [1, 2]}', b'"\\u0000\\u001f"',
                 # valid values too: a duplicate key that still makes a valid event
                 b'"u-dup"', b"1732680000.5", b'"view"', b'"2024-11-27T04:00:00+01:00"', b"0.5",
                 b'{"items": ["p1", "p2"], "rec_id": "r"}', b"false")


def mutate(payload: bytes, rng: random.Random) -> bytes:
    """One hostile variant of ``payload`` (seeded: the same rng state gives the same bytes)."""
    op = rng.randrange(12)
    op = 3 + op % 2 if op >= 9 else op  # field replacements (JSON stays valid) twice as often
    n = len(payload)
    if op == 0 and n:  # flip a byte
        i = rng.randrange(n)
        return payload[:i] + bytes([rng.randrange(256)]) + payload[i + 1:]
    if op == 1:  # insert a hostile token
        i = rng.randrange(n + 1)
        return payload[:i] + rng.choice(_INSERTS) + payload[i:]
    if op == 2 and n:  # truncate
        return payload[:rng.randrange(n)]
    if op == 3 and payload.startswith(b"{"):  # duplicate key: which one wins?
        field = rng.choice(FIELDS).encode()
        return b'{"' + field + b'":' + rng.choice(_FIELD_VALUES) + b"," + payload[1:]
    if op == 4 and payload.startswith(b"{"):  # a field's value replaced (appended: last wins)
        field = rng.choice(FIELDS).encode()
        return payload[:-1] + b',"' + field + b'":' + rng.choice(_FIELD_VALUES) + b"}"
    if op == 5:  # deep nesting around it
        depth = rng.choice((10, 200, 1100, 5000))
        return b"[" * depth + payload + b"]" * depth
    if op == 6:  # control characters and invalid UTF-8 inside strings
        return payload.replace(b'":"', b'":"' + rng.choice((b"\x01\x02", b"\xff", b"\\u0007", b"\t\n")), 1)
    if op == 7:  # type confusion: the whole payload as a string or inside a list
        return rng.choice((orjson.dumps(payload.decode("utf-8", "replace")), b"[" + payload + b"]"))
    return payload * rng.choice((2, 3))  # concatenated documents
