"""Reading recommendations: the latest list, Server-Sent Events and WebSocket.

Every endpoint checks the user token first (``Authorization: Bearer`` or ``?token=``):
no token or a bad one is 401, a valid token of another user is 403, and neither
carries any data. Stream resumption uses the user's event counter ``seq`` as the SSE
event id: ``Last-Event-ID`` (or ``?last_event_id=`` on the WebSocket) says which list
the client already has, so a reconnect costs one ``GET`` of the latest list, not a scan
of the shared stream.

Every read takes ``?exclude=ITEM_ID`` (repeatable, at most ``MAX_EXCLUDE``): the items the
page already shows, typically the product in view, are left out of the lists it gets,
the other items in the same order. Only what is sent changes: the stored list and the
worker's view of it stay as they are.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.exceptions import RedisError
from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response
from starlette.websockets import WebSocket, WebSocketDisconnect

from gateway.fanout import HubFull, RecMessage, Subscriber, message_from_latest, without_items
from gateway.tokens import TokenError, verify_token
from models.events import MAX_ID_CHARS

__all__ = ["MAX_EXCLUDE", "authorize", "excluded_items", "latest_endpoint", "SSEEndpoint",
           "stored_user_id", "websocket_endpoint"]

#: Item ids one read may leave out (``?exclude=``): a page shows one product, or a few.
MAX_EXCLUDE = 20

log = logging.getLogger("gateway.push")


class Denied(Exception):
    """The request is refused with ``status`` (400 for a bad parameter, 401/403, or 503
    when Redis fails)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason

    def response(self) -> JSONResponse:
        headers = None
        if self.status == 401:
            headers = {"WWW-Authenticate": 'Bearer realm="streamrec"'}
        elif self.status == 503:
            headers = {"Retry-After": "2"}
        return JSONResponse({"error": self.reason}, status_code=self.status, headers=headers)


def _token(conn: HTTPConnection) -> str | None:
    auth = conn.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return conn.query_params.get("token")


def authorize(conn: HTTPConnection, user_id: str) -> float:
    """Check the caller may read ``user_id``; returns the token's expiry. Raises Denied."""
    state = conn.app.state
    try:
        token_user = verify_token(_token(conn), state.secret)
    except TokenError as ex:
        raise Denied(401, ex.reason) from None
    if token_user != user_id:
        raise Denied(403, "token:other_user")
    return float(_token(conn).split(".")[2])


def excluded_items(conn: HTTPConnection) -> frozenset[str]:
    """The item ids of ``?exclude=`` (repeatable); Denied(400) when there are too many or
    one is empty or too long."""
    values = conn.query_params.getlist("exclude")
    if len(values) > MAX_EXCLUDE:
        raise Denied(400, f"exclude: at most {MAX_EXCLUDE} item ids per request, got "
                          f"{len(values)}; leave out only what the page shows")
    for value in values:
        if not value or len(value) > MAX_ID_CHARS:
            raise Denied(400, f"exclude: an item id must be 1 to {MAX_ID_CHARS} characters, got "
                              f"{len(value)}; repeat the parameter for each id (?exclude=A&exclude=B)")
    return frozenset(values)


def stored_user_id(state, user_id: str) -> str:
    """The id the worker keeps ``user_id``'s lists under: its pseudonym when user ids are
    pseudonymised (``STREAMREC_USER_ID_KEY``), else the id itself. Pushed lists carry it."""
    names = state.pseudonyms
    return names(user_id) if names is not None else user_id


async def _latest(conn: HTTPConnection, user_id: str) -> RecMessage | None:
    state = conn.app.state
    try:
        raw = await state.redis.get(state.keys.latest(stored_user_id(state, user_id)))
    except (RedisError, OSError) as ex:
        log.warning("gateway: reading a latest list failed: %s", ex)
        raise Denied(503, "recommendation store unavailable") from None
    return message_from_latest(raw) if raw else None


