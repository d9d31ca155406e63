"""Next-item accuracy under the replay protocol of docs/evaluation.md, computed as a stream.

For every event e with an ``item_id`` whose user has an earlier event and with
``ts >= test_start``, the target is e's item and the prediction is the list
emitted after that user's previous event (none emitted = a miss).

Beside all targets, HR@K and MRR@K are also reported on *new-item* targets (keys
``HR@K_new``, ``MRR@K_new``, count ``scored_new``): targets the user has not interacted
with earlier in the same session. A session is the event's ``session_id`` when it has
one, else it ends after ``session_gap`` seconds without an event of the user (the
worker's rule, ``STREAMREC_SESSION_GAP``). Re-finding an item is common in shops and
easy to predict; the new-item numbers show how well a strategy finds what the user has
not seen yet.

>>> scorer = NextItemScorer(k_values=(1, 2), test_start=0.0)
>>> scorer.on_event({"event_id": "a", "ts": 1.0, "user_id": "u", "item_id": "x"})
False
>>> scorer.predict("u", ["y", "z"])
>>> scorer.on_event({"event_id": "b", "ts": 2.0, "user_id": "u", "item_id": "z"})
True
>>> r = scorer.result()
>>> r["HR@1"], r["HR@2"], r["MRR@2"], r["scored"]
(0.0, 1.0, 0.5, 1)
>>> r["HR@2_new"], r["scored_new"]  # z is new in u's session
(1.0, 1)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime

import orjson

__all__ = ["NextItemScorer", "SESSION_GAP_SECONDS", "event_ts", "recs_by_trigger_from_records",
           "score_stream"]

#: The worker's default ``session_gap`` (``streamrec.settings.Settings``).
SESSION_GAP_SECONDS = 1800.0


def event_ts(event: Mapping) -> float:
    """The event time in unix seconds (the contract allows a number or ISO-8601 with offset)."""
    ts = event["ts"]
    if isinstance(ts, str):
        return datetime.fromisoformat(ts).timestamp()
    return float(ts)


class _SessionItems:
    """The items a user has interacted with in their current session."""

    __slots__ = ("session_id", "last_ts", "items")

    def __init__(self, session_id: str | None, ts: float) -> None:
        self.session_id = session_id
        self.last_ts = ts
        self.items: set[str] = set()


class NextItemScorer:
    """Streaming HR@K, MRR@K, NDCG@K and coverage@max(K) for next-item prediction.

    Call ``on_event`` for every event in time order, then ``predict`` with the list
    recommended after that event. ``catalog_size`` defaults to the number of distinct
    item ids seen by ``on_event``. ``session_gap`` (seconds) splits the sessions of
    events without a ``session_id`` for the new-item numbers.
    """

    def __init__(
        self,
        k_values: Sequence[int] = (10, 20),
        test_start: float = -math.inf,
        catalog_size: int | None = None,
        session_gap: float = SESSION_GAP_SECONDS,
    ) -> None:
        if not k_values or min(k_values) < 1:
            raise ValueError(f"NextItemScorer: k_values must be positive integers, got {k_values!r}")
        if not session_gap > 0:
            raise ValueError(f"NextItemScorer: session_gap must be > 0 seconds, got {session_gap!r}")
        self.k_values = tuple(sorted(set(k_values)))
        self.test_start = test_start
        self.catalog_size = catalog_size
        self.session_gap = session_gap
        self._max_k = self.k_values[-1]
        # user -> list predicted after the user's latest event (None: nothing emitted yet)
        self._pending: dict[str, list[str] | None] = {}
        self._items: set[str] = set()
        self._covered: set[str] = set()
        self._scored = 0
        self._hits = dict.fromkeys(self.k_values, 0)
        self._reciprocal = dict.fromkeys(self.k_values, 0.0)
        self._gain = dict.fromkeys(self.k_values, 0.0)
        self._sessions: dict[str, _SessionItems] = {}
        self._scored_new = 0
        self._hits_new = dict.fromkeys(self.k_values, 0)
        self._reciprocal_new = dict.fromkeys(self.k_values, 0.0)

    def on_event(self, event: Mapping) -> bool:
        """Score ``event`` against its user's pending prediction; return True if scored."""
        user = event["user_id"]
        item = event.get("item_id")
        ts = event_ts(event)
        session = self._session(user, ts, event.get("session_id"))
        scored = False
        if item is not None:
            self._items.add(item)
            if user in self._pending and ts >= self.test_start:
                self._score(item, self._pending[user], new=item not in session.items)
                scored = True
            session.items.add(item)
        # The pending list belonged to the previous event; this event has none yet.
        self._pending[user] = None
        return scored

    def predict(self, user_id: str, items: Iterable) -> None:
        """Record the list recommended to ``user_id`` after their latest event."""
        top: list[str] = []
        for entry in items:
            top.append(entry if isinstance(entry, str) else entry["item_id"])
            if len(top) == self._max_k:
                break
        self._pending[user_id] = top

    def result(self) -> dict:
        """Metrics so far: HR@K, MRR@K, NDCG@K per K, coverage@max(K), scored."""
        n = self._scored
        out: dict = {}
        for k in self.k_values:
            out[f"HR@{k}"] = self._hits[k] / n if n else 0.0
            out[f"MRR@{k}"] = self._reciprocal[k] / n if n else 0.0
            out[f"NDCG@{k}"] = self._gain[k] / n if n else 0.0
        catalog = self.catalog_size if self.catalog_size is not None else len(self._items)
        out[f"coverage@{self._max_k}"] = len(self._covered) / catalog if catalog else 0.0
        out["scored"] = n
        n_new = self._scored_new
        for k in self.k_values:
            out[f"HR@{k}_new"] = self._hits_new[k] / n_new if n_new else 0.0
            out[f"MRR@{k}_new"] = self._reciprocal_new[k] / n_new if n_new else 0.0
        out["scored_new"] = n_new
        return out

    def _session(self, user: str, ts: float, session_id: str | None) -> _SessionItems:
        """The user's current session after an event at ``ts`` (the worker's rule: a new
        ``session_id``, or without one a gap longer than ``session_gap``)."""
        current = self._sessions.get(user)
        if session_id is not None:
            new = current is None or session_id != current.session_id
        else:
            new = current is None or ts - current.last_ts > self.session_gap
        if new:
            current = self._sessions[user] = _SessionItems(session_id, ts)
        else:
            current.last_ts = max(current.last_ts, ts)
        return current

    def _score(self, target: str, prediction: list[str] | None, *, new: bool) -> None:
        self._scored += 1
        self._scored_new += new
        if not prediction:
            return
        self._covered.update(prediction)
        try:
            rank = prediction.index(target) + 1
        except ValueError:
            return
        for k in self.k_values:
            if rank <= k:
                self._hits[k] += 1
                self._reciprocal[k] += 1.0 / rank
                self._gain[k] += 1.0 / math.log2(rank + 1)
                if new:
                    self._hits_new[k] += 1
                    self._reciprocal_new[k] += 1.0 / rank


