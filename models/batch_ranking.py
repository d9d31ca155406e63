"""Ranking a whole batch of requests at once: one candidate table, array operations only.

Same lists as :func:`models.ranking.rank` called once per request (that function stays as
the readable reference, and the tests hold the two to the same answers), at a fraction
of the cost: candidates of every request are gathered into flat arrays, item ids become
dense integer slots of an :class:`ItemVocabulary`, and everything after that (the signal
table, cosines, seen tests, rules, blending, top-K, diversity, strategy) is numpy over
the whole batch. Python touches each request a few times and each *signal list* once,
never each candidate.

>>> from models.trending import Trending
>>> t = Trending(3600.0); t.observe("p9", "hats", 3.0, 0.0)
>>> reqs = [RankInput(ts=0.0, anchors=[(1.0, [("p2", 0.7), ("p3", 0.3)])]), RankInput(ts=0.0)]
>>> [[i for i, _ in r.items] for r in rank_batch(reqs, RankModels(t), RankConfig(k=3))]
[['p2', 'p3', 'p9'], ['p9']]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from models.content import VectorIndex
from models.content_recall import batch_cosines, nearest_names, per_row_locals
from models.candidate_marks import fatigue_factors, mark_seen_and_excluded
from models.diversity import diversify
from models.item_codes import ItemCodes
from models.mf import ImplicitMF
from models.placement import NewItems, place
from models.ranking import (
    FEATURES, SIGNALS, RankConfig, RankInput, RankResult, _category_mix, prior_weights,
)
from models.reasons import explain
from models.rule_columns import ItemFacts
from models.rule_apply import apply_item_rules, boost
from models.rules import RuleSet
from models.trending import Trending

__all__ = ["ItemCodes", "RankModels", "rank_batch"]

_F = {name: i for i, name in enumerate(FEATURES)}
_NS = len(SIGNALS)
_NF = len(FEATURES)
_SEEN, _MF = _F["seen"], _F["mf"]


@dataclass
class RankModels:
    """What a batch is ranked against: the shared item-side models, and the item codes."""

    trending: Trending
    item_category: Mapping[str, str] = field(default_factory=dict)
    unavailable: set[str] | frozenset[str] = frozenset()
    vectors: VectorIndex | None = None
    mf: ImplicitMF | None = None
    codes: ItemCodes = field(default_factory=ItemCodes)
    item_price: Mapping[str, float] = field(default_factory=dict)
    item_attributes: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    rules: RuleSet | None = None  # merchandising rules (models.rules)
    new_items: NewItems | None = None  # new catalog items (models.placement)
    # Changes whenever an item's known category, price or attributes change (None: they
    # may change any time): rules then cache the facts per item slot.
    facts_version: object | None = None
    # Vectors this shard's users' recent items brought with their answers: content recall
    # searches them too, and cosines fall back to them (the shared index holds only what
    # every worker is told of).
    local_vectors: VectorIndex | None = None
    # A batch of several rank shards' requests: per request, its shard's factor model and
    # answer vectors (None: ``mf`` and ``local_vectors`` serve every request).
    mf_of: Sequence[ImplicitMF | None] | None = None
    local_of: Sequence[VectorIndex | None] | None = None

    def facts(self) -> ItemFacts:
        return ItemFacts(self.item_category, self.item_price, self.item_attributes)


class _Table:
    """The flat candidate lists of one batch: ids, signal column, value, request."""

    __slots__ = ("ids", "vals", "cols", "reqs", "scales", "divs", "lens", "tags", "tag_names")

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.vals: list[float] = []
        self.cols: list[int] = []  # per block
        self.reqs: list[int] = []  # per block
        self.scales: list[float] = []  # per block
        self.divs: list[float] = []  # per block
        self.lens: list[int] = []  # per block
        self.tags: list[int] = []  # per block: what proposed it (an anchor item, a category)
        self.tag_names: list[str | None] = [None]  # tag 0: nothing to name

    def tag(self, name: str | None) -> int:
        if name is None:
            return 0
        self.tag_names.append(name)
        return len(self.tag_names) - 1

    def block(self, req: int, col: int, ids, vals, scale: float, div: float = 1.0,
              tag: int = 0) -> None:
        self.ids.extend(ids)
        self.vals.extend(vals)
        self.cols.append(col)
        self.reqs.append(req)
        self.scales.append(scale)
        self.divs.append(div)
        self.lens.append(len(ids))
        self.tags.append(tag)

    def pairs(self, req: int, col: int, pairs, scale: float, tag: int = 0) -> None:
        if pairs:
            ids, vals = zip(*pairs)
            self.block(req, col, ids, vals, scale, 1.0, tag)

    def share(self, req: int, col: int, head: tuple, scale: float, tag: int = 0) -> None:
        """A distribution block: ``head`` is ``(ids, values, total)`` (see :func:`_head`)."""
        ids, vals, total = head
        if total > 0.0:
            self.block(req, col, ids, vals, scale, total, tag)


def _head(pairs: list) -> tuple:
    """``(ids, values, total)`` of a trending head, unzipped once per batch."""
    if not pairs:
        return ((), (), 0.0)
    ids, vals = zip(*pairs)
    return ids, vals, sum(vals)  # summed as the reference's add_share


def _gather(inputs: Sequence[RankInput], models: RankModels, cfg: RankConfig,
            locals_: list) -> _Table:
    table = _Table()
    trending, vectors = models.trending, models.vectors
    cached: dict[tuple, tuple] = {}  # trending heads, read once per batch

    def top(kind: str, key: str | None, n: int, ts: float) -> tuple:
        got = cached.get((kind, key))
        if got is None:
            if kind == "c":
                got = trending.top_in(key, n, ts)
            elif kind == "s":
                got = trending.top_segment(key, n, ts)
            else:
                got = trending.top(n, ts)
            got = cached[(kind, key)] = _head(got)
        return got

    per_cat = cfg.candidates_per_category
    content = (vectors is not None and len(vectors) > 0) or any(x is not None for x in locals_)
    near_of: dict[int, list[str]] = {}
    if content:
        wanting = [r for r, inp in enumerate(inputs) if inp.content is not None]
        if wanting:
            users = np.stack([inputs[r].content for r in wanting])
            near_of = dict(zip(wanting, nearest_names(users, cfg.content_candidates, vectors,
                                                      [locals_[r] for r in wanting])))
    for r, inp in enumerate(inputs):
        anchor_total = sum(a for a, _ in inp.anchors) or 1.0
        named = inp.anchor_items or [None] * len(inp.anchors)
        for (weight, followers), anchor in zip(inp.anchors, named):
            table.pairs(r, 0, followers, weight / anchor_total, table.tag(anchor))
        knn_total = sum(a for a, _ in inp.knn) or 1.0
        for weight, votes in inp.knn:
            table.pairs(r, 6, votes, weight / knn_total)
        if inp.seen:
            seen = inp.seen[::-1]
            table.block(r, 1, seen, _powers(cfg.session_decay, len(seen)), 1.0)
        ts = inp.ts
        for cat, share in _category_mix(inp):
            table.share(r, 2, top("c", cat, per_cat, ts), share, table.tag(cat))
        if inp.segment:
            table.share(r, 3, top("s", inp.segment, per_cat, ts), 1.0)
        table.share(r, 4, top("t", None, per_cat * 2, ts), 1.0)
        near = near_of.get(r)
        if near:
            table.block(r, 5, near, [0.0] * len(near), 0.0)
    return table


_POWERS: dict[float, list[float]] = {}


def _powers(decay: float, n: int) -> list[float]:
    """``[decay**0, ..., decay**(n - 1)]``, computed once per decay (as the reference
    does, one ``**`` each)."""
    got = _POWERS.get(decay)
    if got is None or len(got) < n:
        got = _POWERS[decay] = [decay**i for i in range(max(n, 2 * len(got or ()), 64))]
    return got[:n]


def _empty() -> RankResult:
    return RankResult([], "empty", [], np.zeros((0, _NF)))


def rank_batch(inputs: Sequence[RankInput], models: RankModels, cfg: RankConfig,
               weights: np.ndarray | None = None,
               contexts: Sequence[int] | None = None) -> list[RankResult]:
    """Rank every request of ``inputs`` against the same models.

    ``weights`` is a ``(contexts, features)`` table of blend weights and ``contexts`` the
    row each request uses (default: the prior weights of ``cfg`` for all).
    """
    n_req = len(inputs)
    if n_req == 0:
        return []
    if weights is None:
        weights = prior_weights(cfg)[None, :]
        contexts = [0] * n_req
    ctx = np.asarray(contexts, dtype=np.intp)
    # Per request, the answer vectors of its shard it searches besides the shared index.
    locals_ = per_row_locals(models.local_of if models.local_of is not None
                             else models.local_vectors, n_req)
    table = _gather(inputs, models, cfg, locals_)
    if not table.ids:
        return [_empty() for _ in inputs]
    ts = max(inp.ts for inp in inputs)
    lens = np.asarray(table.lens, dtype=np.intp)
    entry_req = np.repeat(np.asarray(table.reqs, dtype=np.int64), lens)
    entry_col = np.repeat(np.asarray(table.cols, dtype=np.intp), lens)
    vals = np.asarray(table.vals, dtype=np.float64)
    divs = np.repeat(np.asarray(table.divs), lens)
    scales = np.repeat(np.asarray(table.scales), lens)
    vals = scales * (vals / divs)  # the reference's scale * p (or scale * (p / total))
    slots = models.codes.slots(table.ids, ts)

    # One row per (request, item), in order of first appearance within the request.
    keys = entry_req * models.codes.vocab.capacity + slots
    uniq, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    row_of = np.empty(len(uniq), dtype=np.intp)
    row_of[order] = np.arange(len(uniq))
    entry_row = row_of[inverse.ravel()]
    n_rows = len(uniq)
    row_req = entry_req[first[order]].astype(np.intp)
    row_slot = slots[first[order]]
    X = np.zeros((n_rows, _NF))
    X[:, :_NS] = np.bincount(entry_row * _NS + entry_col, weights=vals,
                             minlength=n_rows * _NS).reshape(n_rows, _NS)
    starts = np.searchsorted(row_req, np.arange(n_req + 1))
    ids = models.codes.vocab.ids
    row_items = list(map(ids.__getitem__, row_slot.tolist()))

    sims = batch_cosines(inputs, row_req, row_items, starts, models.vectors, locals_)
    if sims is not None:
        # Each request's cosines as shares of their sum (summed per request, as the
        # reference does).
        totals = np.zeros(n_req, dtype=np.float32)
        for r in np.flatnonzero(np.diff(starts)).tolist():
            totals[r] = sims[starts[r] : starts[r + 1]].sum()
        share = totals[row_req]
        ok = share > 0.0
        X[ok, 5] = sims[ok] / share[ok]

    keep = mark_seen_and_excluded(inputs, models, cfg, X, row_req, row_slot)
    # Merchandising rules: blocks and filters drop rows with the exclusions above; boosts
    # multiply the scores below (models.rules).
    facts = models.facts()
    cache = None
    if models.facts_version is not None:
        cache = models.codes.facts
        cache.sync(models.facts_version, models.codes.vocab.size)
    ruled, factors, boosted = apply_item_rules(
        models.rules, [inp.page_category for inp in inputs], facts, row_req, row_slot,
        row_items, models.codes.vocab.lookup, cache)
    # Dropped rows stay in the table (no copy of it): the selection leaves them out of
    # its order (their scores are never read).
    if ruled is not None:  # rules dropped some rows
        keep &= ruled
        valid = keep
    else:
        valid = None if keep.all() else keep
    origin = np.arange(n_rows)

    _cold_and_mf(inputs, models, cfg, X, starts, row_items)
    scores = np.empty(len(row_req))
    contexts_used = np.unique(ctx).tolist()
    if len(contexts_used) == 1:
        np.matmul(X, weights[contexts_used[0]], out=scores)
    else:
        row_ctx = ctx[row_req]
        for c in contexts_used:
            mask = row_ctx == c
            scores[mask] = X[mask] @ weights[c]
    if cfg.repeat_policy == "demote":
        scores = np.where(X[:, _SEEN] > 0, scores * cfg.repeat_factor, scores)
    if factors is not None:
        scores = boost(scores, factors)
    if cfg.fatigue != 1.0 and any(inp.fatigue for inp in inputs):
        scores = boost(scores, fatigue_factors(inputs, row_req, row_slot, models.codes.vocab.lookup,
                                        cfg.fatigue))
    categories = None
    if cache is not None:
        categories = cache.row_categories(row_slot, row_items, models.item_category)
    results = _select(inputs, models, cfg, X, scores, row_req, row_items, weights, ctx, valid,
                      categories)
    entries = (entry_row, entry_col, vals, np.repeat(np.asarray(table.tags, dtype=np.intp), lens))
    rules_of = None if boosted is None else (boosted, models.rules.boost_ids)
    explain(results, X, row_req, origin, weights, ctx, entries, table.tag_names, rules_of)
    permitted = None
    if cache is not None:
        cache.sync_rules(models.rules)
        permitted = cache.allowed
    place(results, inputs, cfg.k, models.rules, facts, models.unavailable, models.new_items,
          cfg.new_item_slots, permitted)
    return results


def _cold_and_mf(inputs, models: RankModels, cfg: RankConfig, X: np.ndarray,
                 starts: np.ndarray, row_items: list[str]) -> None:
    mf_of = models.mf_of
    mf = models.mf
    for r, inp in enumerate(inputs):
        a, b = starts[r], starts[r + 1]
        if a == b:
            continue
        if mf_of is not None:
            mf = mf_of[r]
        if inp.cold:
            X[a:b, _F["covis_cold"]] = X[a:b, _F["covis"]]
            X[a:b, _F["trending_cold"]] = X[a:b, _F["trending"]]
        if mf is not None and inp.user_id is not None and inp.history >= cfg.mf_min_history:
            X[a:b, _MF] = np.clip(mf.scores(inp.user_id, row_items[a:b]), 0.0, 1.0)


def _select(inputs, models: RankModels, cfg: RankConfig, X: np.ndarray, scores: np.ndarray,
            row_req: np.ndarray, row_items: list[str], weights: np.ndarray,
            ctx: np.ndarray, valid: np.ndarray | None = None,
            categories=None) -> list[RankResult]:
    """Top-K per request: stable descending order, diversity, strategy, feedback rows.
    Rows not ``valid`` (dropped by exclusions or rules) leave the order: never picked,
    never offered to the blend as shown."""
    n_req = len(inputs)
    # Highest score first within each request, ties in candidate order (lexsort is
    # stable).
    order = np.lexsort((-scores, row_req))
    if valid is not None:
        order = order[valid[order]]  # dropped rows leave the order
    req_sorted = row_req[order]
    starts = np.searchsorted(req_sorted, np.arange(n_req + 1))
    position = np.arange(len(order)) - starts[req_sorted]
    k = cfg.k

    # Strategy: the signal that contributes most to the top K (before diversity).
    in_top = position < k
    top = order[in_top]
    top_req = req_sorted[in_top]
    contrib = X[top, :_NS] * weights[ctx[top_req], :_NS]
    flat = (top_req[:, None] * _NS + np.arange(_NS)).ravel()
    contrib = np.bincount(flat, weights=contrib.ravel(), minlength=n_req * _NS)
    contrib = contrib.reshape(n_req, _NS)
    strategy_idx = np.argmax(contrib, axis=1).tolist()
    strategy_ok = (contrib.max(axis=1) > 0).tolist()

    pick_rows, pick_scores = diversify(cfg, models.item_category, order, position, req_sorted,
                                       scores, row_items, n_req, categories)
    picked = pick_rows >= 0
    counts = picked.sum(axis=1).tolist()
    rows = pick_rows[picked].tolist()
    names = list(map(row_items.__getitem__, rows))
    values = pick_scores[picked].tolist()

    fb_n = min(cfg.feedback_candidates, max(cfg.k * 4, cfg.feedback_candidates))
    in_fb = position < fb_n
    fb_rows = order[in_fb]
    fb_counts = np.bincount(req_sorted[in_fb], minlength=n_req).tolist()
    fb_names = list(map(row_items.__getitem__, fb_rows.tolist()))
    fb_X = X[fb_rows].astype(np.float32)

    out: list[RankResult] = []
    at = fb_at = 0
    for r in range(n_req):
        c, f = counts[r], fb_counts[r]
        if f == 0:
            out.append(_empty())
            continue
        strategy = SIGNALS[strategy_idx[r]] if strategy_ok[r] else "trending"
        result = RankResult(list(zip(names[at : at + c], values[at : at + c])), strategy,
                            fb_names[fb_at : fb_at + f], fb_X[fb_at : fb_at + f])
        result.reasons = rows[at : at + c]  # rows for now: explain() turns them into reasons
        out.append(result)
        at += c
        fb_at += f
    return out
