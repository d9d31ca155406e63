"""Content vectors: items described by their catalog features, users by what they touched.

Features (category, tags, attributes) are hashed into a small dense vector (the hashing
trick: no vocabulary to keep, any catalog fits), L2-normalised and stored as float16
bytes (128 bytes an item). A user's content vector is the recency-weighted sum of the
vectors of their recent items; candidates are scored by cosine with numpy. The search
matrix is kept in float32 (the values are the float16 ones, widened once on insert) so
a query is one matrix-vector product with no conversion.

Nearest-item search (recall of items no other signal proposes) scans only the items put
most recently (``search_window``, a ring of its own), not the whole index: recently
active items are the ones worth recommending, and a scan of 20,000 rows per request
cost more than every other part of ranking together (and evicted the rest of the
ranker's data from the CPU caches). Lookups by item (``cosine``, ``get``) see the whole
index.

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
from itertools import repeat
from typing import Mapping

import numpy as np

__all__ = ["DIM", "NO_ROWS", "NO_VALUES", "first_per_row", "item_vector", "row_dots",
           "split_pairs", "user_vector", "VectorIndex"]

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


class _Ring:
    """The ``size`` most recently put items (a re-put of a held item only updates it)."""

    __slots__ = ("size", "matrix", "items", "slot_of", "next_slot")

    def __init__(self, size: int) -> None:
        self.size = size
        self.matrix = np.zeros((size, DIM), dtype=np.float32)
        self.items: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.next_slot = 0

    def put(self, item: str, row: np.ndarray) -> None:
        slot = self.slot_of.get(item)
        if slot is None:
            if len(self.items) < self.size:
                slot = len(self.items)
                self.items.append(item)
            else:
                slot = self.next_slot
                self.next_slot = (slot + 1) % self.size
                self.slot_of.pop(self.items[slot], None)  # None: a slot left by discard
                self.items[slot] = item
            self.slot_of[item] = slot
        self.matrix[slot] = row

    def discard(self, item: str) -> None:
        """Forget ``item``: its row becomes zeros (never a positive similarity)."""
        slot = self.slot_of.pop(item, None)
        if slot is not None:
            self.items[slot] = None
            self.matrix[slot] = 0.0


class VectorIndex:
    """A bounded set of item vectors in one numpy matrix, for brute-force cosine search.

    Slots are reused round-robin once ``capacity`` items are held: the least recently
    *inserted* item is forgotten (recently seen items are re-inserted as they pass by).
    ``nearest`` scans a window of up to ``search_window`` items (0: all of them): each
    put of an item not in the window takes the window's oldest slot; a put of one already
    in it only updates its row; an item the index forgets leaves the window too.
    """

    __slots__ = ("capacity", "matrix", "items", "slot_of", "next_slot", "recent")

    def __init__(self, capacity: int = 20_000, search_window: int = 2_048) -> None:
        self.capacity = capacity
        self.matrix = np.zeros((0, DIM), dtype=np.float32)
        self.items: list[str] = []
        self.slot_of: dict[str, int] = {}
        self.next_slot = 0
        self.recent = _Ring(search_window) if 0 < search_window < capacity else None

    def __getstate__(self):
        # Snapshots keep float16 (half the bytes); the live matrix is float32. The search
        # window is kept as its slots' items (rows come from the index on load).
        r = self.recent
        recent = None if r is None else (r.size, list(r.items), r.next_slot)
        return (self.capacity, self.matrix[: len(self.items)].astype(np.float16), self.items,
                self.next_slot, recent)

    def __setstate__(self, state):
        self.capacity, matrix, self.items, self.next_slot = state[:4]
        self.matrix = matrix.astype(np.float32)
        self.slot_of = {item: i for i, item in enumerate(self.items)}
        self.recent = None
        if len(state) > 4 and state[4] is not None:  # older snapshots scanned everything
            size, items, next_slot = state[4]
            r = self.recent = _Ring(size)
            r.items, r.next_slot = items, next_slot
            for slot, item in enumerate(items):
                if item is not None:
                    r.slot_of[item] = slot
                    r.matrix[slot] = self.matrix[self.slot_of[item]]

    def __len__(self) -> int:
        return len(self.items)

    def set_search_window(self, size: int) -> None:
        """Change the search window (after a restore with other settings); it starts with
        the items inserted last."""
        current = self.recent.size if self.recent is not None else 0
        wanted = size if 0 < size < self.capacity else 0
        if current == wanted:
            return
        self.recent = None
        if wanted:
            ring = _Ring(wanted)
            n, start = len(self.items), (self.next_slot if len(self.items) >= self.capacity else 0)
            order = [(start + j) % n for j in range(n)][-wanted:]  # oldest first
            for slot in order:
                ring.put(self.items[slot], self.matrix[slot])
            self.recent = ring

    def put(self, item: str, vector: bytes | None, searchable: bool = True) -> None:
        """Index ``item``'s vector. ``searchable=False`` keeps it out of the search
        window unless it is there already (catalog records: the window holds items seen
        active, in the order they were, which every worker count agrees on)."""
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
                gone = self.items[slot]
                del self.slot_of[gone]
                if self.recent is not None:
                    self.recent.discard(gone)  # the search window only holds indexed items
                self.items[slot] = item
            self.slot_of[item] = slot
        self.matrix[slot] = row
        if self.recent is not None and (searchable or item in self.recent.slot_of):
            self.recent.put(item, row)

    def get(self, item: str) -> np.ndarray | None:
        slot = self.slot_of.get(item)
        return None if slot is None else self.matrix[slot].copy()

    def slots(self, items) -> np.ndarray:
        """Index rows of ``items`` (-1: not indexed)."""
        return _slots(self.slot_of, items)

    def window_slots(self, items) -> np.ndarray:
        """Slots of ``items`` in the search window, the columns :meth:`top_many` names
        its picks by (-1: not in the window)."""
        return _slots((self.recent if self.recent is not None else self).slot_of, items)

    def cosine(self, user: np.ndarray, items: list[str]) -> np.ndarray:
        """Cosine of ``user`` with each of ``items`` (0 for items without a vector)."""
        slots = self.slots(items)
        known = slots >= 0
        out = np.zeros(len(items), dtype=np.float32)
        out[known] = row_dots(self.matrix[slots[known]], np.asarray(user, dtype=np.float32))
        return out

    def nearest(self, user: np.ndarray, n: int) -> list[tuple[str, float]]:
        """The ``n`` items most similar to ``user`` (positive similarity only) among the
        ``search_window`` put most recently."""
        return self.nearest_many(np.asarray(user)[None, :], n)[0]

    def nearest_many(self, users: np.ndarray, n: int) -> list[list[tuple[str, float]]]:
        """:meth:`nearest` for each row of ``users`` (see :meth:`top_many`)."""
        n_users = len(users)
        rows, cols, vals, items = self.top_many(users, n)
        return split_pairs(rows, map(items.__getitem__, cols.tolist()), vals, n_users)

    def top_many(self, users: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
        """The top ``n`` of each row of ``users`` as arrays ``(rows, cols, values,
        items)``: by user, best first, ties in slot order; ``items[col]`` names a pick.

        One matrix-vector product per user (the same sums as for that user alone; a
        matrix-matrix product may sum in another order and break ties differently),
        then each user's top by :func:`_top`. Picking every user's top at once with
        2-D array operations (a partition of the whole users x window matrix, a sort of
        the entries that pass) gave the same lists but cost 48-62 us per user against
        37-45 us this way (2,048-item window, 5 and 40 users).
        """
        space = self.recent if self.recent is not None else self
        count = len(space.items)
        users = np.asarray(users, dtype=np.float32)
        n_users = len(users)
        if count == 0 or n <= 0 or n_users == 0:
            return NO_ROWS, NO_ROWS, NO_VALUES, space.items
        matrix = space.matrix[:count]
        if n_users == 1:
            cols, vals = _top(matrix @ users[0], n)
            return np.zeros(len(cols), dtype=np.intp), cols, vals, space.items
        picks = [_top(matrix @ user, n) for user in users]
        rows = np.repeat(np.arange(n_users), [len(cols) for cols, _ in picks])
        cols = np.concatenate([cols for cols, _ in picks])
        vals = np.concatenate([vals for _, vals in picks])
        return rows, cols, vals, space.items


# No picks (shared by every empty answer, so read-only).
NO_ROWS = np.zeros(0, dtype=np.intp)
NO_VALUES = np.zeros(0, dtype=np.float32)
NO_ROWS.setflags(write=False)
NO_VALUES.setflags(write=False)


def _slots(slot_of: dict, items) -> np.ndarray:
    return np.fromiter(map(slot_of.get, items, repeat(-1)), dtype=np.intp, count=len(items))


def first_per_row(rows: np.ndarray, n_rows: int, n: int) -> np.ndarray:
    """Of entries grouped by row (``rows`` sorted), which are among their row's first ``n``."""
    starts = np.searchsorted(rows, np.arange(n_rows))
    return np.arange(len(rows)) - starts[rows] < n


