"""What a batch's candidate rows are marked with before scoring: seen by their user (the
``seen`` feature), excluded (purchased, unavailable, or seen under ``repeat_policy=
"exclude"``), and the impression-fatigue factor. Arrays over all rows, one set of
look-ups per batch (used by :func:`models.batch_ranking.rank_batch`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from models.ranking import FEATURES, RankConfig

if TYPE_CHECKING:
    from models.batch_ranking import RankModels

__all__ = ["fatigue_factors", "member", "mark_seen_and_excluded"]

_SEEN = FEATURES.index("seen")


def fatigue_factors(inputs, row_req: np.ndarray, row_slot: np.ndarray, lookup, factor: float) -> np.ndarray:
    """Per row, ``factor`` to the power of the lists in which its request's user saw the
    item without clicking it (``RankInput.fatigue``); 1 elsewhere."""
    reqs, slots, counts = [], [], []
    for r, inp in enumerate(inputs):
        if inp.fatigue:
            s = lookup(list(inp.fatigue))
            ok = s >= 0
            reqs.append(np.full(int(ok.sum()), r, dtype=np.int64))
            slots.append(s[ok].astype(np.int64))
            counts.append(np.fromiter(inp.fatigue.values(), dtype=np.float64, count=len(s))[ok])
    out = np.ones(len(row_req))
    if not reqs:
        return out
    span = int(max(row_slot.max(initial=0), max(int(s.max(initial=0)) for s in slots))) + 1
    keys = np.concatenate(reqs) * span + np.concatenate(slots)
    order = np.argsort(keys)
    keys, power = keys[order], np.concatenate(counts)[order]
    rows = row_req.astype(np.int64) * span + row_slot
    at = np.minimum(np.searchsorted(keys, rows), len(keys) - 1)
    hit = keys[at] == rows
    out[hit] = factor ** power[at[hit]]
    return out


def member(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``np.isin(values, keys)`` for the small key sets here: a binary search in the
    sorted keys (np.isin sorts both sides, a fixed cost that dominated small batches).

    >>> member(np.array([3, 5, 7]), np.array([7, 1, 3])).tolist()
    [True, False, True]
    """
    if len(keys) == 0:
        return np.zeros(len(values), dtype=bool)
    keys = np.sort(keys)
    at = np.searchsorted(keys, values)
    np.minimum(at, len(keys) - 1, out=at)
    return keys[at] == values


def mark_seen_and_excluded(inputs, models: RankModels, cfg: RankConfig, X: np.ndarray,
                           row_req: np.ndarray, row_slot: np.ndarray) -> np.ndarray:
    """Mark seen items in ``X`` and return which rows survive exclusions and rules."""
    n_req = len(inputs)
    keep = np.ones(len(row_req), dtype=bool)
    cap = models.codes.vocab.capacity
    row_keys = row_req.astype(np.int64) * cap + row_slot
    gone_ids: list[str] = []
    gone_req: list[int] = []
    seen_ids: list[str] = []
    seen_req: list[int] = []
    for r, inp in enumerate(inputs):
        if inp.excluded:
            gone_ids.extend(inp.excluded)
            gone_req.extend([r] * len(inp.excluded))
        if inp.seen:
            seen_ids.extend(inp.seen)
            seen_req.extend([r] * len(inp.seen))
    lookup = models.codes.vocab.lookup
    if gone_ids:
        s = lookup(gone_ids)
        known = s >= 0
        keep &= ~member(row_keys, np.asarray(gone_req, dtype=np.int64)[known] * cap + s[known])
    if models.unavailable:
        s = lookup(models.unavailable)
        keep &= ~member(row_slot, s[s >= 0])
    seen = np.zeros(len(row_req), dtype=bool)
    if seen_ids:
        s = lookup(seen_ids)
        known = s >= 0
        seen |= member(row_keys, np.asarray(seen_req, dtype=np.int64)[known] * cap + s[known])
    filters = [i for i, inp in enumerate(inputs) if inp.seen_filter]
    if filters:
        bits = np.zeros((n_req, 512), dtype=np.uint8)
        for i in filters:
            bits[i] = np.frombuffer(inputs[i].seen_filter, dtype=np.uint8)
        pos = models.codes.bloom_positions(row_slot)
        hit = np.ones(len(row_req), dtype=bool)
        for j in range(3):
            p = pos[:, j]
            hit &= (bits[row_req, p >> 3] >> (p & 7)) & 1 == 1
        seen |= hit
    X[:, _SEEN] = seen
    if cfg.repeat_policy == "exclude":
        keep &= ~seen
        X[:, _SEEN] = 0.0
    return keep
