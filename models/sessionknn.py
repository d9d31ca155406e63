"""Session neighbourhood (session-kNN), item-side: the recent sessions that held an item.

V-SKNN (Ludewig et al. 2021) scores a candidate by the sessions most similar to the
current one that contain it; similarity weighs the items both share by how recent they
are in the current session. Kept with the item (keyed by item in the dataflow), each
stored session is the set of items seen within a few positions of this item in it, so
a question to one anchor item ("which sessions like mine went through you, and what
else did they hold?") is answered from one place: exact at any worker count.

Session keys are salted hashes the item side cannot link back to a user; erasing a
user's profile drops the only link.

>>> s = SessionNeighbours()
>>> s.add(1, ["a", "x"], capacity=10, max_items=8)
>>> s.add(2, ["b", "y"], capacity=10, max_items=8)
>>> s.add(3, ["a", "b", "z"], capacity=10, max_items=8)
>>> [item for item, _ in s.votes({"a": 1.0, "b": 0.5}, exclude=0, k=10, n=3)]
['z', 'x', 'y']
"""

from __future__ import annotations

import heapq
from typing import Iterable, Mapping

__all__ = ["SessionNeighbours"]


class SessionNeighbours:
    """Bounded: ``capacity`` most recently active sessions, ``max_items`` items each."""

    __slots__ = ("sessions",)

    def __init__(self) -> None:
        # session key -> items near this item in that session; insertion order = recency
        self.sessions: dict[int, tuple[str, ...]] = {}

    def __getstate__(self):
        return self.sessions

    def __setstate__(self, state):
        self.sessions = state

    def __len__(self) -> int:
        return len(self.sessions)

    def add(self, key: int, items: Iterable[str], capacity: int, max_items: int) -> None:
        """Session ``key`` went through this item, with ``items`` nearby."""
        sessions = self.sessions
        known = sessions.pop(key, ())
        merged = list(known)
        for item in items:
            if item not in merged:
                merged.append(item)
        sessions[key] = tuple(merged[-max_items:])
        while len(sessions) > capacity:
            del sessions[next(iter(sessions))]

    def votes(self, current: Mapping[str, float], exclude: int, k: int,
              n: int) -> list[tuple[str, float]]:
        """Items of the ``k`` stored sessions most similar to ``current`` (item -> weight
        of that item in the asking session), each voting with its similarity; the top
        ``n`` as a distribution. Items of the asking session are left to other signals."""
        scored = []
        for key, items in self.sessions.items():
            if key == exclude:
                continue
            sim = 0.0
            for item in items:
                w = current.get(item)
                if w is not None:
                    sim += w
            scored.append((sim, key, items))
        if not scored:
            return []
        if len(scored) > k:
            # ties go to the more recent session (later in insertion order)
            order = heapq.nlargest(k, range(len(scored)), key=lambda i: (scored[i][0], i))
            scored = [scored[i] for i in order]
        votes: dict[str, float] = {}
        get = votes.get
        for sim, _key, items in scored:
            vote = sim + 1.0  # every stored session shares this item with the asker
            for item in items:
                if item not in current:
                    votes[item] = get(item, 0.0) + vote
        if not votes:
            return []
        top = heapq.nlargest(n, votes.items(), key=lambda kv: kv[1])
        total = sum(v for _, v in top)
        return [(item, round(v / total, 6)) for item, v in top]
