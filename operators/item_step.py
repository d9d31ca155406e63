"""The item step: co-visitation learning, popularity and catalog data, keyed by item.

It answers each user's question "who follows you?" with a message keyed by that user's
rank shard (scatter-gather: exact at any worker count, no network round trip).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Iterable

from bytewax.operators import StatefulBatchLogic

from models.covisitation import ItemState
from streamrec.metrics import GUARDED, ITEM_KEYS
from operators.messages import (
    Availability, ItemAnswer, ItemFeatures, ItemQuery, PopularityReport, trend_shard,
)

__all__ = ["ItemStepConfig", "ItemLogic", "CatalogRecord", "FRESH_SEQ"]

FRESH_SEQ = 2  # a user id's first events: too new to vouch for anything


@dataclass(frozen=True)
class ItemStepConfig:
    covis_half_life: float = 30 * 24 * 3600.0
    popularity_half_life: float = 6 * 3600.0
    max_neighbours: int = 80
    answer_neighbours: int = 40
    rank_shards: int = 8
    trend_shards: int = 4
    report_growth: float = 1.25
    knn_sessions: int = 50  # recent sessions kept per item for session-kNN (0: off)
    # Interactions per item and minute of event time that brand-new user ids (their first
    # FRESH_SEQ events) may add to popularity; more is a script inventing ids.
    max_fresh_per_minute: int = 120
    knn_session_items: int = 10  # items kept per stored session
    knn_neighbours: int = 30  # most similar stored sessions that vote
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)


@dataclass(slots=True)
class CatalogRecord:
    """One catalog entry (already validated to have an ``item_id``)."""

    item_id: str
    record: dict


class ItemLogic(StatefulBatchLogic):
    def __init__(self, cfg: ItemStepConfig, resume: bytes | None) -> None:
        self.cfg = cfg
        # The builder does not get the key: a new state is named by its first message.
        self.state: ItemState | None = pickle.loads(resume) if resume is not None else None
        ITEM_KEYS.inc()

    def on_batch(self, values: list) -> tuple[Iterable, bool]:
        if self.state is None:
            first = values[0]
            self.state = ItemState(first.route if isinstance(first, ItemQuery) else first.item_id)
        state, cfg = self.state, self.cfg
        self.item_id = state.item_id
        out: list = []
        for msg in _event_time_order(values):
            if isinstance(msg, ItemQuery):
                ts = msg.ts
                interaction = msg.interaction
                if (interaction > 0.0 and msg.seq <= FRESH_SEQ
                        and state.fresh_flood(ts, cfg.max_fresh_per_minute)):
                    interaction = 0.0  # one of many brand-new ids at once: not popularity
                    GUARDED.add("fresh_id_flood")
                if interaction > 0.0 or msg.category:
                    state.learn_event(msg.category, interaction, ts, cfg.popularity_half_life)
                    if state.available and interaction > 0.0:
                        pop = state.report_due(ts, cfg.report_growth, cfg.popularity_half_life)
                        if pop is not None:
                            out.append(PopularityReport(trend_shard(self.item_id, cfg.trend_shards),
                                                        self.item_id, state.category, pop, ts,
                                                        state.vector))
                if msg.followers:
                    state.learn_followers(msg.followers, ts, cfg.covis_half_life, cfg.max_neighbours)
                    if msg.session_key and cfg.knn_sessions:
                        state.learn_session(msg.session_key, msg.followers, cfg.knn_sessions,
                                            cfg.knn_session_items)
                if msg.anchor_weight > 0.0:
                    knn = None
                    if msg.context and cfg.knn_sessions:
                        knn = state.session_votes(msg.context, msg.session_key,
                                                  cfg.knn_neighbours, cfg.answer_neighbours)
                    out.append(
                        ItemAnswer(
                            msg.reply_to, msg.user_id, msg.seq, self.item_id, msg.anchor_weight,
                            state.category, state.popularity_at(ts) if state.available else 0.0,
                            state.followers(cfg.answer_neighbours, ts), state.vector, knn,
                            msg.life,
                        )
                    )
            elif isinstance(msg, CatalogRecord):
                before = (state.category, state.vector, state.price, state.attributes)
                # New: its first catalog record, and no one has interacted with it yet.
                new = not state.in_catalog and state.popularity is None
                if state.apply_catalog(msg.record):
                    # Rare: tell every rank shard, so no list shows an unavailable item.
                    out.extend(
                        Availability(f"rank-{s}", self.item_id, state.available)
                        for s in range(cfg.rank_shards)
                    )
                if (state.category, state.vector, state.price, state.attributes) != before:
                    # Every rank shard learns the item's features now, before anyone
                    # interacts with it (bundled per batch for all shards: see
                    # dataflows.recommend).
                    out.append(ItemFeatures("", self.item_id, state.category, state.vector,
                                            state.price, state.attributes, new))
            else:  # a programming error, not bad input: fail loudly
                msg = f"item step got an unexpected {type(msg).__name__}"
                raise TypeError(msg)
        return out, StatefulBatchLogic.RETAIN

    def snapshot(self) -> bytes | None:
        if not self.cfg.snapshots:
            return None  # recovery is off: nobody reads it
        return pickle.dumps(self.state, protocol=pickle.HIGHEST_PROTOCOL)


def _event_time_order(values: list) -> list:
    """The batch by event time (stable; catalog records keep their place).

    A batch mixes users' events from different moments; answering a question only
    after learning from later events would let a list see the future.
    """
    last = float("-inf")
    ordered = True
    for msg in values:
        ts = getattr(msg, "ts", last)
        if ts < last:
            ordered = False
            break
        last = ts
    if ordered:
        return values
    keyed = []
    last = float("-inf")
    for msg in values:
        last = getattr(msg, "ts", last)
        keyed.append((last, msg))
    keyed.sort(key=lambda pair: pair[0])
    return [msg for _, msg in keyed]
