"""Strong simple online baselines: decayed popularity, sequential rules, V-SKNN.

Each model has ``learn(event)`` and ``recommend(user_id, k)``; ``recommend`` never
changes state, nothing is random, and every structure has a size bound. SR and
V-SKNN follow rn5l/session-rec (``algorithms/baselines/sr.py``,
``algorithms/knn/vsknn.py``; Ludewig et al. 2021), made incremental: every event
updates the model at once, so sessions of other users are neighbours as they grow.

Sessions: the event's ``session_id`` when present, else a new session after 30
minutes of inactivity of the user. Users with long histories (MovieLens, Taobao)
are split by the same rule, and the current session is the recent history.

>>> sr = SequentialRules()
>>> for i, item in enumerate(["a", "b", "c", "a", "b"]):
...     sr.learn({"ts": float(i), "user_id": "u", "item_id": item})
>>> sr.recommend("u", 3)  # last item "b": rules b->c (1), b->a (1/2), b->b (1/3)
['c', 'a', 'b']

Run all three on the recorded datasets: ``python -m evaluation.baselines --data-root DIR``
(the replay and scoring: :mod:`evaluation.baseline_runs`).
"""

from __future__ import annotations

import heapq
import math
import sys
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from evaluation.metrics import SESSION_GAP_SECONDS, event_ts

__all__ = ["DecayedPopularity", "SequentialRules", "VSKNN", "default_baselines"]

_WEIGHTINGS = ("same", "div", "linear", "log", "quadratic")


def _position_weight(weighting: str, i: int, n: int) -> float:
    """Weight of the i-th of n current-session items (session-rec vsknn ``weighting``)."""
    if weighting == "div":
        return i / n  # linear decay: the last item weighs 1
    if weighting == "same":
        return 1.0
    if weighting == "linear":
        return max(0.0, 1.0 - 0.1 * (n - i))
    if weighting == "log":
        return 1.0 / math.log10(n - i + 1.7)
    return (i / n) ** 2  # quadratic


def _distance_weight(weighting: str, i: int) -> float:
    """Weight at distance i >= 1 (SR rules; V-SKNN ``weighting_score`` of the matched item)."""
    if weighting == "div":
        return 1.0 / i
    if weighting == "same":
        return 1.0
    if weighting == "linear":
        return max(0.0, 1.0 - 0.1 * i)
    if weighting == "log":
        return 1.0 / math.log10(i + 1.7)
    return 1.0 / (i * i)  # quadratic


def _check_weighting(name: str, what: str) -> None:
    if name not in _WEIGHTINGS:
        raise ValueError(f"{what} must be one of {list(_WEIGHTINGS)}, got {name!r}")


@dataclass
class _Session:
    key: str
    session_id: str | None
    last_ts: float
    items: deque = field(default_factory=deque)


class _Sessions:
    """Current session per user, LRU-bounded in users and in items per session."""

    def __init__(self, gap: float, max_items: int, max_users: int) -> None:
        self.gap = gap
        self.max_items = max_items
        self.max_users = max_users
        self._users: OrderedDict[str, _Session] = OrderedDict()
        self._started = 0  # sessions started, for unique keys of derived sessions

    def observe(self, user: str, ts: float, session_id: str | None, item: str) -> tuple[_Session, bool]:
        """Append ``item`` to the user's current session (a new one if it ended)."""
        current = self._users.pop(user, None)
        new = (
            current is None
            or (session_id is not None and session_id != current.session_id)
            or (session_id is None and ts - current.last_ts > self.gap)
        )
        if new:
            self._started += 1
            key = f"{user}#{session_id}" if session_id is not None else f"{user}@{self._started}"
            current = _Session(key, session_id, ts, deque(maxlen=self.max_items))
        current.last_ts = ts
        current.items.append(item)
        self._users[user] = current
        if len(self._users) > self.max_users:
            self._users.popitem(last=False)
        return current, new

    def get(self, user: str) -> _Session | None:
        return self._users.get(user)


def _item_event(event: Mapping) -> tuple[str, str, float, str | None] | None:
    item = event.get("item_id")
    if item is None:
        return None
    return event["user_id"], item, event_ts(event), event.get("session_id")


def _top_k(scores: Mapping[str, float], k: int) -> list[str]:
    """The k best ids by score, ties broken by id so results are deterministic."""
    best = heapq.nsmallest(k, scores.items(), key=lambda pair: (-pair[1], pair[0]))
    return [item for item, score in best if score > 0]


