"""Gateway settings: the few knobs the worker's ``Settings`` does not have.

Kafka, Redis, the key prefix and the topics come from ``streamrec.settings.Settings``
(the same variables as the worker). The gateway's own variables are parsed here, once,
into a frozen value:

| variable | default | meaning |
|---|---|---|
| ``STREAMREC_GATEWAY_SECRET`` | – (required) | HMAC key for user tokens, >= 16 characters |
| ``STREAMREC_GATEWAY_API_KEYS`` | – | comma-separated keys of the site's back end (``Authorization: Bearer <key>``), >= 16 characters each; several at once for rotation |
| ``STREAMREC_GATEWAY_ANONYMOUS_PREFIX`` | ``anon-`` | user ids with this prefix may post behaviour events without a token (empty: none may) |
| ``STREAMREC_GATEWAY_TOKEN_TTL`` | ``3600`` | lifetime of tokens from ``streamrec token``, s |
| ``STREAMREC_GATEWAY_CORS_ORIGINS`` | – | comma-separated origins allowed to call the API (``*`` = any) |
| ``STREAMREC_GATEWAY_MAX_BODY`` | ``262144`` | request body limit, bytes (413 beyond) |
| ``STREAMREC_GATEWAY_MAX_BATCH`` | ``500`` | events per request (413 beyond) |
| ``STREAMREC_GATEWAY_RATE`` / ``_BURST`` | ``20`` / ``60`` | requests/s per client (token bucket; 429 beyond) |
| ``STREAMREC_GATEWAY_EVENT_RATE`` / ``_EVENT_BURST`` | ``100`` / ``1000`` | events/s per client (token bucket; 429 beyond); the burst must hold a full batch |
| ``STREAMREC_GATEWAY_TRUST_PROXY`` | ``0`` | take the client address from ``X-Forwarded-For`` |
| ``STREAMREC_GATEWAY_MAX_SKEW`` | ``300`` | s a (corrected) client ``ts`` may lie in the future |
| ``STREAMREC_GATEWAY_PRODUCER_QUEUE`` | ``100000`` | messages librdkafka may hold (503 when full) |
| ``STREAMREC_GATEWAY_CLIENT_QUEUE`` | ``8`` | lists buffered per push client (oldest dropped) |
| ``STREAMREC_GATEWAY_HEARTBEAT`` | ``15`` | s between heartbeats on SSE and WebSocket |
| ``STREAMREC_GATEWAY_MAX_CLIENTS`` | ``20000`` | push connections per process (503 beyond) |
| ``STREAMREC_GATEWAY_MAX_PER_USER`` | ``16`` | push connections per user (429 beyond) |

>>> c = GatewayConfig.from_env({"STREAMREC_GATEWAY_SECRET": "s" * 32,
...                             "STREAMREC_GATEWAY_CORS_ORIGINS": "https://shop.example, http://localhost:3000"})
>>> c.cors_origins, c.rate, "s" * 32 in repr(c)
(('https://shop.example', 'http://localhost:3000'), 20.0, False)
>>> c.api_keys, c.anonymous_prefix, c.event_burst
((), 'anon-', 1000.0)
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

from streamrec.errors import ConfigError

__all__ = ["GatewayConfig", "MIN_SECRET_CHARS"]

MIN_SECRET_CHARS = 16
_SECRET_HINT = ("set it to a long random string, e.g. "
                "export STREAMREC_GATEWAY_SECRET=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')")


@dataclass(frozen=True)
class GatewayConfig:
    """The gateway's own settings (see the module docstring for the variables)."""

    secret: str = field(default="", repr=False)
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    anonymous_prefix: str = "anon-"
    token_ttl: float = 3600.0
    cors_origins: tuple[str, ...] = ()
    max_body: int = 256 * 1024
    max_batch: int = 500
    rate: float = 20.0
    burst: float = 60.0
    event_rate: float = 100.0
    event_burst: float = 1000.0
    trust_proxy: bool = False
    max_skew: float = 300.0
    producer_queue: int = 100_000
    client_queue: int = 8
    heartbeat: float = 15.0
    max_clients: int = 20_000
    max_per_user: int = 16

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "GatewayConfig":
        kw: dict = {}

        def number(var: str, attr: str, kind: type, minimum: float) -> None:
            raw = env.get(var)
            if raw is None or raw == "":
                return
            try:
                value = kind(raw)
            except ValueError as ex:
                msg = f"{var}={raw!r} is not a valid {kind.__name__}; e.g. {var}={getattr(cls, attr)!r}"
                raise ConfigError(msg) from ex
            if not math.isfinite(value) or value < minimum:
                msg = f"{var}={raw!r} must be a finite number >= {minimum}"
                raise ConfigError(msg)
            kw[attr] = value

        if env.get("STREAMREC_GATEWAY_SECRET"):
            kw["secret"] = env["STREAMREC_GATEWAY_SECRET"]
        keys = tuple(k.strip() for k in env.get("STREAMREC_GATEWAY_API_KEYS", "").split(",") if k.strip())
        if any(len(k) < MIN_SECRET_CHARS for k in keys):
            raise ConfigError(f"STREAMREC_GATEWAY_API_KEYS: every key must have at least {MIN_SECRET_CHARS} "
                              "characters; generate one with "
                              "python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        kw["api_keys"] = keys
        if "STREAMREC_GATEWAY_ANONYMOUS_PREFIX" in env:
            kw["anonymous_prefix"] = env["STREAMREC_GATEWAY_ANONYMOUS_PREFIX"].strip()
        origins = env.get("STREAMREC_GATEWAY_CORS_ORIGINS", "")
        kw["cors_origins"] = tuple(o.strip().rstrip("/") for o in origins.split(",") if o.strip())
        trust = env.get("STREAMREC_GATEWAY_TRUST_PROXY", "").strip().lower()
        if trust not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
            raise ConfigError(f"STREAMREC_GATEWAY_TRUST_PROXY={trust!r} must be 1/0, true/false, yes/no, on/off")
        kw["trust_proxy"] = trust in ("1", "true", "yes", "on")
        number("STREAMREC_GATEWAY_TOKEN_TTL", "token_ttl", float, 1.0)
        number("STREAMREC_GATEWAY_MAX_BODY", "max_body", int, 1024)
        number("STREAMREC_GATEWAY_MAX_BATCH", "max_batch", int, 1)
        number("STREAMREC_GATEWAY_RATE", "rate", float, 0.001)
        number("STREAMREC_GATEWAY_BURST", "burst", float, 1.0)
        number("STREAMREC_GATEWAY_EVENT_RATE", "event_rate", float, 0.001)
        number("STREAMREC_GATEWAY_EVENT_BURST", "event_burst", float, 1.0)
        number("STREAMREC_GATEWAY_MAX_SKEW", "max_skew", float, 0.0)
        number("STREAMREC_GATEWAY_PRODUCER_QUEUE", "producer_queue", int, 1)
        number("STREAMREC_GATEWAY_CLIENT_QUEUE", "client_queue", int, 1)
        number("STREAMREC_GATEWAY_HEARTBEAT", "heartbeat", float, 0.05)
        number("STREAMREC_GATEWAY_MAX_CLIENTS", "max_clients", int, 1)
        number("STREAMREC_GATEWAY_MAX_PER_USER", "max_per_user", int, 1)
        config = cls(**kw)
        if config.event_burst < config.max_batch:
            raise ConfigError(f"STREAMREC_GATEWAY_EVENT_BURST={config.event_burst:g} is smaller than "
                              f"STREAMREC_GATEWAY_MAX_BATCH={config.max_batch}: a full batch could never "
                              "pass; raise the burst or lower the batch size")
        return config

    def require_secret(self) -> str:
        """The token secret, or a ConfigError that says how to set one."""
        if not self.secret:
            raise ConfigError(f"STREAMREC_GATEWAY_SECRET is not set; {_SECRET_HINT}")
        if len(self.secret) < MIN_SECRET_CHARS:
            raise ConfigError(f"STREAMREC_GATEWAY_SECRET is shorter than {MIN_SECRET_CHARS} "
                              f"characters; {_SECRET_HINT}")
        return self.secret

    def replace(self, **changes) -> "GatewayConfig":
        return dataclasses.replace(self, **changes)
