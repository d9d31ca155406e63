"""Running the gateway on uvicorn: in the foreground (``streamrec serve``) or in a thread
(``streamrec demo``, tests).

One process serves both the collector and the push endpoints; scale out by running more
processes behind a load balancer (each has its own Kafka producer and recs reader).
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from pathlib import Path
from typing import Mapping

import orjson
import uvicorn

from gateway.app import create_app
from gateway.config import GatewayConfig
from gateway.tokens import sign_token
from streamrec.errors import ConfigError, StreamrecError
from streamrec.settings import Settings

__all__ = ["GatewayHandle", "serve", "serve_in_thread", "load_catalog"]

log = logging.getLogger("gateway")


def load_catalog(path: str | None, limit: int = 5000) -> list[dict]:
    """Catalog records from a JSONL file (for the storefront grid); [] without a path."""
    if not path:
        return []
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"catalog file {path!r} does not exist (STREAMREC_CATALOG_FILE)")
    items = []
    with open(file, "rb") as lines:
        for line in lines:
            if line.strip():
                items.append(orjson.loads(line))
                if len(items) >= limit:
                    break
    return items


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as ex:
        sock.close()
        msg = f"cannot listen on {host}:{port}: {ex.strerror}; pick another --port"
        raise ConfigError(msg) from ex
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def _uvicorn_config(app, log_level: str) -> uvicorn.Config:
    # access logs off: at thousands of events/s they cost more than the work itself.
    return uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on",
                          timeout_graceful_shutdown=3, ws_ping_interval=None, backlog=2048)


def serve(settings: Settings, config: GatewayConfig, *, host: str = "127.0.0.1", port: int = 8000,
          demo: bool = False, catalog: list[dict] | None = None, log_level: str = "info") -> None:
    """Serve in the foreground until SIGINT/SIGTERM; queued events are flushed on the way out."""
    app = create_app(settings, config, catalog=catalog, demo=demo)
    sock = _bind(host, port)
    url = f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}"
    print(f"streamrec gateway on {url}  (collector /v1/events, push /v1/users/{{id}}/recommendations"
          f"[/stream|/ws], tracker /v1/tracker.js, storefront /demo/, OpenAPI /openapi.json)",
          flush=True)
    try:
        uvicorn.Server(_uvicorn_config(app, log_level)).run(sockets=[sock])
    except KeyboardInterrupt:
        pass  # uvicorn re-raises the signal it handled, after a graceful shutdown
    print("streamrec gateway stopped (queued events flushed to Kafka)", flush=True)


class GatewayHandle:
    """A gateway running in a background thread: ``.url``, ``.token(user)``, ``.stop()``."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, url: str, secret: str,
                 ttl: float) -> None:
        self.server = server
        self.thread = thread
        self.url = url
        self.secret = secret
        self.ttl = ttl

    @property
    def storefront_url(self) -> str:
        return f"{self.url}/demo/"

    def token(self, user_id: str, ttl: float | None = None) -> str:
        return sign_token(user_id, self.secret, ttl=self.ttl if ttl is None else ttl)

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)

    def __enter__(self) -> "GatewayHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def serve_in_thread(settings_env: Mapping[str, str], host: str = "127.0.0.1", port: int = 0,
                    catalog: list[dict] | None = None, *, demo: bool = True,
                    log_level: str = "warning", start_timeout: float = 20.0) -> GatewayHandle:
    """Start the gateway in a daemon thread and return once it accepts connections.

    ``settings_env`` holds the worker's variables (KAFKA_BOOTSTRAP_SERVERS, REDIS_URL,
    STREAMREC_PREFIX, STREAMREC_EVENTS_TOPIC, ...) and optionally the gateway's own; without
    ``STREAMREC_GATEWAY_SECRET`` a random one is made for this run. ``port=0`` picks a free
    port. ``catalog`` feeds the storefront grid.
    """
    env = dict(settings_env)
    env.setdefault("STREAMREC_GATEWAY_SECRET", secrets.token_urlsafe(32))
    settings = Settings.from_env(env)
    config = GatewayConfig.from_env(env)
    if catalog is None:
        catalog = load_catalog(settings.catalog_file)
    app = create_app(settings, config, catalog=catalog, demo=demo)
    sock = _bind(host, port)
    url = f"http://{host}:{sock.getsockname()[1]}"
    server = uvicorn.Server(_uvicorn_config(app, log_level))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as ex:  # surfaced to the caller below
            failure.append(ex)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name="streamrec-gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + start_timeout
    while not server.started:
        if failure or not thread.is_alive():
            raise StreamrecError(f"the gateway failed to start: {failure[0] if failure else 'exited'}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise StreamrecError(f"the gateway did not start within {start_timeout:.0f}s")
        time.sleep(0.02)
    return GatewayHandle(server, thread, url, config.secret, config.token_ttl)
