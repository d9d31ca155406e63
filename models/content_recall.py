"""Content recall and cosines over two vector indexes: the worker's shared one (items
every worker is told of) and a rank shard's own (the vectors its users' answers carried).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from models.content import DIM, VectorIndex, row_dots
from models.ranking import RankInput

__all__ = ["nearest_of", "nearest_batch", "anchor_cosines", "batch_cosines"]


def nearest_of(user: np.ndarray, n: int, shared: VectorIndex | None,
               local: VectorIndex | None) -> list[tuple[str, float]]:
    """Content recall over the shared index's window and this shard's own vectors: the
    ``n`` most similar, ties in that order."""
    return nearest_batch(np.asarray(user)[None, :], n, shared, local)[0]


def nearest_batch(users: np.ndarray, n: int, shared: VectorIndex | None,
                  local: VectorIndex | None) -> list[list[tuple[str, float]]]:
    """:func:`nearest_of` for each row of ``users`` (each index picks the top of all the
    users at once, see :meth:`VectorIndex.nearest_many`)."""
    if shared is not None and len(shared) > 0:
        near = shared.nearest_many(users, n)
    else:
        near = [[] for _ in range(len(users))]
    if local is None:
        return near
    out = []
    for mine, theirs in zip(near, local.nearest_many(users, n)):
        seen = {i for i, _ in mine}
        more = [(i, s) for i, s in theirs if i not in seen]
        if not more:
            out.append(mine)
            continue
        merged = mine + more
        order = sorted(range(len(merged)), key=lambda j: -merged[j][1])  # stable
        out.append([merged[j] for j in order[:n]])
    return out


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
