"""A rank shard's own state: its users' requests waiting for answers, the blend and the
factor model learned from its users' choices, and which erased lives to ignore.

The item-side models every shard reads (trending, categories, vectors, availability)
are the worker's, shared by its shards (``operators.worker_models``).

Snapshots written before this module existed name ``operators.rank_step.RankShardState``,
which that module re-exports; snapshots from before the worker's shared models carried
those models in every shard, and restore through :attr:`RankShardState.legacy`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from models.attribution import Attribution
from models.blend import ContextBlend, OnlineBlend
from models.content import VectorIndex
from models.experiments import DEFAULT, Experiment
from models.mf import ImplicitMF
from models.ranking import FEATURES, RankConfig, prior_weights
from operators.worker_models import WorkerModels, keyed_news

__all__ = ["RankStepConfig", "RankShardState", "of_erased_life"]



@dataclass(frozen=True)
class RankStepConfig:
    ranking: RankConfig = field(default_factory=RankConfig)
    trending_half_life: float = 6 * 3600.0
    conflate: bool = True
    model_version: str = "streamrec-0.1"
    max_pending: int = 20_000
    max_users: int = 200_000
    max_item_categories: int = 50_000
    max_feedback_users: int = 5_000
    max_item_vectors: int = 20_000
    content_search_window: int = 2_048  # nearest-item search: the items put most recently
    answer_vectors: int = 2_048  # a shard's own vectors: its users' most recent items
    max_deferred: int = 100_000  # trend entries waiting for a request with a later ts
    # Requests ranked together span at most this much event time; each sees trend news
    # up to the first of them (see operators.rank_order.rounds). A minute of lag is
    # nothing beside trending's hours of half-life, and a backlog read at 20x real time
    # still ranks whole batches together.
    batch_window: float = 60.0
    # ... unless fewer requests than this would be ranked together (a quiet stream read
    # fast, as a small shop's backlog or a replay of history): a ranking call has a fixed
    # cost of several requests, and on such a stream most calls ranked two or three.
    round_requests: int = 16
    new_item_window: float = 7 * 24 * 3600.0  # event time a catalog item counts as new
    snapshots: bool = True  # False when recovery is off (see dataflows.recommend)
    experiment: Experiment = DEFAULT  # variants and who gets which (models.experiments)
    attribution: bool = True  # remember lists and attribute impressions, clicks, sales
    attribution_window: float = 3600.0  # event time a list earns its clicks and sales

    def worker_models(self) -> WorkerModels:
        """Empty item-side models for one worker."""
        return WorkerModels(self.trending_half_life, self.max_item_vectors,
                            self.content_search_window, self.max_item_categories,
                            self.new_item_window)


# The slots of a shard's state before the worker's shared models (restored, then moved).
_LEGACY = ("trending", "item_category", "unavailable", "pending", "last_seq", "forgotten",
           "blend", "shown", "vectors", "mf", "ready", "deferred", "recent")


class RankShardState:
    __slots__ = ("pending", "last_seq", "forgotten", "blend", "shown", "mf", "ready", "recent",
                 "vectors", "attribution", "waiting", "legacy")

    def __init__(self, cfg: RankStepConfig) -> None:
        self.pending: dict[tuple[str, int], list] = {}  # (user, seq) -> [request, answers]
        self.last_seq: dict[str, int] = {}
        # Erased users: answers to their requests up to this seq are dropped on arrival.
        self.forgotten: dict[str, int] = {}
        self.blend = ContextBlend(prior_weights(cfg.ranking), cfg.ranking.learning_rate)
        # user -> (candidates best first, their feature rows, blend context, the list's
        # event time): what the blend learns from when the user's next item event shows
        # which one they chose (oldest first; see operators.rank_calls).
        self.shown: dict[str, tuple[list[str], np.ndarray, int, float]] = {}
        self.mf = ImplicitMF(max_users=cfg.max_users // 4, max_items=cfg.max_item_vectors)
        # Complete requests waiting for an earlier one of the same user (exact order).
        self.ready: dict[tuple[str, int], list] = {}
        # Items this shard's users acted on last (newest last): the list of last resort
        # when a fresh system knows nothing else yet (no trend news has arrived).
        self.recent: dict[str, None] = {}
        # Vectors the answers to this shard's requests carried (its users' recent items):
        # searched by content recall beside the worker's shared index.
        self.vectors = VectorIndex(cfg.answer_vectors, 0)
        # The lists this shard wrote and which its users saw (models.attribution).
        self.attribution = Attribution(cfg.attribution_window)
        # Complete requests ([request, answers]) not ranked yet: the worker ranks every
        # shard's together (operators.rank_step), right after the batch that completed them.
        self.waiting: list[list] = []
        self.legacy: WorkerModels | None = None  # models restored from an older snapshot

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__[:-1])

    def __setstate__(self, state):
        self.legacy = None
        # The layout that kept the item-side models in every shard starts with trending.
        if len(state) >= 11 and not isinstance(state[0], dict):
            self._restore_legacy(dict(zip(_LEGACY, state)))
            return
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)
        if len(state) < self.__slots__.index("vectors") + 1:  # before the shard's own vectors
            self.vectors = VectorIndex(RankStepConfig.answer_vectors, 0)
        if len(state) < self.__slots__.index("attribution") + 1:  # before attribution
            self.attribution = Attribution(RankStepConfig.attribution_window)
        if len(state) < self.__slots__.index("waiting") + 1:  # ranked within on_batch then
            self.waiting = []

    def _restore_legacy(self, old: dict) -> None:
        for s in self.__slots__[:-1]:
            setattr(self, s, old.get(s))
        if self.recent is None:
            self.recent = {}
        self.vectors = VectorIndex(RankStepConfig.answer_vectors, 0)
        self.attribution = Attribution(RankStepConfig.attribution_window)
        self.waiting = []
        models = WorkerModels.__new__(WorkerModels)
        models.trending = old["trending"]
        models.item_category = old["item_category"]
        models.unavailable = old["unavailable"]
        models.vectors = old["vectors"]
        models.deferred = keyed_news(old.get("deferred") or [])
        models.last_news = {}
        models.version = 0
        models.max_item_categories = 50_000
        models._fill_defaults()
        models._pickled = None
        self.legacy = models
        blend = self.blend
        if isinstance(blend, OnlineBlend):  # from before one blend per session context
            if len(blend.weights) == len(FEATURES) - 1:  # and before the `knn` feature
                at = FEATURES.index("knn")
                for name in ("prior", "raw", "weights"):
                    setattr(blend, name, np.insert(getattr(blend, name), at, 0.0))
            self.blend = ContextBlend.from_single(blend)
            self.shown = {}  # feedback rows without their context


def of_erased_life(forgotten, seq: int, life: float | None) -> bool:
    """Is this message from a life of the user that was erased?

    Lives are told apart by the profile's first event time, carried by every request and
    answer: a new life starts its seq again at 1 (and with conflation its first request
    may carry seq 5), while answers of the old life can still arrive after the erasure,
    even after the new life's first answers. Seq alone (older snapshots, messages without
    a life) cannot tell them apart; it is the fallback.
    """
    if forgotten is None:
        return False
    old_seq, old_life = forgotten if isinstance(forgotten, tuple) else (forgotten, None)
    if life is not None and old_life is not None:
        return life == old_life
    return seq != 1 and old_seq >= seq
