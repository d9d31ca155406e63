"""The order in which a rank shard ranks its complete requests, and the ids of lists.

A batch brings requests from seconds apart and answers in whatever order the item
workers sent them; ranking follows event time so that no list learns from (or sees
trending made by) events that came after it.
"""

from __future__ import annotations

import hashlib

from operators.messages import ItemAnswer

__all__ = ["answer_order", "event_time_order", "rec_id", "rounds"]


def _entry_ts(entry: tuple) -> float:
    return entry[0]


def answer_order(answer: ItemAnswer) -> tuple[float, str]:
    """A request's answers in a fixed order: the most recent anchor (heaviest) first,
    then by item."""
    return (-answer.anchor_weight, answer.item_id)


def rounds(done: list[list], window: float, min_size: int = 1) -> list[list[list]]:
    """Split requests (in event-time order) into runs ranked together: a run holds at
    most one request per user (the next one learns from what the previous one showed)
    and spans at most ``window`` seconds of event time (trend news is applied up to a
    run's first event, so a list sees trending at most that much older than its own
    event, and never newer), unless it holds fewer than ``min_size`` requests: a quiet
    stream read fast (a backlog of a small shop, a replay of history) would otherwise
    rank a few requests per call, and a call costs about as much as several requests.
    There, a list may see trend news up to ``min_size`` requests old.

    >>> from types import SimpleNamespace as R
    >>> reqs = [[R(user_id=u, ts=t)] for u, t in [("a", 0), ("b", 70), ("c", 140), ("a", 150)]]
    >>> [[s[0].user_id for s in run] for run in rounds(reqs, 60.0)]
    [['a'], ['b'], ['c', 'a']]
    >>> [[s[0].user_id for s in run] for run in rounds(reqs, 60.0, min_size=2)]
    [['a', 'b'], ['c', 'a']]
    """
    runs: list[list[list]] = []
    users: set[str] = set()
    first = 0.0
    for slot in done:
        user, ts = slot[0].user_id, slot[0].ts
        if (not runs or user in users
                or (ts - first > window and len(runs[-1]) >= min_size)):
            runs.append([])
            users = set()
            first = ts
        runs[-1].append(slot)
        users.add(user)
    return runs


def event_time_order(done: list[list]) -> list[list]:
    """Complete requests by event time, each user's still in their own order.

    A batch can hold requests from seconds apart; ranking them by time means no list
    learns from (or sees trending made by) events that came after it.
    """
    clock: dict[str, float] = {}
    keyed = []
    for slot in done:
        user, ts = slot[0].user_id, slot[0].ts
        ts = max(ts, clock.get(user, ts))
        clock[user] = ts
        keyed.append((ts, slot))
    keyed.sort(key=_entry_ts)
    return [slot for _, slot in keyed]


def rec_id(user_id: str, seq: int, event_id: str) -> str:
    """A list's id: the same in every run that ranks the same event for the same user."""
    key = f"{user_id}\0{seq}\0{event_id}".encode()
    return hashlib.blake2b(key, digest_size=8).hexdigest()
