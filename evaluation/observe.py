"""What a lock-step replay needs to know of the steps, observed from outside them.

The production steps know nothing of replays. A replay wraps each step's logic
(:func:`observer`, passed to ``dataflows.recommend.wire``) and watches what goes in and
comes out:

- **news in flight**: model updates that get no answer (update-only item questions,
  segment hits, popularity reports, trend broadcasts, availability, catalog feature and
  rule changes, impressions and other feedback for attribution), counted up
  when a step sends them and down when the step they go to takes them. The lock-step
  source reads the next event only when this is back to zero, so every worker count
  ranks with the same view of shared models;
- **unranked events**: an event that leaves the user step without a rank request (a
  duplicate, a consent or erasure event, a user without consent, a burst over the
  guard), or whose request the rank step answered with a later event's list (conflation:
  one list per user and ranking call), gets an :class:`Unranked` note to the sink, so
  the replay knows it is done without waiting for a list.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Iterable

from bytewax.operators import StatefulBatchLogic

from operators.item_step import CatalogRecord
from operators.messages import (
    BUNDLED_STEPS, Availability, FeaturesBundle, Feedback, ForgetUser, ItemFeatures, ItemQuery,
    PopularityReport, RankRequest, RecUpdate, RulesUpdate, SegmentHit, TrendDelta,
)
from operators.rank_state import of_erased_life

__all__ = ["Unranked", "is_news", "observer"]


@dataclass(slots=True)
class Unranked:
    """To the sink: this event will get no list."""

    route: str  # user id
    event_id: str


def is_news(msg) -> bool:
    """A message that updates a shared model and gets no answer."""
    return ((isinstance(msg, ItemQuery) and msg.anchor_weight <= 0.0)
            or isinstance(msg, (SegmentHit, Feedback)))


def _user_news(values: list, out: list) -> tuple[int, list]:
    asked = {m.event_id for m in out if isinstance(m, RankRequest)}
    notes = [Unranked(event.user_id, event.event_id) for event, _ in values
             if event.event_id not in asked]
    return sum(1 for m in out if is_news(m)), notes


def _item_news(rank_shards: int):
    def watch(values: list, out: list) -> tuple[int, list]:
        landed = sum(1 for m in values if isinstance(m, CatalogRecord)
                     or (isinstance(m, ItemQuery) and m.anchor_weight <= 0.0))
        sent = sum(1 for m in out if isinstance(m, (PopularityReport, Availability)))
        # A feature change reaches every rank shard (in bundles): one landing each.
        sent += rank_shards * sum(1 for m in out if isinstance(m, ItemFeatures))
        return sent - landed, []
    return watch


def _trend_news(values: list, out: list) -> tuple[int, list]:
    return len(out) - len(values), []


def _rank_news():
    # Requests taken and not answered yet, by user: a list answers its own request and,
    # with conflation, the user's earlier ones still waiting (one ranking call ranks a
    # user once, for the latest event); those get an Unranked note.
    # A request older than a list already written is stale: the rank step drops it; so
    # are the requests of an erased life still waiting.
    asked: dict[str, dict[int, tuple[str, float | None]]] = {}  # user -> seq -> (event, life)
    answered: dict[str, int] = {}  # user -> seq of the latest list written

    def watch(values: list, out: list) -> tuple[int, list]:
        landed = sum(1 for m in values if isinstance(
            m, (TrendDelta, Availability, ItemFeatures, RulesUpdate, Feedback)))
        landed += sum(len(m.features) for m in values if isinstance(m, FeaturesBundle))
        notes = []
        for m in values:
            if isinstance(m, RankRequest):
                if m.seq < answered.get(m.user_id, 0):
                    notes.append(Unranked(m.user_id, m.event_id))
                else:
                    asked.setdefault(m.user_id, {})[m.seq] = (m.event_id, m.life)
            elif isinstance(m, ForgetUser):
                answered.pop(m.user_id, None)  # a new life counts from 1 again
                waiting = asked.get(m.user_id, {})
                for seq, (event_id, life) in list(waiting.items()):
                    if of_erased_life((m.seq, m.life), seq, life):
                        del waiting[seq]
                        notes.append(Unranked(m.user_id, event_id))
        for m in out:
            if isinstance(m, RecUpdate):
                answered[m.user_id] = max(answered.get(m.user_id, 0), m.seq)
                waiting = asked.get(m.user_id)
                if not waiting:
                    continue
                for seq in [s for s in waiting if s <= m.seq]:
                    event_id, _ = waiting.pop(seq)
                    if seq < m.seq:
                        notes.append(Unranked(m.user_id, event_id))
                if not waiting:
                    del asked[m.user_id]
        return -landed, notes
    return watch


def _control_news(values: list, out: list) -> tuple[int, list]:
    return sum(1 for m in out if isinstance(m, RulesUpdate)), []


_WATCH = {"user": _user_news, "trend": _trend_news, "controls": _control_news}


class _Observed(StatefulBatchLogic):
    """A step's logic, its batches watched by ``watch``."""

    def __init__(self, inner: StatefulBatchLogic, watch, on_news: Callable[[int], None],
                 bundled: bool = False) -> None:
        self.inner = inner
        self.watch = watch
        self.on_news = on_news
        self.bundled = bundled

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        out, complete = self.inner.on_batch(values)
        out = list(out)
        if self.bundled:  # the step takes its messages in lists (dataflows.recommend)
            values = [m for bundle in values for m in bundle]
        news, notes = self.watch(values, out)
        if news:
            self.on_news(news)
        return (out + notes if notes else out), complete

    def _watched(self, result):
        out, complete = result
        out = list(out)
        news, notes = self.watch([], out)
        if news:
            self.on_news(news)
        return (out + notes if notes else out), complete

    def on_notify(self):
        return self._watched(self.inner.on_notify())

    def on_eof(self):
        return self._watched(self.inner.on_eof())

    def notify_at(self):
        return self.inner.notify_at()

    def snapshot(self):
        return self.inner.snapshot()


def observer(on_news: Callable[[int], None],
             rank_shards: int) -> Callable[[str, StatefulBatchLogic], StatefulBatchLogic]:
    """A ``wire(observe=...)`` hook that reports news in flight to ``on_news`` and adds
    :class:`Unranked` notes for events without a list."""

    watches = {**_WATCH, "item": _item_news(rank_shards), "rank": _rank_news()}

    def observe(step: str, logic: StatefulBatchLogic) -> StatefulBatchLogic:
        watch = watches.get(step)
        return logic if watch is None else _Observed(logic, watch, on_news,
                                                     bundled=step in BUNDLED_STEPS)

    return observe
