"""``DELETE /v1/users/{user_id}``: ask for a user's erasure, get a receipt.

The caller is the user (their token) or the site's back end (an API key). The gateway
produces one ``erase`` event for the user, keyed by the user id like every event, with
the receipt id in ``context.receipt``, and answers 202 ``{"receipt": "..."}``. The
worker erases the user's state and lists and then appends the receipt to the Redis
stream ``{prefix}:erasures`` (fields ``receipt``, ``user_id``, ``completed_at``), where the
site's back end can see that the erasure is complete (see docs/gateway.md).

>>> event = erase_event("alice", "r-1", now=1_732_680_000.0)
>>> event["type"], event["context"], event["event_id"]
('erase', {'receipt': 'r-1'}, 'erase-r-1')
"""

from __future__ import annotations

import secrets
import time

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.access import Denial, may_act_for
from gateway.collector import caller_of, client_address, denied_response, error_response
from models.events import InvalidEvent, validate_event

__all__ = ["erase_endpoint", "erase_event", "new_receipt"]


def new_receipt() -> str:
    """An unguessable receipt id (URL-safe, 22 characters)."""
    return secrets.token_urlsafe(16)


def erase_event(user_id: str, receipt: str, *, now: float) -> dict:
    """The input-contract event that asks the worker to erase ``user_id``."""
    return {"event_id": f"erase-{receipt}", "ts": now, "user_id": user_id, "type": "erase",
            "context": {"receipt": receipt}}


async def erase_endpoint(request: Request) -> JSONResponse:
    state = request.app.state
    stats = state.collector_stats
    user_id = request.path_params["user_id"]
    caller = caller_of(request)
    if isinstance(caller, Denial):
        stats["denied"] += 1
        return denied_response(caller)
    if caller.kind != "backend":
        wait = state.rate_limiter.allow(client_address(request, state.config.trust_proxy))
        if wait:
            stats["rate_limited"] += 1
            return error_response(429, "rate limit: too many requests from this client", wait)
    denial = may_act_for(caller, user_id)
    if denial is not None:
        stats["denied"] += 1
        return denied_response(denial)
    producer = state.producer
    if not producer.available:
        stats["unavailable"] += 1
        return error_response(503, "event queue unavailable: Kafka cannot be reached; "
                                   "the erasure was not recorded, retry later", 5.0)
    receipt = new_receipt()
    try:
        event = validate_event(erase_event(user_id, receipt, now=time.time()))
    except InvalidEvent as ex:
        return error_response(400, ex.reason, detail=ex.detail)
    try:
        producer.produce(event.user_id.encode(), orjson.dumps(event.to_dict()))
    except BufferError:
        stats["queue_full"] += 1
        return error_response(503, "event queue full; the erasure was not recorded, retry later", 1.0)
    stats["erasures"] += 1
    return JSONResponse({"receipt": receipt}, status_code=202)