async def latest_endpoint(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    try:
        authorize(request, user_id)
        exclude = excluded_items(request)
        msg = await _latest(request, user_id)
    except Denied as ex:
        return ex.response()
    if msg is None:
        return JSONResponse({"error": "no recommendations yet", "user_id": user_id}, status_code=404)
    return Response(without_items(msg, exclude).body, media_type="application/json", headers={"Cache-Control": "no-store"})


def _resume_seq(raw: str | None) -> int | None:
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


async def _subscribe(conn: HTTPConnection, user_id: str, resume: int | None) -> Subscriber:
    """Subscribe first, then read the latest list: nothing falls between the two."""
    exclude = excluded_items(conn)
    sub = conn.app.state.hub.subscribe(stored_user_id(conn.app.state, user_id),
                                       -1 if resume is None else resume, exclude)
    try:
        latest = await _latest(conn, user_id)
    except BaseException:
        conn.app.state.hub.unsubscribe(sub)
        raise
    if latest is not None and latest.seq != resume:
        # A reset list (erasure) has a lower seq than the client's; it is still news.
        sub.offer(latest, force=resume is not None and latest.seq < resume)
    return sub


def _sse_frame(msg: RecMessage) -> bytes:
    return b"id: %d\ndata: %s\n\n" % (msg.seq, msg.body)


class SSEEndpoint:
    """``GET /v1/users/{user_id}/recommendations/stream`` as a raw ASGI app, so that a
    client disconnect is seen at once (a task waits on ``receive``)."""

    async def __call__(self, scope, receive, send) -> None:
        request = Request(scope, receive)
        user_id = request.path_params["user_id"]
        state = request.app.state
        try:
            expires = authorize(request, user_id)
            resume = _resume_seq(request.headers.get("last-event-id")
                                 or request.query_params.get("last_event_id"))
            sub = await _subscribe(request, user_id, resume)
        except Denied as ex:
            await ex.response()(scope, receive, send)
            return
        except HubFull as ex:
            status = 429 if ex.per_user else 503
            await JSONResponse({"error": str(ex)}, status_code=status,
                               headers={"Retry-After": "5"})(scope, receive, send)
            return
        try:
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"text/event-stream; charset=utf-8"),
                (b"cache-control", b"no-store"),
                (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
            ]})
            await send({"type": "http.response.body", "body": b"retry: 2000\n\n", "more_body": True})
            pump = asyncio.ensure_future(self._pump(send, sub, state.config.heartbeat, expires))
            gone = asyncio.ensure_future(_wait_disconnect(receive))
            done, pending = await asyncio.wait({pump, gone}, return_when=asyncio.FIRST_COMPLETED)
            for task in pending:
                task.cancel()
            for task in done:
                if not task.cancelled() and task.exception() is not None and task is pump:
                    if not isinstance(task.exception(), OSError):
                        log.warning("gateway: SSE stream for a user failed: %r", task.exception())
        finally:
            state.hub.unsubscribe(sub)

    @staticmethod
    async def _pump(send, sub: Subscriber, heartbeat: float, expires: float) -> None:
        while True:
            left = expires - time.time()
            if left <= 0:
                await send({"type": "http.response.body", "more_body": False,
                            "body": b'event: token-expired\ndata: {"error": "token:expired"}\n\n'})
                return
            batch = await sub.next_batch(min(heartbeat, left))
            body = b"".join(_sse_frame(m) for m in batch) if batch else b": heartbeat\n\n"
            await send({"type": "http.response.body", "body": body, "more_body": True})


async def _wait_disconnect(receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def websocket_endpoint(websocket: WebSocket) -> None:
    """``/v1/users/{user_id}/recommendations/ws``: the same lists as JSON text frames,
    ``{"type": "heartbeat"}`` when idle; messages from the client are ignored."""
    user_id = websocket.path_params["user_id"]
    state = websocket.app.state
    try:
        expires = authorize(websocket, user_id)
        sub = await _subscribe(websocket, user_id,
                               _resume_seq(websocket.query_params.get("last_event_id")))
    except (Denied, HubFull) as ex:
        status = ex.status if isinstance(ex, Denied) else (429 if ex.per_user else 503)
        reason = ex.reason if isinstance(ex, Denied) else str(ex)
        if "websocket.http.response" in websocket.scope.get("extensions", {}):
            await websocket.send_denial_response(JSONResponse({"error": reason}, status_code=status))
        else:
            await websocket.close(code=4000 + status, reason=reason)
        return
    try:
        await websocket.accept()
        gone = asyncio.ensure_future(_drain_client(websocket))
        while not gone.done():
            left = expires - time.time()
            if left <= 0:
                await websocket.close(code=4401, reason="token:expired")
                break
            waiter = asyncio.ensure_future(sub.next_batch(min(state.config.heartbeat, left)))
            await asyncio.wait({waiter, gone}, return_when=asyncio.FIRST_COMPLETED)
            if gone.done():
                waiter.cancel()
                break
            batch = waiter.result()
            for msg in batch:
                await websocket.send_text(msg.body.decode())
            if not batch:
                await websocket.send_text('{"type": "heartbeat"}')
        gone.cancel()
    except (WebSocketDisconnect, OSError, RuntimeError):
        pass
    finally:
        state.hub.unsubscribe(sub)


async def _drain_client(websocket: WebSocket) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
