"""Fan-out of the recs stream to connected browsers.

One :class:`RecsReader` per gateway process follows ``{prefix}:recs`` with
``XREAD BLOCK`` and hands each entry to the :class:`Hub`, which offers it to every
:class:`Subscriber` (an SSE or WebSocket connection) of that entry's user. Entries of
users with nobody connected are skipped before decoding.

A subscriber holds at most ``maxlen`` undelivered lists in a ``deque``; when a slow
client falls behind, the oldest list is dropped (a newer list supersedes it), so the
reader never waits for anyone and one slow client costs a bounded amount of memory.
A list is offered only when it is newer (the user's ``seq`` grew) and different (other
item ids or order) from the last one that subscriber was given.

A subscriber may leave items out (``exclude``: the product the page shows): each list is
offered to it without them, the rest in the same order, and "different" compares what
that subscriber would see. The stored lists are never changed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

__all__ = ["RecMessage", "Subscriber", "Hub", "HubFull", "RecsReader", "message_from_latest",
           "without_items"]

log = logging.getLogger("gateway.fanout")


@dataclass(frozen=True, slots=True)
class RecMessage:
    """One recommendation list as sent to browsers; ``body`` is its JSON, built once."""

    user_id: str
    seq: int
    fingerprint: tuple[str, ...]
    emitted_at: float
    body: bytes


def _message(fields: dict, items: list) -> RecMessage:
    seq = int(fields.get("seq") or 0)
    body = {
        "type": "recommendations",
        "user_id": fields["user_id"],
        "seq": seq,
        # The list's identity for impression and click events (entries written before
        # lists carried one: the event it was computed after).
        "rec_id": fields.get("rec_id") or fields.get("trigger_event_id"),
        "variant": fields.get("variant") or "default",
        "trigger_event_id": fields.get("trigger_event_id"),
        "event_ts": float(fields.get("event_ts") or 0.0),
        "emitted_at": float(fields.get("emitted_at") or 0.0),
        "strategy": fields.get("strategy"),
        "model_version": fields.get("model_version"),
        "items": items,
    }
    return RecMessage(body["user_id"], seq, tuple(i["item_id"] for i in items), body["emitted_at"],
                      orjson.dumps(body))


def message_from_entry(fields: dict[bytes, bytes]) -> RecMessage:
    """A stream entry of the output contract as a :class:`RecMessage`."""
    text = {k.decode(): v.decode() for k, v in fields.items() if k != b"items"}
    return _message(text, orjson.loads(fields.get(b"items", b"[]")))


def message_from_latest(raw: bytes) -> RecMessage:
    """The ``{prefix}:latest:{user}`` JSON object as a :class:`RecMessage`."""
    obj = orjson.loads(raw)
    return _message(obj, obj.get("items") or [])


def without_items(msg: RecMessage, exclude: frozenset[str]) -> RecMessage:
    """``msg`` without the items in ``exclude``, the others in the same order and with
    the same scores; ``msg`` itself when it holds none of them.

    >>> msg = _message({"user_id": "u", "seq": 3}, [{"item_id": "a", "score": 0.9},
    ...                                            {"item_id": "b", "score": 0.5}])
    >>> without_items(msg, frozenset({"a"})).fingerprint
    ('b',)
    >>> without_items(msg, frozenset({"z"})) is msg
    True
    """
    if not exclude or exclude.isdisjoint(msg.fingerprint):
        return msg
    body = orjson.loads(msg.body)
    body["items"] = [entry for entry in body["items"] if entry["item_id"] not in exclude]
    return RecMessage(msg.user_id, msg.seq, tuple(i for i in msg.fingerprint if i not in exclude),
                      msg.emitted_at, orjson.dumps(body))


class Subscriber:
    """One connection's mailbox: at most ``maxlen`` lists, oldest dropped first; lists are
    queued without the items in ``exclude``."""

    __slots__ = ("user_id", "pending", "wakeup", "last_seq", "last_fingerprint", "dropped", "sent",
                 "exclude")

    def __init__(self, user_id: str, maxlen: int, last_seq: int = -1,
                 exclude: frozenset[str] = frozenset()) -> None:
        self.user_id = user_id
        self.exclude = exclude
        self.pending: deque[RecMessage] = deque(maxlen=maxlen)
        self.wakeup = asyncio.Event()
        self.last_seq = last_seq
        self.last_fingerprint: tuple[str, ...] | None = None
        self.dropped = 0
        self.sent = 0

    def offer(self, msg: RecMessage, *, force: bool = False) -> bool:
        """Queue ``msg`` if it is newer and different; ``force`` skips the seq check
        (a resumed client whose list was reset, e.g. after an erasure)."""
        if not force and msg.seq <= self.last_seq:
            return False
        msg = without_items(msg, self.exclude)
        if msg.fingerprint == self.last_fingerprint:
            self.last_seq = max(self.last_seq, msg.seq)
            return False
        if len(self.pending) == self.pending.maxlen:
            self.dropped += 1
        self.pending.append(msg)
        self.last_seq, self.last_fingerprint = msg.seq, msg.fingerprint
        self.wakeup.set()
        return True

    async def next_batch(self, timeout: float) -> list[RecMessage]:
        """Wait up to ``timeout`` s for lists; returns them in order (empty on timeout)."""
        if not self.pending:
            self.wakeup.clear()
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout)
            except asyncio.TimeoutError:
                return []
        batch = list(self.pending)
        self.pending.clear()
        self.sent += len(batch)
        return batch


class HubFull(Exception):
    """No room for another push connection; ``per_user`` says which limit was hit."""

    def __init__(self, per_user: bool) -> None:
        super().__init__("too many connections for this user" if per_user
                         else "too many connections to this gateway")
        self.per_user = per_user


class Hub:
    """Subscribers by user id, with a process-wide and a per-user connection limit."""

    def __init__(self, *, max_clients: int, max_per_user: int, queue_len: int) -> None:
        self.max_clients = max_clients
        self.max_per_user = max_per_user
        self.queue_len = queue_len
        self.by_user: dict[str, set[Subscriber]] = {}
        self.clients = 0
        self.published = 0

    def subscribe(self, user_id: str, last_seq: int = -1,
                  exclude: frozenset[str] = frozenset()) -> Subscriber:
        subs = self.by_user.get(user_id)
        if self.clients >= self.max_clients:
            raise HubFull(per_user=False)
        if subs is not None and len(subs) >= self.max_per_user:
            raise HubFull(per_user=True)
        sub = Subscriber(user_id, self.queue_len, last_seq, exclude)
        self.by_user.setdefault(user_id, set()).add(sub)
        self.clients += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        subs = self.by_user.get(sub.user_id)
        if subs is None or sub not in subs:
            return
        subs.discard(sub)
        self.clients -= 1
        if not subs:
            del self.by_user[sub.user_id]

    def wants(self, user_id: str) -> bool:
        return user_id in self.by_user

    def publish(self, msg: RecMessage) -> int:
        n = 0
        for sub in self.by_user.get(msg.user_id, ()):
            n += sub.offer(msg)
        self.published += n
        return n


class RecsReader:
    """Follows the recs stream from its current end and publishes to the hub."""

    def __init__(self, client: aioredis.Redis, stream: str, hub: Hub, *, block_ms: int = 1000,
                 count: int = 1000) -> None:
        self.client = client
        self.stream = stream
        self.hub = hub
        self.block_ms = block_ms
        self.count = count
        self.last_id: str | None = None
        self.entries = 0
        self.connected = False
        self.error = ""

    async def _tail_id(self) -> str:
        last = await self.client.xrevrange(self.stream, count=1)
        return last[0][0].decode() if last else "0-0"

    async def run(self) -> None:
        backoff = 0.1
        while True:
            try:
                if self.last_id is None:
                    self.last_id = await self._tail_id()
                    self.connected = True
                resp = await self.client.xread({self.stream: self.last_id}, count=self.count,
                                               block=self.block_ms)
                self.connected, self.error, backoff = True, "", 0.1
            except (RedisError, OSError) as ex:
                self.connected, self.error = False, f"{type(ex).__name__}: {ex}"
                log.warning("gateway: reading %s failed (%s); retrying in %.1fs",
                            self.stream, self.error, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            for _, entries in resp or ():
                for entry_id, fields in entries:
                    self.entries += 1
                    user = fields.get(b"user_id", b"").decode()
                    if self.hub.wants(user):
                        try:
                            self.hub.publish(message_from_entry(fields))
                        except (KeyError, ValueError, orjson.JSONDecodeError) as ex:
                            log.warning("gateway: skipping malformed recs entry %s: %s", entry_id, ex)
                self.last_id = entries[-1][0].decode()
