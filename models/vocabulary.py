"""Dense integer slots for item ids: the edge between string ids and numpy arrays.

Everything a ranker keeps per item (category, availability, content vector, popularity)
lives in arrays indexed by a slot, so scoring a batch is array arithmetic instead of dict
look-ups per candidate. The vocabulary is bounded: when it is full, the items touched
longest ago (in event time) give up their slots, a sixteenth of the capacity at a time,
and whoever owns per-slot arrays is told which slots to clear.

>>> v = ItemVocabulary(capacity=4)
>>> v.encode(["p1", "p2", "p1"], ts=0.0).tolist()
[0, 1, 0]
>>> v.lookup(["p2", "p9"]).tolist()
[1, -1]
>>> v.decode([1, 0])
['p2', 'p1']
>>> v.encode(["p3", "p4"], ts=5.0).tolist()
[2, 3]
>>> v.encode(["p5"], ts=9.0, evicted=(gone := [])).tolist(), gone, "p1" in v
([0], [0], False)
"""

from __future__ import annotations

from itertools import repeat
from typing import Iterable, Sequence

import numpy as np

__all__ = ["ItemVocabulary"]


class ItemVocabulary:
    """Item id <-> slot, at most ``capacity`` ids; eviction by least recent touch."""

    __slots__ = ("capacity", "ids", "index", "touched", "free")

    def __init__(self, capacity: int = 200_000) -> None:
        if capacity < 1:
            msg = f"ItemVocabulary capacity must be at least 1, got {capacity}"
            raise ValueError(msg)
        self.capacity = capacity
        self.ids: list[str | None] = []  # slot -> id (None: free)
        self.index: dict[str, int] = {}  # id -> slot
        self.touched = np.zeros(0, dtype=np.float64)  # slot -> last event time it was used
        self.free: list[int] = []  # released slots, reused before new ones

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, item: str) -> bool:
        return item in self.index

    @property
    def size(self) -> int:
        """Slots in use or released: every per-slot array needs at least this many rows."""
        return len(self.ids)

    def __getstate__(self):
        # The free list keeps its order: a restored vocabulary hands out the same slots.
        return (self.capacity, self.ids, self.touched[: len(self.ids)].copy(), self.free)

    def __setstate__(self, state):
        self.capacity, self.ids, self.touched, self.free = state
        self.index = {item: slot for slot, item in enumerate(self.ids) if item is not None}

    def lookup(self, items: Iterable[str]) -> np.ndarray:
        """Slots of ``items``, -1 for unknown ones (nothing is added or touched)."""
        return np.fromiter(map(self.index.get, items, repeat(-1)), dtype=np.int64)

    def decode(self, slots: Iterable[int]) -> list[str]:
        ids = self.ids
        return [ids[s] for s in slots]

    def encode(self, items: Sequence[str], ts: float,
               evicted: list[int] | None = None) -> np.ndarray:
        """Slots of ``items``, adding the new ones; all of them count as used at ``ts``.

        Slots freed to make room are appended to ``evicted`` (when given), so the caller
        can clear its per-slot arrays before the slots are handed out again. Items of
        this call are never evicted by it: one call must fit in the capacity.
        """
        slots = np.fromiter(map(self.index.get, items, repeat(-1)), dtype=np.int64,
                            count=len(items))
        missing = np.flatnonzero(slots < 0)
        if len(missing):
            new = list(dict.fromkeys(items[p] for p in missing.tolist()))
            room = len(self.free) + self.capacity - len(self.ids)
            if len(new) > room:
                keep = slots[slots >= 0]
                if len(new) + len(np.unique(keep)) > self.capacity:
                    msg = (f"{len(new)} new items in one batch do not fit an item vocabulary "
                           f"of {self.capacity:,} slots; raise its capacity")
                    raise ValueError(msg)
                self._evict(max(len(new) - room, self.capacity // 16), evicted, keep)
            index = self.index
            for item in new:
                index[item] = self._take_slot()
                self.ids[index[item]] = item
            slots[missing] = [index[items[p]] for p in missing.tolist()]
        touched = self.touched
        touched[slots] = np.maximum(touched[slots], ts)
        return slots

    def _take_slot(self) -> int:
        if self.free:
            slot = self.free.pop()
            self.touched[slot] = -np.inf
            return slot
        slot = len(self.ids)
        self.ids.append(None)
        if slot >= len(self.touched):
            grow = min(self.capacity, max(64, 2 * len(self.touched)))
            self.touched = np.concatenate([self.touched, np.zeros(grow - len(self.touched))])
        self.touched[slot] = -np.inf
        return slot

    def _evict(self, n: int, evicted: list[int] | None, protect: np.ndarray) -> None:
        """Release the ``n`` slots touched longest ago, none of ``protect``."""
        touched = self.touched[: len(self.ids)].copy()
        touched[protect] = np.inf
        touched[[s for s in self.free]] = np.inf  # already free
        n = min(n, int(np.isfinite(touched).sum()))
        if n <= 0:
            return
        # The n coldest, ties by slot (deterministic: replays evict the same items).
        if n < len(touched):
            bound = np.partition(touched, n - 1)[n - 1]
            cold = np.flatnonzero(touched <= bound)
            cold = cold[np.argsort(touched[cold], kind="stable")[:n]]
        else:
            cold = np.arange(n)
        for slot in cold[::-1].tolist():  # the free list pops from its end: coldest first
            item = self.ids[slot]
            del self.index[item]
            self.ids[slot] = None
            self.free.append(slot)
            if evicted is not None:
                evicted.append(slot)

    def release(self, item: str) -> int | None:
        """Forget ``item`` now (e.g. deleted from the catalog); returns its old slot."""
        slot = self.index.pop(item, None)
        if slot is not None:
            self.ids[slot] = None
            self.free.append(slot)
        return slot
