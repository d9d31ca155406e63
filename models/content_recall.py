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

__all__ = ["nearest_of", "nearest_batch", "nearest_names", "anchor_cosines", "batch_cosines", "per_row_locals"]


def nearest_of(user: np.ndarray, n: int, shared: VectorIndex | None,
               local: VectorIndex | None) -> list[tuple[str, float]]:
    """Content recall over the shared index's window and this shard's own vectors: the
    ``n`` most similar, ties in that order."""
    return nearest_batch(np.asarray(user)[None, :], n, shared, local)[0]


def _groups(per_row: Sequence) -> list[tuple[object, np.ndarray]]:
    """The distinct non-None entries of ``per_row`` (by identity, in order of first
    appearance), each with the rows that have it."""
    rows_of: dict[int, list[int]] = {}
    owner: dict[int, object] = {}
    for r, x in enumerate(per_row):
        if x is not None:
            key = id(x)
            if key not in owner:
                owner[key] = x
                rows_of[key] = []
            rows_of[key].append(r)
    return [(owner[k], np.asarray(rows, dtype=np.intp)) for k, rows in rows_of.items()]


def per_row_locals(local, n_rows: int) -> list:
    """``local`` as one entry per row: a sequence is taken as it is; one index (or None)
    serves every row. Indexes without vectors count as None."""
    if local is None or isinstance(local, VectorIndex):
        local = [local] * n_rows
    return [x if x is not None and len(x) > 0 else None for x in local]


def _local_picks(users: np.ndarray, n: int, locals_: list) -> tuple:
    """Each row's top ``n`` in its own local index: ``(rows, values, names)`` grouped by
    index, each index's rows in order (by user, best first, ties in slot order)."""
    rows, vals, names = [], [], []
    for index, at in _groups(locals_):
        l_rows, l_cols, l_vals, l_items = index.top_many(users[at], n)
        rows.append(at[l_rows])
        vals.append(l_vals)
        names.extend(map(l_items.__getitem__, l_cols.tolist()))
    if not rows:
        return NO_ROWS, NO_VALUES, []
    if len(rows) == 1:
        return rows[0], vals[0], names
    return np.concatenate(rows), np.concatenate(vals), names


def nearest_batch(users: np.ndarray, n: int, shared: VectorIndex | None,
                  local) -> list[list[tuple[str, float]]]:
    """:func:`nearest_of` for each row of ``users``: each index picks the top of all the
    users at once (:meth:`VectorIndex.top_many`); for each user, the local picks that
    the shared ones do not hold join them, and the best ``n`` of both are kept (ties:
    the shared picks first, each index's in its own order).

    ``local`` is one index for every row, or one per row (rows of several rank shards
    ranked together, each searching its own shard's vectors).
    """
    rows, names, vals = _nearest(users, n, shared, local)
    return split_pairs(rows, names, vals, len(users))


def nearest_names(users: np.ndarray, n: int, shared: VectorIndex | None,
                  local) -> list[list[str]]:
    """The items of :func:`nearest_batch`, without their similarities."""
    rows, names, _ = _nearest(users, n, shared, local)
    out = []
    at = 0
    for c in np.bincount(rows, minlength=len(users)).tolist():
        out.append(names[at : at + c])
        at += c
    return out


def _nearest(users: np.ndarray, n: int, shared: VectorIndex | None,
             local) -> tuple[np.ndarray, list[str], np.ndarray]:
    """:func:`nearest_batch` as entries grouped by user: ``(rows, names, values)``."""
    n_users = len(users)
    if shared is not None and len(shared) > 0:
        s_rows, s_cols, s_vals, s_items = shared.top_many(users, n)
    else:
        s_rows, s_cols, s_vals, s_items = NO_ROWS, NO_ROWS, NO_VALUES, []
    s_names = list(map(s_items.__getitem__, s_cols.tolist()))
    locals_ = per_row_locals(local, n_users)
    if not any(x is not None for x in locals_):
        return s_rows, s_names, s_vals
    l_rows, l_vals, l_names = _local_picks(users, n, locals_)
    if len(s_rows) and len(l_rows):
        # A local pick the same user's shared picks hold already goes; items are
        # compared by their slot in the shared search window (the shared picks' columns;
        # a local item outside the window cannot be among them).
        width = max(len(s_items), 1) + 1
        mine = s_rows * width + s_cols
        theirs = shared.window_slots(l_names)
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
    return rows[keep], list(map(names.__getitem__, picked)), vals[picked]


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
                  local) -> np.ndarray | None:
    """Per candidate row, the cosine of its item with its request's content vector
    (0 where either is unknown), clipped at 0; None when no row has one.

    The same values as a per-request ``cosine`` of the shared index, then of the local
    one for what the shared index lacks, then :func:`anchor_cosines`: one gather and one
    row-wise product for the whole batch instead of a dictionary walk per request.
    ``local`` is one index for every request or one per request (see
    :func:`nearest_batch`).
    """
    indexed = shared is not None and len(shared) > 0
    locals_ = per_row_locals(local, len(inputs))
    any_local = any(x is not None for x in locals_)
    with_anchors = [r for r, inp in enumerate(inputs)
                    if inp.content is not None and inp.anchor_vectors]
    if not indexed and not any_local and not with_anchors:
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
    if any_local and missing.any():
        for index, reqs in _groups(locals_):
            # The rows still without a cosine whose request searches this index.
            mine = np.zeros(len(inputs), dtype=bool)
            mine[reqs] = True
            rows = np.flatnonzero(missing & mine[row_req])
            if len(rows):
                slots = index.slots(list(map(row_items.__getitem__, rows.tolist())))
                ok = slots >= 0
                at = rows[ok]
                sims[at] = row_dots(index.matrix[slots[ok]], users[row_req[at]])
    known = shared.slot_of if indexed else {}
    for r in with_anchors:
        a, b = int(starts[r]), int(starts[r + 1])
        if a < b:
            view = sims[a:b]  # written in place
            anchor_cosines(view, row_items[a:b], inputs[r], known, locals_[r])
    np.clip(sims, 0.0, None, out=sims)
    return sims
