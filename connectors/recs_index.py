"""Which recs-stream entries a sink wrote for which user, so that an erasure deletes a
user's entries by id instead of scanning the whole stream.

A scan reads every entry of the stream inside Redis (up to ``STREAMREC_RECS_MAXLEN``,
100,000 by default): tens to hundreds of milliseconds of Redis CPU per erasure, taken
from the worker and the broker on a small machine (at 1,000 events/s with a consent
change in 2% of sessions, the list p99 rose from about 60 to 100-180 ms). A user's
lists are all written by one sink partition, the one on the worker that ranks the
user's rank shard, so that partition can know their ids.

What it knows, and when a scan is still needed: every entry this partition wrote is
tracked from ``since`` on, except the oldest, once more than ``capacity`` are: those are
normally trimmed from the stream by then (``capacity`` exceeds the stream's bound), but
deleted entries do not count towards ``XADD MAXLEN``, so the stream may reach further
back. ``since`` is the first entry id of the first write after the partition started, or
after a write that failed or that the client had to send again (Redis may have taken
entries whose ids never reached us). :meth:`RecsIndex.bound` is the id before which
entries may be unknown: an erasure scans the stream up to it while the stream still
holds anything older.

>>> index = RecsIndex(capacity=3)
>>> index.added(["u1", "u2", "u1"], [b"5-0", b"5-1", b"6-0"])
>>> index.take("u1"), index.bound()
(['5-0', '6-0'], '5-0')
>>> index.added(["u2", "u2", "u2"], [b"7-0", b"7-1", b"7-2"])
>>> index.take("u2"), index.bound()  # 5-1 left the last three: a scan covers it
(['7-0', '7-1', '7-2'], '6-1')

Ids are kept as integers (``ms << 32 | seq``; Redis numbers the entries of a millisecond
from 0) in two parallel deques: about 80 bytes an entry, some 9 MB at the default
stream bound of 100,000 entries.
"""

from __future__ import annotations

from collections import deque

__all__ = ["RecsIndex", "stream_id", "RECS_INDEX_SLACK"]

#: Entries tracked beyond the stream's bound: ``XADD MAXLEN ~`` trims whole radix-tree
#: nodes (100 entries by default), so the stream may hold a little more than its bound.
RECS_INDEX_SLACK = 10_000


def stream_id(entry_id: bytes | str) -> tuple[int, int]:
    """A stream entry id as ``(milliseconds, sequence)``, ordered as Redis orders them.

    >>> stream_id(b"1700000000000-12") > stream_id("1700000000000-9")
    True
    """
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class RecsIndex:
    """The ids of the recs-stream entries one sink partition wrote, per user (see the
    module docstring). Used by the partition's own thread only."""

    __slots__ = ("capacity", "by_user", "users", "ids", "since", "dropped")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"RecsIndex: capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self.by_user: dict[str, list[int]] = {}
        self.users: deque[str] = deque()  # the user of each tracked id, oldest first
        self.ids: deque[int] = deque()
        self.since: int | None = None  # every entry from here on is known (or dropped)
        self.dropped: int | None = None  # the newest id no longer tracked

    def added(self, users: list[str], ids: list[bytes]) -> None:
        """Entries written in one pipeline, in the order they were sent (ids increase)."""
        if not ids:
            return
        codes = [_code(i) for i in ids]
        if None in codes:  # a sequence number beyond 32 bits: not kept, scanned for
            self.lost()
            return
        if self.since is None:
            self.since = codes[0]
        by_user = self.by_user
        for user, code in zip(users, codes):
            got = by_user.get(user)
            if got is None:
                by_user[user] = [code]
            else:
                got.append(code)
        self.users.extend(users)
        self.ids.extend(codes)
        for _ in range(max(0, len(self.ids) - self.capacity)):
            user, code = self.users.popleft(), self.ids.popleft()
            self.dropped = code
            got = by_user.get(user)
            # Gone when the user was erased since (or erased and back: newer ids).
            if got and got[0] == code:
                del got[0]
                if not got:
                    del by_user[user]

    def lost(self) -> None:
        """A write failed or was sent twice: entries it may have added are unknown, and
        so is anything before the next successful write."""
        self.since = None

    def bound(self) -> str | None:
        """Entries before this id may be unknown (None: any may be)."""
        if self.since is None:
            return None
        edge = self.since if self.dropped is None else max(self.since, self.dropped + 1)
        return _text(edge)

    def take(self, user: str) -> list[str]:
        """The user's tracked entry ids, forgotten here (the erasure deletes them)."""
        return [_text(c) for c in self.by_user.pop(user, ())]

    def __len__(self) -> int:
        return len(self.ids)


def _code(entry_id: bytes | str) -> int | None:
    ms, seq = stream_id(entry_id)
    return ms << 32 | seq if seq < 1 << 32 else None


def _text(code: int) -> str:
    return f"{code >> 32}-{code & 0xFFFFFFFF}"
