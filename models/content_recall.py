"""Content recall and cosines over two vector indexes: the worker's shared one (items
every worker is told of) and a rank shard's own (the vectors its users' answers carried).
"""

from __future__ import annotations

from itertools import compress
from typing import Sequence

import numpy as np

from models.content import (
    DIM, NO_ROWS, NO_VALUES, VectorIndex, first_per_row, row_dots, split_pairs,
)
from models.candidate_marks import member
from models.ranking import RankInput

__all__ = ["nearest_of", "nearest_batch", "anchor_cosines", "batch_cosines"]


def nearest_of(user: np.ndarray, n: int, shared: VectorIndex | None,
               local: VectorIndex | None) -> list[tuple[str, float]]:
    """Content recall over the shared index's window and this shard's own vectors: the
    ``n`` most similar, ties in that order."""
    return nearest_batch(np.asarray(user)[None, :], n, shared, local)[0]


def nearest_batch(users: np.ndarray, n: int, shared: VectorIndex | None,
                  local: VectorIndex | None) -> list[list[tuple[str, float]]]:
    """:func:`nearest_of` for each row of ``users``: each index picks the top of all the
    users at once (:meth:`VectorIndex.top_many`); for each user, the local picks that
    the shared ones do not hold join them, and the best ``n`` of both are kept (ties:
    the shared picks first, each index's in its own order).
    """
    n_users = len(users)
    if shared is not None and len(shared) > 0:
        s_rows, s_cols, s_vals, s_items = shared.top_many(users, n)
    else:
        s_rows, s_cols, s_vals, s_items = NO_ROWS, NO_ROWS, NO_VALUES, []
    s_names = list(map(s_items.__getitem__, s_cols.tolist()))
    if local is None:
        return split_pairs(s_rows, s_names, s_vals, n_users)
    l_rows, l_cols, l_vals, l_items = local.top_many(users, n)
    l_names = list(map(l_items.__getitem__, l_cols.tolist()))
    if len(s_rows) and len(l_rows):
        # A local pick the same user's shared picks hold already goes; items are
        # compared by their shared index slot (every window item is indexed there).
        width = len(shared.matrix) + 1
        mine = s_rows * width + shared.slots(s_names)
        theirs = shared.slots(l_names)
        fresh = (theirs < 0) | ~member(l_rows * width + theirs, mine)
        if not fresh.all():
            l_rows, l_vals = l_rows[fresh], l_vals[fresh]
            l_names = list(compress(l_names, fresh.tolist()))
    rows = np.concatenate([s_rows, l_rows])
    vals = np.concatenate([s_vals, l_vals])
    names = s_names + l_names
    order = np.lexsort((np.arange(len(rows)), -vals, rows))  # stable: shared first
    rows, order = rows[order], order
    keep = first_per_row(rows, n_users, n)
    picked = order[keep].tolist()
    return split_pairs(rows[keep], map(names.__getitem__, picked), vals[picked], n_users)


def anchor_cosines(sims: np.ndarray, items: list[str], inp: RankInput, indexed,
                   local: VectorIndex | None = None) -> None:
    """Cosines of the request's anchors that neither index holds yet, from the vectors
    their answers carried (a handful per request, looked up by position)."""
    for item, vector in inp.anchor_vectors.items():
        if item in indexed or (local is not None and item in local.slot_of):
            continue
        try:
            at = items.index(item)
        except ValueError:
            continue
        sims[at] = np.frombuffer(vector, dtype=np.float16).astype(np.float32) @ inp.content


def batch_cosines(inputs: Sequence[RankInput], row_req: np.ndarray, row_items: list[str],
                  starts: np.ndarray, shared: VectorIndex | None,
                  local: VectorIndex | None) -> np.ndarray | None:
    """Per candidate row, the cosine of its item with its request's content vector
    (0 where either is unknown), clipped at 0; None when no row has one.

    The same values as a per-request ``cosine`` of the shared index, then of the local
    one for what the shared index lacks, then :func:`anchor_cosines`: one gather and one
    row-wise product for the whole batch instead of a dictionary walk per request.
    """
    indexed = shared is not None and len(shared) > 0
    with_anchors = [r for r, inp in enumerate(inputs)
                    if inp.content is not None and inp.anchor_vectors]
    if not indexed and local is None and not with_anchors:
        return None
    users = np.zeros((len(inputs), DIM), dtype=np.float32)
    has_user = np.zeros(len(inputs), dtype=bool)
    for r, inp in enumerate(inputs):
        if inp.content is not None:
            users[r] = inp.content
            has_user[r] = True
    if not has_user.any():
        return None
    wanted = has_user[row_req]
    sims = np.zeros(len(row_req), dtype=np.float32)
    missing = wanted
    if indexed:
        slots = shared.slots(row_items)
        hit = wanted & (slots >= 0)
        sims[hit] = row_dots(shared.matrix[slots[hit]], users[row_req[hit]])
        missing = wanted & (slots < 0)
    if local is not None and missing.any():
        slots = local.slots(row_items)
        hit = missing & (slots >= 0)
        sims[hit] = row_dots(local.matrix[slots[hit]], users[row_req[hit]])
    known = shared.slot_of if indexed else {}
    for r in with_anchors:
        a, b = int(starts[r]), int(starts[r + 1])
        if a < b:
            view = sims[a:b]  # written in place
            anchor_cosines(view, row_items[a:b], inputs[r], known, local)
    np.clip(sims, 0.0, None, out=sims)
    return sims
