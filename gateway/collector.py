"""``POST /v1/events``: validate browser events like the dataflow does, produce them to Kafka.

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

from gateway.tokens import TokenError, verify_token
from models.events import MAX_EVENT_BYTES, InvalidEvent, validate_event

__all__ = ["accept_batch", "AcceptedBatch", "collect_endpoint"]

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
                 token_user: str | None = None) -> AcceptedBatch:
    """Validate decoded events; returns the Kafka messages and the rejections."""
    offset = 0.0
    if sent_at is not None and abs(now - sent_at) > _SKEW_TOLERANCE:
        offset = now - sent_at
    batch = AcceptedBatch()
    for index, raw in enumerate(events):
        if isinstance(raw, dict):
            if raw.get("ts") is None:
                raw = {**raw, "ts": now}
            elif offset and isinstance(raw["ts"], (int, float)) and not isinstance(raw["ts"], bool):
                raw = {**raw, "ts": raw["ts"] + offset}
        try:
            event = validate_event(raw, now, max_skew)
        except InvalidEvent as ex:
            _reject(batch, index, raw, ex.reason, ex.detail)
            continue
        if token_user is not None and event.user_id != token_user:
            _reject(batch, index, raw, "user_id:not_token_user")
            continue
        value = orjson.dumps(event.to_dict())
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


def _error(status: int, error: str, retry_after: float | None = None, **extra) -> JSONResponse:
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JSONResponse({"error": error, **extra}, status_code=status, headers=headers)


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
    wait = state.rate_limiter.allow(client_address(request, cfg.trust_proxy))
    if wait:
        stats["rate_limited"] += 1
        return _error(429, "rate limit: too many requests from this client", wait)
    producer = state.producer
    if not producer.available:
        stats["unavailable"] += 1
        return _error(503, "event queue unavailable: Kafka cannot be reached", 5.0)
    token_user = None
    if request.headers.get("authorization") or request.query_params.get("token"):
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth[:7].lower() == "bearer " else request.query_params.get("token")
        try:
            token_user = verify_token(token, state.secret)
        except TokenError as ex:
            return _error(401, ex.reason)
    try:
        body = await _read_body(request, cfg.max_body)
    except ClientDisconnect:
        return _error(400, "client went away")
    if body is None:
        return _error(413, f"body larger than {cfg.max_body} bytes")
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError as ex:
        return _error(400, "payload:not_json", detail=str(ex)[:120])
    events = decoded if isinstance(decoded, list) else [decoded]
    if len(events) > cfg.max_batch:
        return _error(413, f"{len(events)} events in one request; at most {cfg.max_batch}")
    sent_at = None
    raw_sent_at = request.query_params.get("sent_at")
    if raw_sent_at:
        try:
            sent_at = float(raw_sent_at)
        except ValueError:
            return _error(400, "sent_at must be unix seconds")
        if not math.isfinite(sent_at):
            return _error(400, "sent_at must be unix seconds")
    batch = accept_batch(events, now=time.time(), sent_at=sent_at, max_skew=cfg.max_skew,
                         token_user=token_user)
    if batch.messages and producer.queued() + len(batch.messages) > producer.queue_max:
        stats["queue_full"] += 1
        return _error(503, "event queue full", 1.0)
    produced = 0
    try:
        for key, value in batch.messages:
            producer.produce(key, value)
            produced += 1
    except BufferError:
        stats["queue_full"] += 1
        return _error(503, "event queue full", 1.0, accepted=produced)
    stats["accepted"] += produced
    stats["rejected"] += len(batch.rejected)
    return JSONResponse({"accepted": produced, "rejected": len(batch.rejected),
                         "errors": batch.rejected[:_MAX_REPORTED_ERRORS]}, status_code=202)