class DecayedPopularity:
    """POP: item counts decayed by ``half_life`` seconds of event time (forward decay).

    Forward decay adds 2**((t - t_ref) / half_life) instead of shrinking all counts,
    so the ranking only changes for the item just seen and a small top list stays exact.
    The best half-life depends on the site: minutes for trending shop clicks, days for
    ratings; one hour is the default.
    """

    def __init__(self, half_life: float = 3600.0, top_size: int = 100, max_items: int = 1_000_000) -> None:
        if half_life <= 0:
            raise ValueError(f"DecayedPopularity: half_life must be > 0 seconds, got {half_life!r}")
        self.half_life = half_life
        self.top_size = top_size
        self.max_items = max_items
        self._scores: dict[str, float] = {}
        self._ref_ts: float | None = None
        self._top: list[str] = []

    def learn(self, event: Mapping) -> None:
        parsed = _item_event(event)
        if parsed is None:
            return
        _, item, ts, _ = parsed
        if self._ref_ts is None:
            self._ref_ts = ts
        exponent = (ts - self._ref_ts) / self.half_life
        if exponent > 500:  # rescale before 2**exponent nears float overflow
            factor = 2.0**-exponent
            self._scores = {i: s * factor for i, s in self._scores.items() if s * factor > 0}
            self._top = [i for i in self._top if i in self._scores]
            self._ref_ts, exponent = ts, 0.0
        scores = self._scores
        scores[item] = scores.get(item, 0.0) + 2.0**exponent
        self._update_top(item)
        if len(scores) > self.max_items:
            keep = heapq.nlargest(self.max_items // 2, scores.items(), key=lambda pair: pair[1])
            self._scores = dict(keep)
            self._top = [i for i in self._top if i in self._scores]

    def recommend(self, user_id: str, k: int) -> list[str]:
        if k <= self.top_size:
            return self._top[:k]
        return _top_k(self._scores, k)

    def _update_top(self, item: str) -> None:
        top, scores = self._top, self._scores
        if item not in top:
            if len(top) >= self.top_size and (-scores[item], item) > (-scores[top[-1]], top[-1]):
                return
            top.append(item)
        top.sort(key=lambda i: (-scores[i], i))
        del top[self.top_size :]


class SequentialRules:
    """SR: rules i -> j for j after i in a session within ``steps`` positions.

    A rule gains ``weighting(distance)`` (session-rec default "div": 1/distance);
    ``recommend`` ranks the rules of the user's last item, at most ``pruning`` of
    them (session-rec keeps the 20 best rules per item). Per-item rule lists are
    cut to their best half when they pass ``max_rules_per_item``.
    """

    def __init__(
        self,
        steps: int = 10,
        weighting: str = "div",
        pruning: int = 20,
        session_gap: float = SESSION_GAP_SECONDS,
        max_rules_per_item: int = 400,
        max_users: int = 1_000_000,
    ) -> None:
        self.steps = steps
        self.weighting = weighting
        self.pruning = pruning
        self.session_gap = session_gap
        self.max_rules_per_item = max_rules_per_item
        self.max_users = max_users
        _check_weighting(weighting, "SequentialRules: weighting")
        self._sessions = _Sessions(session_gap, steps + 1, max_users)  # + the new item
        self._rules: dict[str, dict[str, float]] = {}

    def learn(self, event: Mapping) -> None:
        parsed = _item_event(event)
        if parsed is None:
            return
        user, item, ts, session_id = parsed
        session, new = self._sessions.observe(user, ts, session_id, item)
        if new:
            return
        history = list(session.items)[:-1]  # the last `steps` items before this one
        for distance, prev in enumerate(reversed(history), start=1):
            rules = self._rules.setdefault(prev, {})
            rules[item] = rules.get(item, 0.0) + _distance_weight(self.weighting, distance)
            if len(rules) > self.max_rules_per_item:
                keep = heapq.nlargest(self.max_rules_per_item // 2, rules.items(), key=lambda p: p[1])
                self._rules[prev] = dict(keep)

    def recommend(self, user_id: str, k: int) -> list[str]:
        session = self._sessions.get(user_id)
        if session is None or not session.items:
            return []
        rules = self._rules.get(session.items[-1])
        if not rules:
            return []
        return _top_k(rules, min(k, self.pruning) if self.pruning else k)


class VSKNN:
    """V-SKNN: session kNN with position-weighted dot-product similarity.

    The current session is a vector whose i-th of n items weighs ``weighting(i, n)``
    ("div" = i/n, linear decay); a past session is binary, so similarity is the sum of
    the weights of shared items over the number of distinct current items. Of the
    sessions sharing an item with the current one, the ``sample_size`` most recent are
    compared and the ``k`` most similar vote for their items with similarity times
    ``weighting_score(step)``, step = distance from the end of the current session to
    the latest item the neighbour shares. ``idf_weighting`` w > 0 multiplies a vote
    for item j by (1 + w * idf(j)), idf(j) = ln(#sessions / #events of j).
    Items of the current session are recommended too (session-rec ``remind=True``).
    """

    def __init__(
        self,
        k: int = 100,
        sample_size: int = 500,
        weighting: str = "div",
        weighting_score: str = "div",
        idf_weighting: float = 0.0,
        session_gap: float = SESSION_GAP_SECONDS,
        max_session_items: int = 100,
        max_sessions: int = 1_000_000,
        max_sessions_per_item: int = 5_000,
        max_users: int = 1_000_000,
    ) -> None:
        self.k = k
        self.sample_size = sample_size
        self.weighting = weighting
        self.weighting_score = weighting_score
        self.idf_weighting = idf_weighting
        self.session_gap = session_gap
        self.max_session_items = max_session_items
        self.max_sessions = max_sessions
        self.max_sessions_per_item = max_sessions_per_item
        self.max_users = max_users
        _check_weighting(weighting, "VSKNN: weighting")
        _check_weighting(weighting_score, "VSKNN: weighting_score")
        self._sessions = _Sessions(session_gap, max_session_items, max_users)
        self._session_items: dict[str, set[str]] = {}
        self._session_time: dict[str, float] = {}  # insertion order = least recently active first
        self._item_sessions: dict[str, dict[str, None]] = {}
        self._item_events: dict[str, int] = {}
        self._n_sessions = 0

    def learn(self, event: Mapping) -> None:
        parsed = _item_event(event)
        if parsed is None:
            return
        user, item, ts, session_id = parsed
        session, new = self._sessions.observe(user, ts, session_id, item)
        key = session.key
        if new and key not in self._session_items:
            self._n_sessions += 1
        items = self._session_items.setdefault(key, set())
        if item in items or len(items) < self.max_session_items:
            items.add(item)
            holders = self._item_sessions.setdefault(item, {})
            holders.pop(key, None)
            holders[key] = None
            if len(holders) > self.max_sessions_per_item:
                del holders[next(iter(holders))]
        self._item_events[item] = self._item_events.get(item, 0) + 1
        self._session_time.pop(key, None)
        self._session_time[key] = ts
        if len(self._session_time) > self.max_sessions:
            self._forget(next(iter(self._session_time)))

    def recommend(self, user_id: str, k: int) -> list[str]:
        session = self._sessions.get(user_id)
        if session is None or not session.items:
            return []
        current = list(session.items)
        n = len(current)
        positions = {item: _position_weight(self.weighting, i, n) for i, item in enumerate(current, start=1)}
        current_set = positions.keys()
        postings = [self._item_sessions[item] for item in positions if item in self._item_sessions]
        related = set().union(*postings)
        related.discard(session.key)
        recency = self._session_time.__getitem__
        if len(related) > self.sample_size:
            related = heapq.nlargest(self.sample_size, related, key=lambda other: (recency(other), other))
        norm = len(positions)
        neighbours = heapq.nlargest(
            self.k,
            (
                (other, math.fsum(positions[i] for i in current_set & self._session_items[other]) / norm)
                for other in related
            ),
            key=lambda pair: (pair[1], recency(pair[0]), pair[0]),
        )
        scores: dict[str, float] = {}
        get = scores.get
        for other, similarity in neighbours:
            items = self._session_items[other]
            decay = 0.0
            for step, item in enumerate(reversed(current), start=1):
                if item in items:
                    decay = _distance_weight(self.weighting_score, step)
                    break
            vote = similarity * decay
            if vote <= 0:
                continue
            if self.idf_weighting:
                for item in items:
                    scores[item] = get(item, 0.0) + vote * self._idf_factor(item)
            else:  # the hot loop: one dict update per neighbour item
                for item in items:
                    scores[item] = get(item, 0.0) + vote
        return _top_k(scores, k)

    def _idf_factor(self, item: str) -> float:
        idf = math.log(max(self._n_sessions, 1) / self._item_events.get(item, 1))
        return 1.0 + self.idf_weighting * idf

    def _forget(self, key: str) -> None:
        del self._session_time[key]
        for item in self._session_items.pop(key, ()):
            holders = self._item_sessions.get(item)
            if holders is not None:
                holders.pop(key, None)
                if not holders:
                    del self._item_sessions[item]
                    self._item_events.pop(item, None)


def default_baselines() -> dict[str, Callable[[], object]]:
    """Name -> factory of each baseline with its default parameters."""
    return {"POP": DecayedPopularity, "SR": SequentialRules, "V-SKNN": VSKNN}


if __name__ == "__main__":  # the runner lives in evaluation.baseline_runs
    from evaluation.baseline_runs import main

    sys.exit(main())
