"""Hybrid ranking: candidates from every signal, one blended score, rules, diversity, top-K.

Signals (each normalised to a distribution so weights are comparable):
- ``covis``: the followers of the user's recent session items (sequential rules), the
  most recent anchor weighted most;
- ``category``: trending items of the user's preferred categories (session taste
  first, long-term taste after);
- ``segment``: what users of the same segment (age band, gender) engage with;
- ``trending``: decayed popularity overall, a small prior and the cold-start fallback.

>>> from models.trending import Trending
>>> t = Trending(3600.0); t.observe("p9", "hats", 3.0, 0.0)
>>> req = RankInput(ts=0.0, anchors=[(1.0, [("p2", 0.7), ("p3", 0.3)])])
>>> [i for i, _ in rank(req, t, {}, frozenset(), RankConfig(k=3))[0]]
['p2', 'p3', 'p9']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from models.trending import Trending

__all__ = ["RankConfig", "RankInput", "rank", "SIGNALS"]

SIGNALS = ("covis", "session", "category", "segment", "trending")


@dataclass(frozen=True)
class RankConfig:
    k: int = 20
    w_covis: float = 1.0
    w_session: float = 0.0
    session_decay: float = 0.6
    w_category: float = 0.25
    w_segment: float = 0.25
    w_trending: float = 0.05
    candidates_per_category: int = 30
    repeat_policy: str = "demote"  # allow | demote | exclude
    repeat_factor: float = 0.6
    diversity: float = 0.3
    max_per_category: int = 0


@dataclass
class RankInput:
    ts: float
    anchors: list[tuple[float, list[tuple[str, float]]]] = field(default_factory=list)
    categories: list[tuple[str, float]] = field(default_factory=list)
    session_categories: list[tuple[str, float]] = field(default_factory=list)
    preferences: list[str] | None = None
    segment: str | None = None
    seen: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)


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


def rank(
    inp: RankInput,
    trending: Trending,
    item_category: Mapping[str, str],
    unavailable: frozenset[str] | set[str],
    cfg: RankConfig,
    weights: Mapping[str, float] | None = None,
) -> tuple[list[tuple[str, float]], str]:
    """Return (top-K ``(item, score)`` best first, name of the dominant signal)."""
    w = {"covis": cfg.w_covis, "session": cfg.w_session, "category": cfg.w_category,
         "segment": cfg.w_segment, "trending": cfg.w_trending}
    if weights:
        w.update(weights)
    scores: dict[str, float] = {}
    by_signal = dict.fromkeys(SIGNALS, 0.0)

    def add(signal: str, pairs: list[tuple[str, float]], scale: float) -> None:
        if scale <= 0.0 or not pairs:
            return
        by_signal[signal] += scale
        get = scores.get
        for item, p in pairs:
            scores[item] = get(item, 0.0) + scale * p

    anchor_total = sum(a for a, _ in inp.anchors) or 1.0
    for anchor_weight, followers in inp.anchors:
        add("covis", followers, w["covis"] * anchor_weight / anchor_total)
    if inp.seen:
        # Re-finding: items of this session, the most recent first (repeat views are common).
        recent = list(reversed(inp.seen))
        weights = [cfg.session_decay**i for i in range(len(recent))]
        total = sum(weights)
        add("session", [(item, wt / total) for item, wt in zip(recent, weights)], w["session"])
    ts = inp.ts
    for cat, share in _category_mix(inp):
        add("category", _normalised(trending.top_in(cat, cfg.candidates_per_category, ts)),
            w["category"] * share)
    if inp.segment:
        add("segment", _normalised(trending.top_segment(inp.segment, cfg.candidates_per_category, ts)),
            w["segment"])
    add("trending", _normalised(trending.top(cfg.candidates_per_category * 2, ts)), w["trending"])

    for item in inp.excluded:
        scores.pop(item, None)
    for item in unavailable.intersection(scores) if unavailable else ():
        scores.pop(item, None)
    if inp.seen and cfg.repeat_policy != "allow":
        for item in inp.seen:
            if item in scores:
                if cfg.repeat_policy == "exclude":
                    del scores[item]
                else:
                    scores[item] *= cfg.repeat_factor
    strategy = max(by_signal, key=by_signal.get) if any(by_signal.values()) else "empty"
    return _diversify(scores, item_category, cfg), strategy


def _diversify(
    scores: dict[str, float], item_category: Mapping[str, str], cfg: RankConfig
) -> list[tuple[str, float]]:
    """Greedy MMR-style selection: each pick from a category already shown is damped by
    ``(1 - diversity)`` per earlier pick of that category; optional hard cap per category."""
    k = cfg.k
    ordered = sorted(scores.items(), key=lambda kv: -kv[1])
    if cfg.diversity <= 0.0 and cfg.max_per_category <= 0:
        return [(i, round(s, 6)) for i, s in ordered[:k]]
    pool = ordered[: k * 4]
    picked: list[tuple[str, float]] = []
    shown: dict[str, int] = {}
    damp = 1.0 - cfg.diversity
    while pool and len(picked) < k:
        best_i, best_adj = 0, -1.0
        for idx, (item, s) in enumerate(pool):
            if s <= best_adj:
                break  # sorted by raw score: nothing further can beat best_adj
            n = shown.get(item_category.get(item, ""), 0)
            if cfg.max_per_category and n >= cfg.max_per_category and item_category.get(item):
                continue
            adj = s * (damp ** n) if n else s
            if adj > best_adj:
                best_i, best_adj = idx, adj
        if best_adj < 0.0:
            break
        item, _ = pool.pop(best_i)
        cat = item_category.get(item, "")
        if cat:
            shown[cat] = shown.get(cat, 0) + 1
        picked.append((item, round(best_adj, 6)))
    return picked
