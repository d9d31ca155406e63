"""From the browser and back: the HTTP event collector, the JS tracker, and live push of
recommendations over SSE and WebSocket.

``streamrec serve`` runs it; ``serve_in_thread`` runs it inside another program (the
demo, tests). See docs/gateway.md.
"""

from gateway.app import STATIC_DIR, create_app
from gateway.config import GatewayConfig
from gateway.server import GatewayHandle, load_catalog, serve, serve_in_thread
from gateway.tokens import TokenError, sign_token, verify_token

__all__ = [
    "STATIC_DIR",
    "GatewayConfig",
    "GatewayHandle",
    "TokenError",
    "create_app",
    "load_catalog",
    "serve",
    "serve_in_thread",
    "sign_token",
    "verify_token",
]
