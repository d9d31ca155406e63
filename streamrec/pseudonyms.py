"""Pseudonymous user ids: a keyed hash in place of the id a site sends.

With ``STREAMREC_USER_ID_KEY`` set, the worker's parse step replaces every event's
``user_id`` by ``pu1-`` + the first 32 hex digits of HMAC-SHA256(key, user id) before
the event reaches any state, Redis key or stream entry; the gateway hashes the id in a
request's path with the same key to find that user's list. Without the key nobody can
go from a pseudonym back to the id, or from an id to its pseudonym (see docs/privacy.md).

>>> names = UserPseudonyms("a-key-of-at-least-16-chars")
>>> p = names("alice")
>>> p, len(p), names("alice") == p, names("bob") == p
('pu1-335f627d07399ec0c7a2a8e108e09dbc', 36, True, False)
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["PSEUDONYM_PREFIX", "UserPseudonyms"]

#: Marks a stored id as a pseudonym (scheme 1: HMAC-SHA256, 128 bits in hex).
PSEUDONYM_PREFIX = "pu1-"
_HEX_CHARS = 32


class UserPseudonyms:
    """``names(user_id)`` -> the pseudonym under ``key``. Picklable, holds no client."""

    def __init__(self, key: str) -> None:
        if not key:
            raise ValueError("UserPseudonyms: the key must not be empty")
        self.key = key

    def __call__(self, user_id: str) -> str:
        digest = hmac.new(self.key.encode(), user_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return PSEUDONYM_PREFIX + digest.hexdigest()[:_HEX_CHARS]

    def __repr__(self) -> str:
        return "UserPseudonyms(key=***)"
