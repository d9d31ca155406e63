"""`streamrec serve` (the collector and push gateway) and `streamrec token USER_ID`.

Both read the same environment variables as the worker (KAFKA_BOOTSTRAP_SERVERS,
REDIS_URL, STREAMREC_PREFIX, STREAMREC_EVENTS_TOPIC, KAFKA_* passthrough) plus the
gateway's own (``gateway.config``); the token secret is STREAMREC_GATEWAY_SECRET.
"""

from __future__ import annotations

import os

from streamrec.errors import ConfigError

__all__ = ["register"]


def register(sub) -> None:
    serve = sub.add_parser("serve", help="run the event collector and the recommendation push gateway")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    serve.add_argument("--demo", action="store_true",
                       help="also hand out demo users and tokens at /demo/session (never in production)")
    serve.add_argument("--catalog", help="a catalog JSONL file for the storefront grid "
                                         "(default: STREAMREC_CATALOG_FILE)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="print a signed token that lets a client read USER_ID's lists")
    token.add_argument("user_id")
    token.add_argument("--ttl", type=float, help="lifetime in seconds (default STREAMREC_GATEWAY_TOKEN_TTL or 3600)")
    token.set_defaults(func=cmd_token)


def cmd_serve(args) -> int:
    from gateway import GatewayConfig, load_catalog, serve
    from streamrec.settings import Settings

    if not 0 <= args.port <= 65535:
        raise ConfigError(f"--port {args.port} is not a TCP port")
    settings = Settings.from_env()
    config = GatewayConfig.from_env(os.environ)
    config.require_secret()
    catalog = load_catalog(args.catalog or settings.catalog_file)
    serve(settings, config, host=args.host, port=args.port, demo=args.demo, catalog=catalog,
          log_level=args.log_level)
    return 0


def cmd_token(args) -> int:
    from gateway import GatewayConfig, sign_token

    config = GatewayConfig.from_env(os.environ)
    ttl = args.ttl if args.ttl is not None else config.token_ttl
    if ttl <= 0:
        raise ConfigError(f"--ttl {ttl} must be > 0 seconds")
    print(sign_token(args.user_id, config.require_secret(), ttl=ttl))
    return 0
