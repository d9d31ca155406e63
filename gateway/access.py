"""Who may send which events: user tokens, back-end API keys and anonymous ids.

A caller is one of three kinds, decided from the request before its body is read:

- a *back end*: ``Authorization: Bearer <key>`` with one of ``STREAMREC_GATEWAY_API_KEYS``
  (header only; several keys may be valid at once so that a key can be rotated). It may
  send any event for any user and is not rate-limited per client.
- a *user*: a token from :mod:`gateway.tokens` (header or ``?token=``). It may send the
  events of its own user, and the behaviour events of anonymous ids.
- *anonymous*: no credentials. It may send behaviour events of anonymous ids only (ids
  that start with ``STREAMREC_GATEWAY_ANONYMOUS_PREFIX``, ``anon-`` by default).

Control events (``consent``, ``erase``, or any event carrying a ``consent`` field, which
the worker treats as a consent change) and every event of an identified user need that
user's token or an API key. One event that is not allowed refuses the whole request
(401 without credentials, 403 with another user's token), so nothing of it reaches Kafka.

>>> anon = Caller("anonymous")
>>> events = [{"user_id": "anon-7", "type": "click"}, {"user_id": "alice", "type": "view"}]
>>> check_events(events, anon, "anon-").status, check_events(events[:1], anon, "anon-")
(401, None)
>>> check_events(events, Caller("user", "alice"), "anon-") is None
True
>>> check_events([{"user_id": "anon-7", "type": "erase"}], Caller("user", "bob"), "anon-").reason
'token:other_user'
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from gateway.tokens import TokenError, verify_token
from models.events import CONTROL_TYPES

__all__ = ["Caller", "Denial", "check_events", "identify", "may_act_for"]


@dataclass(frozen=True, slots=True)
class Caller:
    """``kind`` is ``"backend"``, ``"user"`` or ``"anonymous"``; ``user_id`` for users."""

    kind: str
    user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Denial:
    """Why a request is refused: HTTP ``status`` (401/403) and a stable ``reason`` code."""

    status: int
    reason: str
    message: str


def _bearer(headers) -> str | None:
    auth = headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def _is_api_key(candidate: str, api_keys: tuple[str, ...]) -> bool:
    # Compare with every key, in constant time each: no early exit tells which one is close.
    found = False
    for key in api_keys:
        found |= hmac.compare_digest(candidate.encode(), key.encode())
    return found


def identify(headers, query_token: str | None, secret: str,
             api_keys: tuple[str, ...]) -> Caller | Denial:
    """The caller a request speaks for, or a 401 :class:`Denial` for bad credentials."""
    bearer = _bearer(headers)
    if bearer and api_keys and _is_api_key(bearer, api_keys):
        return Caller("backend")
    token = bearer or query_token
    if not token and not headers.get("authorization"):
        return Caller("anonymous")
    try:
        return Caller("user", verify_token(token, secret))
    except TokenError as ex:
        return Denial(401, ex.reason, "the token or API key is not valid; get a fresh token "
                                      "from the site's back end")


def _is_control(raw: dict) -> bool:
    return raw.get("type") in CONTROL_TYPES or raw.get("consent") is not None


def may_act_for(caller: Caller, user_id: str) -> Denial | None:
    """May ``caller`` act for ``user_id`` (erase, consent, identified events)?"""
    if caller.kind == "backend" or caller.user_id == user_id:
        return None
    if caller.kind == "anonymous":
        return Denial(401, "token:missing",
                      "consent and erase events, and events of signed-in users, need the user's "
                      "token (Authorization: Bearer <token> or ?token=) or the site's API key")
    return Denial(403, "token:other_user", "the token belongs to another user")


def check_events(events: list, caller: Caller, anonymous_prefix: str) -> Denial | None:
    """The first reason to refuse this batch, or None when every event may be sent.

    Events without a string ``user_id`` are left to validation, which rejects them.
    """
    if caller.kind == "backend":
        return None
    for raw in events:
        if not isinstance(raw, dict):
            continue
        user_id = raw.get("user_id")
        if not isinstance(user_id, str):
            continue
        anonymous = bool(anonymous_prefix) and user_id.startswith(anonymous_prefix)
        if anonymous and not _is_control(raw):
            continue
        denial = may_act_for(caller, user_id)
        if denial is not None:
            return denial
    return None
