"""Signed user tokens: who may read whose recommendations.

A token is ``v1.<user id, base64url>.<expiry, unix seconds>.<HMAC-SHA256, base64url>``,
signed with ``STREAMREC_GATEWAY_SECRET``. The site's back end mints one when it renders
a page for a signed-in (or anonymous) user; the browser passes it as
``Authorization: Bearer <token>`` or as the ``token`` query parameter (EventSource and
WebSocket cannot set headers). No server-side state: any gateway process holding the
secret can check any token. The user id is base64url-encoded so ids containing dots
cannot shift the fields.

>>> t = sign_token("u42", "a-secret-of-16-chars+", ttl=60, now=1_000.0)
>>> verify_token(t, "a-secret-of-16-chars+", now=1_030.0)
'u42'
>>> def reason(token, now):
...     try:
...         return verify_token(token, "a-secret-of-16-chars+", now=now)
...     except TokenError as ex:
...         return ex.reason
>>> reason(t, 1_061.0), reason(t[:-2] + "AA", 1_030.0), reason(None, 1_030.0)
('token:expired', 'token:bad_signature', 'token:missing')
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

from streamrec.errors import StreamrecError

__all__ = ["TokenError", "sign_token", "verify_token"]

_VERSION = "v1"
_MAX_TOKEN_CHARS = 1024


class TokenError(StreamrecError):
    """A token is missing, malformed, forged or expired; ``reason`` is a stable code."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _signature(secret: str, body: str) -> str:
    return _b64(hmac.new(secret.encode(), body.encode(), hashlib.sha256).digest())


def sign_token(user_id: str, secret: str, *, ttl: float = 3600.0, now: float | None = None) -> str:
    """A token that lets its holder read ``user_id``'s recommendations for ``ttl`` seconds."""
    if not user_id:
        raise ValueError("sign_token: user_id must not be empty")
    expires = int((time.time() if now is None else now) + ttl)
    body = f"{_VERSION}.{_b64(user_id.encode())}.{expires}"
    return f"{body}.{_signature(secret, body)}"


def verify_token(token: str | None, secret: str, *, now: float | None = None) -> str:
    """The user id a valid token was issued for; raise :class:`TokenError` otherwise."""
    if not token:
        raise TokenError("token:missing")
    if len(token) > _MAX_TOKEN_CHARS:
        raise TokenError("token:malformed")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != _VERSION:
        raise TokenError("token:malformed")
    body = ".".join(parts[:3])
    # Signature first, in constant time: nothing in a forged token is trusted.
    if not hmac.compare_digest(_signature(secret, body).encode(), parts[3].encode()):
        raise TokenError("token:bad_signature")
    try:
        user_id = _unb64(parts[1]).decode()
        expires = int(parts[2])
    except (binascii.Error, UnicodeDecodeError, ValueError) as ex:
        raise TokenError("token:malformed") from ex
    if (time.time() if now is None else now) >= expires:
        raise TokenError("token:expired")
    return user_id