def score_stream(
    events: Iterable[Mapping],
    recs_by_trigger: Mapping[str, Sequence],
    test_start: float,
    catalog_size: int | None = None,
    k_values: Sequence[int] = (10, 20),
    session_gap: float = SESSION_GAP_SECONDS,
) -> dict:
    """Score recommendations recorded by trigger event id (the dataflow output path).

    The prediction for event e is the list with ``trigger_event_id`` equal to the
    previous event of e's user; the numbers equal ``NextItemScorer`` fed the same lists.
    """
    scorer = NextItemScorer(k_values=k_values, test_start=test_start, catalog_size=catalog_size,
                            session_gap=session_gap)
    for event in events:
        scorer.on_event(event)
        recs = recs_by_trigger.get(event["event_id"])
        if recs is not None:
            scorer.predict(event["user_id"], recs)
    return scorer.result()


def recs_by_trigger_from_records(records: Iterable[Mapping]) -> dict[str, list[str]]:
    """Index recommendation-update records (stream entries / output JSONL lines) by trigger.

    ``items`` may be a list or its JSON text, of ids or of ``{"item_id", "score"}``;
    a later record for the same trigger (a replay) replaces the earlier one.
    """
    out: dict[str, list[str]] = {}
    for record in records:
        items = record["items"]
        if isinstance(items, (str, bytes)):
            items = orjson.loads(items)
        out[record["trigger_event_id"]] = [e if isinstance(e, str) else e["item_id"] for e in items]
    return out