def split_pairs(rows: np.ndarray, names, values: np.ndarray,
                n_rows: int) -> list[list[tuple[str, float]]]:
    """``(name, value)`` lists per row from entries grouped by row (``rows`` sorted)."""
    pairs = list(zip(names, values.tolist()))
    out = []
    at = 0
    for c in np.bincount(rows, minlength=n_rows).tolist():
        out.append(pairs[at : at + c])
        at += c
    return out


def _top(sims: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` best positive similarities of one user, ties in slot order: ``(slots,
    values)``."""
    # Positive similarities only, then a stable sort: catalogs described by a category
    # alone give a few distinct values over thousands of rows, and argpartition on
    # such ties took 180 us for 2,048 rows (a sort of the positives takes ~10).
    pos = np.flatnonzero(sims > 0.0)
    if n < len(pos):
        # Only rows at least as similar as the n-th best can make the list: a partition
        # of the values (no indices, fast even on ties) finds that bound, and the
        # stable sort of what passes it gives the same list as a full one.
        neg = -sims[pos]
        bound = np.partition(neg, n - 1)[n - 1]
        pos = pos[neg <= bound]
    top = pos[np.argsort(-sims[pos], kind="stable")[:n]]
    return top, sims[top]


def row_dots(rows: np.ndarray, users: np.ndarray) -> np.ndarray:
    """Row-wise dot products of two float32 arrays (``users`` one vector, or one row per
    row): the same sum for a row however it is asked, alone or in a batch (einsum's
    loop, unlike a BLAS product, does not depend on the number of rows)."""
    if users.ndim == 1:
        return np.einsum("ij,j->i", rows, users)
    return np.einsum("ij,ij->i", rows, users)
