"""Diversity over the heads of many ranked lists at once (greedy MMR, in closed form).

The reference, one list at a time, is ``models.ranking._diversify``; tests hold the two to
the same lists.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from models.ranking import RankConfig

__all__ = ["diversify"]


def diversify(cfg: RankConfig, item_category: Mapping[str, str], order, position, req_sorted,
              scores, row_items, n_req: int,
              categories: Callable[[np.ndarray], np.ndarray] | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Greedy MMR over every request's head at once (see ``models.ranking._diversify``):
    each pick from a category already listed is damped by ``(1 - diversity)`` per earlier
    pick of it; optional hard cap per category.

    No pick-by-pick loop is needed: within a category items are always picked in score
    order (they share the damping), so the j-th item of a category is worth
    ``score * damp**j`` when it can be picked, and that is below what its predecessor
    was worth. The greedy sequence is therefore the head sorted by those values (ties in
    head order), without the items past a category's cap.

    ``categories(rows)``, when given, returns the category codes of candidate rows (-1:
    none), from a per-item cache; otherwise each head row's category is looked up in
    ``item_category``.

    Returns ``(rows, scores)``, each ``(n_req, k)``: the picked candidate rows best first
    (-1 where a request has fewer) and their scores rounded to 6 decimals.
    """
    k = cfg.k
    plain = cfg.diversity <= 0.0 and cfg.max_per_category <= 0
    head_n = k if plain else k * 3  # diversity reorders the head; the tail never shows
    in_head = position < head_n
    head = order[in_head]  # by request, then score order
    head_req = req_sorted[in_head]
    head_pos = position[in_head]
    head_scores = scores[head]
    if not plain:
        # Damping is multiplicative: scores must be positive (shift only when needed).
        low = np.minimum(0.0, _group_min(head_scores, head_req, n_req))
        shifted = head_scores - low[head_req] + 1e-9
        if categories is not None:
            cats = categories(head)
        else:
            cat_of = item_category.get
            codes: dict[str, int] = {}
            cats = np.array([codes.setdefault(c, len(codes)) if c else -1
                             for c in map(cat_of, [row_items[i] for i in head.tolist()])],
                            dtype=np.int64)
        # Rank of each item within its request's category (in score order).
        group = head_req.astype(np.int64) * (int(cats.max(initial=-1)) + 2) + (cats + 1)
        by_group = np.lexsort((head_pos, group))
        g_sorted = group[by_group]
        g_start = np.flatnonzero(np.concatenate(([True], g_sorted[1:] != g_sorted[:-1])))
        within = np.empty(len(head), dtype=np.int64)
        within[by_group] = np.arange(len(head)) - np.repeat(g_start, np.diff(np.append(g_start, len(head))))
        within[cats < 0] = 0  # no category: never damped, never capped
        damp = 1.0 - cfg.diversity
        adjusted = np.where(within > 0, shifted * damp**within, shifted)
        ok = np.ones(len(head), dtype=bool)
        if cfg.max_per_category > 0:
            ok = within < cfg.max_per_category
        head, head_req, adjusted = head[ok], head_req[ok], adjusted[ok]
        head_pos = head_pos[ok]
        resort = np.lexsort((head_pos, -adjusted, head_req))
        head, head_req = head[resort], head_req[resort]
        head_scores = adjusted[resort] + low[head_req]
        starts = np.searchsorted(head_req, np.arange(n_req))
        head_pos = np.arange(len(head)) - starts[head_req]
        pick = head_pos < k
        head, head_req, head_pos, head_scores = (head[pick], head_req[pick], head_pos[pick],
                                                 head_scores[pick])
    rows = np.full((n_req, k), -1, dtype=np.intp)
    values = np.zeros((n_req, k))
    rows[head_req, head_pos] = head
    values[head_req, head_pos] = head_scores
    return rows, np.round(values, 6)


def _group_min(values: np.ndarray, groups: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, np.inf)
    np.minimum.at(out, groups, values)
    return out
