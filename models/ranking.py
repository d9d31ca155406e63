"""Hybrid ranking: candidates from every signal, one learned blend, rules, diversity, top-K.

Signals (each a distribution over candidates, so weights are comparable):
- ``covis``: followers (and, weaker, predecessors) of the user's recent items,
  the most recent anchor weighted most (sequential rules / co-visitation);
- ``session``: the items of the current session, the latest 1, earlier ones decayed
  (re-finding);
- ``category``: trending items of the user's categories (session taste, then long-term,
  then onboarding preferences);
- ``segment``: what users of the same segment (age band, gender) engage with;
- ``trending``: decayed popularity overall, the cold-start fallback;
- ``content``: cosine between the candidate's catalog features (category, tags,
  attributes; see ``models.content``) and the user's recency-weighted content vector,
  over the candidates above plus the nearest items of the shard's vector index;
- ``knn``: session neighbourhood (V-SKNN style, ``models.sessionknn``): items of the
  recent sessions most similar to the current one, asked of the user's recent items;
- ``mf``: online matrix factorisation (river FunkMF) affinity, for users with long
  histories only, read for the candidate list only;
- ``seen``: 1 for items the user has already interacted with (its learned weight is the
  adaptive repeat policy), and two cold-start interactions.

>>> from models.trending import Trending
>>> t = Trending(3600.0); t.observe("p9", "hats", 3.0, 0.0)
>>> req = RankInput(ts=0.0, anchors=[(1.0, [("p2", 0.7), ("p3", 0.3)])])
>>> [i for i, _ in rank(req, t, {}, frozenset(), RankConfig(k=3)).items]
['p2', 'p3', 'p9']
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from models.blend import OnlineBlend
from models.content import VectorIndex
from models.mf import ImplicitMF
from models.trending import Trending

__all__ = ["RankConfig", "RankInput", "RankResult", "rank", "FEATURES", "prior_weights",
           "SeenFilter"]

FEATURES = ("covis", "session", "category", "segment", "trending", "content", "knn", "seen",
            "covis_cold", "trending_cold", "mf")
_F = {name: i for i, name in enumerate(FEATURES)}
SIGNALS = FEATURES[:7]
_NS = len(SIGNALS)


@dataclass(frozen=True)
class RankConfig:
    k: int = 20
    w_covis: float = 1.0
    w_session: float = 0.3
    w_category: float = 0.25
    w_segment: float = 0.25
    w_trending: float = 0.05
    w_content: float = 0.1
    w_mf: float = 0.05
    w_knn: float = 0.5
    mf_min_history: int = 10
    w_seen: float = 0.0
    content_candidates: int = 30
    session_decay: float = 0.7
    candidates_per_category: int = 30
    repeat_policy: str = "allow"  # allow (the learned `seen` weight decides) | demote | exclude
    repeat_factor: float = 0.6
    # Score factor per recent list in which the user saw an item and did not click it
    # (impressions, models.attribution): a list that keeps failing changes. 1: off.
    fatigue: float = 0.85
    diversity: float = 0.0
    max_per_category: int = 0
    learn_blend: bool = True
    learning_rate: float = 0.05
    feedback_candidates: int = 30
    feedback_negatives: int = 30
    new_item_slots: int = 1  # last slots a list may give to new catalog items (models.placement)


def prior_weights(cfg: RankConfig) -> np.ndarray:
    w = np.zeros(len(FEATURES))
    w[_F["covis"]] = cfg.w_covis
    w[_F["session"]] = cfg.w_session
    w[_F["category"]] = cfg.w_category
    w[_F["segment"]] = cfg.w_segment
    w[_F["trending"]] = cfg.w_trending
    w[_F["content"]] = cfg.w_content
    w[_F["mf"]] = cfg.w_mf
    w[_F["knn"]] = cfg.w_knn
    w[_F["seen"]] = cfg.w_seen
    return w


class SeenFilter:
    """A 4096-bit Bloom filter of items a user interacted with (512 bytes, 3 hashes).

    Bounded memory for "has this user seen it?" over long histories; false positives
    (an unseen item taken as seen) stay under 1% up to ~250 items.

    >>> f = SeenFilter.empty(); f = SeenFilter.add(f, "p1")
    >>> SeenFilter.contains(f, "p1"), SeenFilter.contains(f, "p2")
    (True, False)
    """

    BITS = 4096

    @staticmethod
    def empty() -> bytearray:
        return bytearray(SeenFilter.BITS // 8)

    _cache: dict[str, tuple[int, int, int]] = {}  # item -> bit slots; a pure-function cache

    @staticmethod
    def _slots(item: str) -> tuple[int, int, int]:
        slots = SeenFilter._cache.get(item)
        if slots is None:
            raw = item.encode()
            h = zlib.crc32(raw)
            slots = (h & 0xFFF, (h >> 12) & 0xFFF, zlib.adler32(raw) & 0xFFF)
            if len(SeenFilter._cache) > 500_000:
                SeenFilter._cache.clear()
            SeenFilter._cache[item] = slots
        return slots

    @staticmethod
    def add(bits: bytearray, item: str) -> bytearray:
        for s in SeenFilter._slots(item):
            bits[s >> 3] |= 1 << (s & 7)
        return bits

    @staticmethod
    def contains(bits: bytes | bytearray | None, item: str) -> bool:
        if not bits:
            return False
        a, b, c = SeenFilter._slots(item)
        return bool(bits[a >> 3] & (1 << (a & 7)) and bits[b >> 3] & (1 << (b & 7))
                    and bits[c >> 3] & (1 << (c & 7)))


@dataclass
class RankInput:
    ts: float
    anchors: list[tuple[float, list[tuple[str, float]]]] = field(default_factory=list)
    knn: list[tuple[float, list[tuple[str, float]]]] = field(default_factory=list)  # per anchor
    categories: list[tuple[str, float]] = field(default_factory=list)
    session_categories: list[tuple[str, float]] = field(default_factory=list)
    preferences: list[str] | None = None
    segment: str | None = None
    seen: list[str] = field(default_factory=list)  # this session's items, oldest first
    excluded: list[str] = field(default_factory=list)
    seen_filter: bytes | None = None  # the user's whole history
    cold: bool = False
    content: np.ndarray | None = None  # the user's content vector
    user_id: str | None = None
    history: int = 0  # item events the user has made
    anchor_items: list[str] | None = None  # the item behind each of ``anchors`` (reasons)
    # The anchors' own content vectors (from their answers): their cosine when the shared
    # vector index has not got them yet (an item seen for the first time just now).
    anchor_vectors: dict[str, bytes] | None = None
    page_category: str | None = None  # the list shows this category only (context.page_category)
    page: str | None = None  # context.page, for pins that name pages
    # Items the user saw in recent lists and did not click: item -> lists it was seen in.
    fatigue: dict[str, int] | None = None


@dataclass
class RankResult:
    items: list[tuple[str, float]]
    strategy: str
    candidates: list[str]  # best first, for feedback
    features: np.ndarray  # rows of ``candidates``
    reasons: list[dict] | None = None  # per listed item: why it is there (batch ranking)


def _normalised(pairs: list[tuple[str, float]]) -> list[tuple[str, float]]:
    total = sum(w for _, w in pairs)
    if total <= 0.0:
        return []
    return [(i, w / total) for i, w in pairs]


def _category_mix(inp: RankInput) -> list[tuple[str, float]]:
    mix: dict[str, float] = {}
    for cats, weight in ((inp.session_categories, 0.6), (inp.categories, 0.4)):
        for c, w in _normalised(cats[:4]):
            mix[c] = mix.get(c, 0.0) + weight * w
    if not mix and inp.preferences:
        for c in inp.preferences[:4]:
            mix[c] = 1.0 / min(len(inp.preferences), 4)
    return sorted(mix.items(), key=lambda kv: -kv[1])[:4]


def _signals(inp: RankInput, trending: Trending, cfg: RankConfig,
             vectors: VectorIndex | None) -> tuple[list[str], np.ndarray]:
    """Candidates (first come, first listed) and their signal values, one row each:
    [covis, session, category, segment, trending, content, knn].

    Built as three flat lists summed by ``np.bincount``: a candidate costs a dict
    look-up, not a row object (the per-candidate Python work is what ranking time is).
    """
    index: dict[str, int] = {}
    slot = index.setdefault  # slot(item, len(index)): a new item takes the next row
    rows: list[int] = []
    cols: list[int] = []
    vals: list[float] = []

    def add(col: int, pairs: list[tuple[str, float]], scale: float) -> None:
        if pairs:
            rows.extend([slot(item, len(index)) for item, _ in pairs])
            cols.extend([col] * len(pairs))
            vals.extend([scale * p for _, p in pairs])

    def add_share(col: int, pairs: list[tuple[str, float]], scale: float) -> None:
        total = sum(p for _, p in pairs)  # a distribution, as _normalised
        if total > 0.0:
            rows.extend([slot(item, len(index)) for item, _ in pairs])
            cols.extend([col] * len(pairs))
            vals.extend([scale * (p / total) for _, p in pairs])

    anchor_total = sum(a for a, _ in inp.anchors) or 1.0
    for anchor_weight, followers in inp.anchors:
        add(0, followers, anchor_weight / anchor_total)
    knn_total = sum(a for a, _ in inp.knn) or 1.0
    for anchor_weight, votes in inp.knn:
        add(6, votes, anchor_weight / knn_total)
    if inp.seen:
        # Not a distribution: the latest item scores 1 however long the session is, so
        # the learned penalty for already-seen items cannot bury a long session's items.
        decay = cfg.session_decay
        add(1, [(item, decay**i) for i, item in enumerate(reversed(inp.seen))], 1.0)
    ts = inp.ts
    for cat, share in _category_mix(inp):
        add_share(2, trending.top_in(cat, cfg.candidates_per_category, ts), share)
    if inp.segment:
        add_share(3, trending.top_segment(inp.segment, cfg.candidates_per_category, ts), 1.0)
    add_share(4, trending.top(cfg.candidates_per_category * 2, ts), 1.0)
    content = inp.content is not None and vectors is not None and len(vectors) > 0
    if content:
        for item, _ in vectors.nearest(inp.content, cfg.content_candidates):
            slot(item, len(index))
    n = len(index)
    flat = np.array(rows, dtype=np.intp) * _NS + np.array(cols, dtype=np.intp)
    # float64 even when every candidate came from content recall (no values: bincount
    # of nothing is an integer array, and the content shares would be cut to 0).
    signals = np.bincount(flat, weights=vals, minlength=n * _NS).astype(np.float64, copy=False)
    signals = signals.reshape(n, _NS)
    items = list(index)
    if content:
        sims = np.clip(vectors.cosine(inp.content, items), 0.0, None)
        total = float(sims.sum())
        if total > 0.0:
            signals[:, 5] = sims / total
    return items, signals


def _seen(inp: RankInput, items: list[str]) -> np.ndarray:
    """Whether the user already interacted with each item (this session or the filter)."""
    session, bits, contains = set(inp.seen), inp.seen_filter, SeenFilter.contains
    return np.fromiter((i in session or contains(bits, i) for i in items), dtype=bool,
                       count=len(items))


def rank(
    inp: RankInput,
    trending: Trending,
    item_category: Mapping[str, str],
    unavailable: frozenset[str] | set[str],
    cfg: RankConfig,
    blend: OnlineBlend | None = None,
    vectors: VectorIndex | None = None,
    mf: ImplicitMF | None = None,
) -> RankResult:
    """Score every candidate with the blend, apply the rules, diversify, keep the top K."""
    items, signals = _signals(inp, trending, cfg, vectors)
    if inp.excluded or unavailable:
        gone = set(inp.excluded)
        if unavailable:
            gone.update(unavailable.intersection(items))
        if gone:
            keep_rows = [i for i, item in enumerate(items) if item not in gone]
            items = [items[i] for i in keep_rows]
            signals = signals[keep_rows]
    seen = _seen(inp, items)
    if cfg.repeat_policy == "exclude" and seen.any():
        unseen = np.flatnonzero(~seen)
        items = [items[i] for i in unseen]
        signals = signals[unseen]
        seen = np.zeros(len(items), dtype=bool)
    if not items:
        return RankResult([], "empty", [], np.zeros((0, len(FEATURES))))
    X = np.zeros((len(items), len(FEATURES)))
    X[:, :_NS] = signals
    X[:, _F["seen"]] = seen
    if inp.cold:
        X[:, _F["covis_cold"]] = X[:, _F["covis"]]
        X[:, _F["trending_cold"]] = X[:, _F["trending"]]
    if mf is not None and inp.user_id is not None and inp.history >= cfg.mf_min_history:
        X[:, _F["mf"]] = np.clip(mf.scores(inp.user_id, items), 0.0, 1.0)
    weights = blend.weights if blend is not None else prior_weights(cfg)
    scores = X @ weights
    if cfg.repeat_policy == "demote":
        scores = np.where(X[:, _F["seen"]] > 0, scores * cfg.repeat_factor, scores)
    keep = _best_first(scores, max(cfg.k * 4, cfg.feedback_candidates))
    head = keep[: cfg.k * 3]  # diversity reorders the head; the tail never reaches the list
    top = _diversify(list(zip([items[i] for i in head], scores[head].tolist())), item_category,
                     cfg)
    contrib = (X[keep[: cfg.k]] * weights).sum(axis=0)[:_NS]
    strategy = SIGNALS[int(np.argmax(contrib))] if contrib.max() > 0 else "trending"
    fb = keep[: cfg.feedback_candidates]
    return RankResult(top, strategy, [items[i] for i in fb], X[fb].astype(np.float32))


def _best_first(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, highest first, ties in index order: the head
    of a stable descending sort, without sorting the whole candidate list."""
    neg = -scores
    if n < len(neg):
        bound = np.partition(neg, n - 1)[n - 1]
        head = np.flatnonzero(neg <= bound)
        return head[np.argsort(neg[head], kind="stable")[:n]]
    return np.argsort(neg, kind="stable")


