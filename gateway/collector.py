"""``POST /v1/events``: validate browser events like the dataflow does, produce them to Kafka.

Who may send what is decided in :mod:`gateway.access` before anything is produced:
events of signed-in users and control events need the user's token or the site's API
key; anonymous ids may send behaviour events without one. Each client address has two
token buckets, one for requests and one for events (a request of 500 events costs 500).

The body is one event or a JSON array of events in the input contract (any content
type: the tracker sends ``text/plain`` so that ``sendBeacon`` and cross-origin ``fetch``
need no CORS preflight). Each event is checked with ``models.events.validate_event``,
the dataflow's own validator, so nothing the collector accepts lands in the dead-letter
stream; valid events are produced keyed by ``user_id``. The answer is 202 with the
accepted and rejected counts and each rejection's reason.

Time: an event without ``ts`` is stamped with the server's clock. Browser clocks can be
off by hours, so when the request carries ``?sent_at=`` (the client's clock when it sent
the batch) every numeric ``ts`` is shifted by the server-minus-client offset; after
that, an event more than ``STREAMREC_GATEWAY_MAX_SKEW`` seconds in the future is
rejected (``ts:in_future``).

>>> now = 1_732_680_000.0  # the client's clock is one hour behind the server's
>>> batch = accept_batch([{"event_id": "e1", "user_id": "u1", "type": "click", "item_id": "p1",
...                        "ts": now - 3600 - 1.5}, {"event_id": "e2", "type": "view"}],
...                      now=now, sent_at=now - 3600, max_skew=300)
>>> [orjson.loads(v)["ts"] - now for _, v in batch.messages], [r["reason"] for r in batch.rejected]
([-1.5], ['user_id:missing'])
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from gateway.access import Caller, Denial, check_events, identify
from models.events import MAX_EVENT_BYTES, InvalidEvent, validate_event

__all__ = ["accept_batch", "AcceptedBatch", "caller_of", "client_address", "collect_endpoint",
           "denied_response", "error_response"]

log = logging.getLogger("gateway.collector")

# Offsets smaller than this are clock noise and network time, not skew: leave ts alone.
_SKEW_TOLERANCE = 2.0
_MAX_REPORTED_ERRORS = 50


@dataclass
class AcceptedBatch:
    messages: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, value)
    rejected: list[dict] = field(default_factory=list)


def _reject(batch: AcceptedBatch, index: int, raw, reason: str, detail: str = "") -> None:
    if len(batch.rejected) < _MAX_REPORTED_ERRORS:
        event_id = raw.get("event_id") if isinstance(raw, dict) else None
        batch.rejected.append({"index": index, "event_id": event_id if isinstance(event_id, str) else None,
                               "reason": reason, "detail": detail})
    else:
        batch.rejected.append({"index": index, "reason": reason})


def accept_batch(events: list, *, now: float, sent_at: float | None, max_skew: float,
                 max_age: float | None = None) -> AcceptedBatch:
    """Validate decoded events; returns the Kafka messages and the rejections.

    Access was checked before (:func:`gateway.access.check_events`)."""
    offset = 0.0
    if sent_at is not None and abs(now - sent_at) > _SKEW_TOLERANCE:
        offset = now - sent_at
    batch = AcceptedBatch()
    for index, raw in enumerate(events):
        if isinstance(raw, dict):
            if raw.get("ts") is None:
                raw = {**raw, "ts": now}
            elif (offset and isinstance(raw["ts"], (int, float)) and not isinstance(raw["ts"], bool)
                  and abs(raw["ts"]) < 1e300):  # beyond: no float; validation says out of range
                raw = {**raw, "ts": raw["ts"] + offset}
        try:
            event = validate_event(raw, now, max_skew, max_age)
        except InvalidEvent as ex:
            _reject(batch, index, raw, ex.reason, ex.detail)
            continue
        try:
            value = orjson.dumps(event.to_dict())
        except TypeError as ex:  # e.g. an integer beyond 64 bits in the context
            _reject(batch, index, raw, "payload:not_encodable", str(ex)[:200])
            continue
        if len(value) > MAX_EVENT_BYTES:
            _reject(batch, index, raw, "payload:too_large", f"{len(value)} bytes > {MAX_EVENT_BYTES}")
            continue
        batch.messages.append((event.user_id.encode(), value))
    return batch


def client_address(request: Request, trust_proxy: bool) -> str:
    if trust_proxy:
        forwarded = request.headers.get("x-forwarded-for")
        if forwarded:
            return forwarded.split(",")[0].strip()
    return request.client.host if request.client else "unknown"


def error_response(status: int, error: str, retry_after: float | None = None, **extra) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    if status == 401:
        headers = {**(headers or {}), "WWW-Authenticate": 'Bearer realm="streamrec"'}
    return JSONResponse({"error": error, **extra}, status_code=status, headers=headers)



def denied_response(denial: Denial) -> JSONResponse:
    return error_response(denial.status, denial.reason, detail=denial.message)


def caller_of(request: Request) -> Caller | Denial:
    state = request.app.state
    return identify(request.headers, request.query_params.get("token"), state.secret,
                    state.config.api_keys)


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None as soon as it passes ``limit`` bytes (nothing more is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def collect_endpoint(request: Request) -> JSONResponse:
    state = request.app.state
    cfg = state.config
    stats = state.collector_stats
    caller = caller_of(request)
    client = client_address(request, cfg.trust_proxy)
    limited = not isinstance(caller, Caller) or caller.kind != "backend"
    wait = state.rate_limiter.allow(client) if limited else 0.0
    if wait:
        stats["rate_limited"] += 1
        return error_response(429, "rate limit: too many requests from this client", wait)
    if isinstance(caller, Denial):
        stats["denied"] += 1
        return denied_response(caller)
    producer = state.producer
    if not producer.available:
        stats["unavailable"] += 1
        return error_response(503, "event queue unavailable: Kafka cannot be reached", 5.0)
    try:
        body = await _read_body(request, cfg.max_body)
    except ClientDisconnect:
        return error_response(400, "client went away")
    if body is None:
        return error_response(413, f"body larger than {cfg.max_body} bytes")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as ex:
        return error_response(400, "payload:not_json", detail=str(ex)[:120])
    events = decoded if isinstance(decoded, list) else [decoded]
    if len(events) > cfg.max_batch:
        return error_response(413, f"{len(events)} events in one request; at most {cfg.max_batch}")
    wait = state.event_limiter.allow(client, cost=len(events)) if limited else 0.0
    if wait:
        stats["rate_limited"] += 1
        return error_response(429, "rate limit: too many events from this client", wait)
    denial = check_events(events, caller, cfg.anonymous_prefix)
    if denial is not None:
        stats["denied"] += 1
        return denied_response(denial)
    sent_at = None
    raw_sent_at = request.query_params.get("sent_at")
    if raw_sent_at:
        try:
            sent_at = float(raw_sent_at)
        except ValueError:
            return error_response(400, "sent_at must be unix seconds")
        if not math.isfinite(sent_at):
            return error_response(400, "sent_at must be unix seconds")
    batch = accept_batch(events, now=time.time(), sent_at=sent_at, max_skew=cfg.max_skew,
                         max_age=state.settings.max_event_age or None)
    if batch.messages and producer.queued() + len(batch.messages) > producer.queue_max:
        stats["queue_full"] += 1
        return error_response(503, "event queue full", 1.0)
    produced = 0
    try:
        for key, value in batch.messages:
            producer.produce(key, value)
            produced += 1
    except BufferError:
        stats["queue_full"] += 1
        return error_response(503, "event queue full", 1.0, accepted=produced)
    stats["accepted"] += produced
    stats["rejected"] += len(batch.rejected)
    return JSONResponse({"accepted": produced, "rejected": len(batch.rejected),
                         "errors": batch.rejected[:_MAX_REPORTED_ERRORS]}, status_code=202)
