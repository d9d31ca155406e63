"""Content vectors: items described by their catalog features, users by what they touched.

Features (category, tags, attributes) are hashed into a small dense vector (the hashing
trick: no vocabulary to keep, any catalog fits), L2-normalised and stored as float16
bytes (128 bytes an item). A user's content vector is the recency-weighted sum of the
vectors of their recent items; candidates are scored by cosine with numpy. The search
matrix is kept in float32 (the values are the float16 ones, widened once on insert) so
a query is one matrix-vector product with no conversion.

>>> shoes = item_vector("shoes", ["running", "red"], {"brand": "x"})
>>> boots = item_vector("shoes", ["hiking", "red"], None)
>>> hat = item_vector("hats", ["wool"], None)
>>> index = VectorIndex(capacity=10)
>>> for name, vec in [("boots", boots), ("hat", hat)]:
...     index.put(name, vec)
>>> [item for item, _ in index.nearest(user_vector([(1.0, shoes)]), 2)]  # hat: no overlap
['boots']
"""

from __future__ import annotations

import zlib
from typing import Mapping

import numpy as np

__all__ = ["DIM", "item_vector", "user_vector", "VectorIndex"]

DIM = 64


def item_vector(category: str | None, tags, attributes: Mapping | None) -> bytes | None:
    """The hashed, normalised feature vector of an item as float16 bytes (None: no features)."""
    vec = np.zeros(DIM, dtype=np.float32)
    features = []
    if category:
        features.append((f"c:{category}", 1.0))
    for tag in tags or ():
        features.append((f"t:{tag}", 1.0))
    for key, value in list((attributes or {}).items())[:16]:
        features.append((f"a:{key}={value}", 0.5))
    if not features:
        return None
    for name, weight in features:
        h = zlib.crc32(name.encode())
        vec[h % DIM] += weight if (h >> 16) & 1 else -weight
    norm = float(np.linalg.norm(vec))
    if norm == 0.0:
        return None
    return (vec / norm).astype(np.float16).tobytes()


def _as_array(vector: bytes) -> np.ndarray:
    return np.frombuffer(vector, dtype=np.float16).astype(np.float32)


def user_vector(weighted: list[tuple[float, bytes]]) -> np.ndarray | None:
    """Normalised weighted sum of item vectors (None when nothing has features)."""
    acc = np.zeros(DIM, dtype=np.float32)
    for weight, vector in weighted:
        if vector:
            acc += weight * _as_array(vector)
    norm = float(np.linalg.norm(acc))
    return acc / norm if norm > 0.0 else None


class VectorIndex:
    """A bounded set of item vectors in one numpy matrix, for brute-force cosine search.

    Slots are reused round-robin once ``capacity`` items are held: the least recently
    *inserted* item is forgotten (recently seen items are re-inserted as they pass by).
    """

    __slots__ = ("capacity", "matrix", "items", "slot_of", "next_slot")

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self.matrix = np.zeros((0, DIM), dtype=np.float32)
        self.items: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.next_slot = 0

    def __getstate__(self):
        # Snapshots keep float16 (half the bytes); the live matrix is float32.
        return (self.capacity, self.matrix[: len(self.items)].astype(np.float16), self.items,
                self.next_slot)

    def __setstate__(self, state):
        self.capacity, matrix, self.items, self.next_slot = state
        self.matrix = matrix.astype(np.float32)
        self.slot_of = {item: i for i, item in enumerate(self.items)}

    def __len__(self) -> int:
        return len(self.items)

    def put(self, item: str, vector: bytes | None) -> None:
        if not vector:
            return  # no features (or they cancelled out in the hash): nothing to index
        row = np.frombuffer(vector, dtype=np.float16).astype(np.float32)
        slot = self.slot_of.get(item)
        if slot is None:
            if len(self.items) < self.capacity:
                if len(self.items) == len(self.matrix):
                    grow = max(64, len(self.matrix))
                    self.matrix = np.vstack([self.matrix, np.zeros((grow, DIM), np.float32)])
                slot = len(self.items)
                self.items.append(item)
            else:
                slot = self.next_slot
                self.next_slot = (self.next_slot + 1) % self.capacity
                del self.slot_of[self.items[slot]]
                self.items[slot] = item
            self.slot_of[item] = slot
        self.matrix[slot] = row

    def get(self, item: str) -> np.ndarray | None:
        slot = self.slot_of.get(item)
        return None if slot is None else self.matrix[slot].copy()

    def cosine(self, user: np.ndarray, items: list[str]) -> np.ndarray:
        """Cosine of ``user`` with each of ``items`` (0 for items without a vector)."""
        out = np.zeros(len(items), dtype=np.float32)
        rows = [(i, self.slot_of[item]) for i, item in enumerate(items) if item in self.slot_of]
        if rows:
            idx, slots = zip(*rows)
            out[list(idx)] = self.matrix[list(slots)] @ user
        return out

    def nearest(self, user: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` items most similar to ``user`` (positive similarity only)."""
        count = len(self.items)
        if count == 0:
            return []
        sims = self.matrix[:count] @ user
        n = min(n, count)
        top = np.argpartition(-sims, n - 1)[:n]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(self.items[i], float(sims[i])) for i in top if sims[i] > 0.0]