def _diversify(ranked: list[tuple[str, float]], item_category: Mapping[str, str],
               cfg: RankConfig) -> list[tuple[str, float]]:
    """Greedy MMR-style selection: each pick from a category already in the list is damped
    by ``(1 - diversity)`` per earlier pick of it; optional hard cap per category."""
    k = cfg.k
    if cfg.diversity <= 0.0 and cfg.max_per_category <= 0:
        return [(i, round(s, 6)) for i, s in ranked[:k]]
    # Damping is multiplicative, so scores must be positive; a negative learned weight
    # (e.g. for already-seen items) can push some below zero: shift only then.
    ranked = ranked[: k * 3]  # diversity reorders the head; the tail never reaches the list
    low = min(0.0, min(s for _, s in ranked))
    items = [i for i, _ in ranked]
    scores = [sc - low + 1e-9 for _, sc in ranked]  # positive, same order
    cats = [item_category.get(i) for i in items]
    alive = [True] * len(items)
    picked: list[tuple[str, float]] = []
    shown: dict[str, int] = {}
    damp = 1.0 - cfg.diversity
    cap = cfg.max_per_category
    first = 0  # every item before it is picked (most picks take the first alive one)
    n_items = len(items)
    while len(picked) < k:
        while first < n_items and not alive[first]:
            first += 1
        best_i, best_adj = -1, -1.0
        for idx in range(first, n_items):
            sc = scores[idx]
            if sc <= best_adj:
                break  # sorted by raw score: nothing further can beat best_adj
            if not alive[idx]:
                continue
            cat = cats[idx]
            n = shown.get(cat, 0) if cat else 0
            if n and cap and n >= cap:
                continue
            adj = sc * damp**n if n else sc
            if adj > best_adj:
                best_i, best_adj = idx, adj
        if best_i < 0:
            break
        alive[best_i] = False
        cat = cats[best_i]
        if cat:
            shown[cat] = shown.get(cat, 0) + 1
        picked.append((items[best_i], round(best_adj + low, 6)))
    return picked
