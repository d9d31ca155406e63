"""Content recall over two vector indexes: the worker's shared one (items every worker is
told of) and a rank shard's own (the vectors its users' answers carried).
"""

from __future__ import annotations

import numpy as np

from models.content import VectorIndex
from models.ranking import RankInput

__all__ = ["nearest_of", "anchor_cosines"]


def nearest_of(user: np.ndarray, n: int, shared: VectorIndex | None,
             local: VectorIndex | None) -> list[tuple[str, float]]:
    """Content recall over the shared index's window and this shard's own vectors: the
    ``n`` most similar, ties in that order."""
    near = shared.nearest(user, n) if shared is not None and len(shared) > 0 else []
    if local is None:
        return near
    seen = {i for i, _ in near}
    more = [(i, s) for i, s in local.nearest(user, n) if i not in seen]
    if not more:
        return near
    merged = near + more
    order = sorted(range(len(merged)), key=lambda j: -merged[j][1])  # stable
    return [merged[j] for j in order[:n]]


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
