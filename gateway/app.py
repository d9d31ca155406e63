"""The gateway's ASGI app: collector, erasure, push endpoints, tracker, demo storefront, health.

``create_app(settings, config)`` builds it; the clients (Kafka producer, Redis, the recs
reader) are created in the lifespan, never at import time, and the producer is flushed
on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from pathlib import Path

import anyio
import redis.asyncio as aioredis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles

from connectors.redis_sink import RedisKeys
from gateway.collector import collect_endpoint
from gateway.config import GatewayConfig
from gateway.erasure import erase_endpoint
from gateway.fanout import Hub, RecsReader
from gateway.openapi import openapi_document
from gateway.producer import EventProducer
from gateway.push import SSEEndpoint, latest_endpoint, websocket_endpoint
from gateway.ratelimit import RateLimiter
from gateway.tokens import sign_token
from streamrec.pseudonyms import UserPseudonyms
from streamrec.settings import Settings

__all__ = ["create_app", "STATIC_DIR"]

log = logging.getLogger("gateway")

STATIC_DIR = Path(__file__).resolve().parent / "static"
_CATALOG_FIELDS = ("item_id", "category", "title", "price", "tags", "available")


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse(_health(request.app.state))


async def readyz(request: Request) -> JSONResponse:
    health = _health(request.app.state)
    return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)


def _health(state) -> dict:
    producer, reader, hub = state.producer, state.reader, state.hub
    ok = producer.available and reader.connected
    return {
        "status": "ok" if ok else "degraded",
        "kafka": {"available": producer.available, "problem": producer.problem,
                  "queued": producer.queued(), "produced": producer.produced,
                  "delivered": producer.delivered, "failed": producer.failed},
        "redis": {"connected": reader.connected, "problem": reader.error,
                  "entries_read": reader.entries, "last_id": reader.last_id},
        "push": {"clients": hub.clients, "users": len(hub.by_user), "published": hub.published},
        "collector": dict(state.collector_stats),
    }


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(openapi_document(str(request.base_url).rstrip("/")))


async def tracker_js(request: Request) -> Response:
    # Short cache: a stable URL whose content may change with a release.
    return FileResponse(STATIC_DIR / "tracker.js", media_type="text/javascript",
                        headers={"Cache-Control": "public, max-age=300"})


async def storefront(request: Request) -> Response:
    return FileResponse(STATIC_DIR / "storefront.html", media_type="text/html")


async def demo_catalog(request: Request) -> JSONResponse:
    return JSONResponse(request.app.state.catalog)


async def demo_session(request: Request) -> JSONResponse:
    """Stands in for the site's back end, which would mint the token for its own user."""
    state = request.app.state
    if not state.demo:
        return JSONResponse({"error": "not in demo mode"}, status_code=404)
    user_id = request.query_params.get("user_id") or f"demo-{secrets.token_hex(4)}"
    return JSONResponse({"user_id": user_id,
                         "token": sign_token(user_id, state.secret, ttl=state.config.token_ttl)})


def _catalog_view(catalog: list[dict] | None) -> list[dict]:
    return [{k: item[k] for k in _CATALOG_FIELDS if k in item} for item in catalog or ()]


def create_app(settings: Settings, config: GatewayConfig, *, catalog: list[dict] | None = None,
               demo: bool = False) -> Starlette:
    """The gateway app. ``config.secret`` must be set (see ``GatewayConfig.require_secret``)."""
    secret = config.require_secret()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        state = app.state
        state.producer = EventProducer(settings.kafka_bootstrap_servers, settings.events_topic,
                                       queue_max=config.producer_queue,
                                       extra_config=settings.kafka_config)
        await anyio.to_thread.run_sync(state.producer.start)
        # Point reads share a few connections; a burst of reconnecting clients waits for
        # one (up to 5 s) instead of opening hundreds or failing.
        pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, max_connections=32,
                                                        timeout=5, health_check_interval=30)
        state.redis = aioredis.Redis(connection_pool=pool)
        # The reader blocks in XREAD: it gets a connection of its own.
        reader_client = aioredis.Redis.from_url(settings.redis_url, socket_keepalive=True)
        state.reader = RecsReader(reader_client, state.keys.recs, state.hub)
        reader_task = asyncio.ensure_future(state.reader.run())
        try:
            yield
        finally:
            reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader_task
            await reader_client.aclose()
            await state.redis.aclose()
            await anyio.to_thread.run_sync(state.producer.close)

    middleware = []
    if config.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Last-Event-ID"], max_age=600))
    routes = [
        Route("/v1/events", collect_endpoint, methods=["POST"]),
        Route("/v1/users/{user_id}", erase_endpoint, methods=["DELETE"]),
        Route("/v1/users/{user_id}/recommendations", latest_endpoint, methods=["GET"]),
        Route("/v1/users/{user_id}/recommendations/stream", SSEEndpoint(), methods=["GET"]),
        WebSocketRoute("/v1/users/{user_id}/recommendations/ws", websocket_endpoint),
        Route("/v1/tracker.js", tracker_js, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/demo", lambda request: RedirectResponse("/demo/"), methods=["GET"]),
        Route("/demo/", storefront, methods=["GET"]),
        Route("/demo/catalog", demo_catalog, methods=["GET"]),
        Route("/demo/session", demo_session, methods=["GET"]),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.settings = settings
    app.state.config = config
    app.state.secret = secret
    app.state.demo = demo
    app.state.catalog = _catalog_view(catalog)
    app.state.keys = RedisKeys(settings.prefix)
    app.state.pseudonyms = UserPseudonyms(settings.user_id_key) if settings.user_id_key else None
    app.state.hub = Hub(max_clients=config.max_clients, max_per_user=config.max_per_user,
                        queue_len=config.client_queue)
    app.state.rate_limiter = RateLimiter(config.rate, config.burst)
    app.state.event_limiter = RateLimiter(config.event_rate, config.event_burst)
    app.state.collector_stats = {"accepted": 0, "rejected": 0, "rate_limited": 0, "denied": 0,
                                 "unavailable": 0, "queue_full": 0, "erasures": 0}
    return app
