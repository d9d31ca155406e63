"""Item ids as dense slots, and what a ranker caches per slot.

>>> codes = ItemCodes(capacity=8)
>>> codes.slots(["p1", "p2", "p1"], ts=0.0).tolist()
[0, 1, 0]
>>> codes.bloom_positions(codes.slots(["p1"], ts=1.0)).shape
(1, 3)
"""

from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np

from models.rule_columns import FactCache
from models.vocabulary import ItemVocabulary

__all__ = ["ItemCodes"]


class ItemCodes:
    """Item ids as dense slots of a bounded :class:`ItemVocabulary`, with what is cached
    per slot: the three Bloom-filter bit positions of the item (a pure function of its
    id, as :class:`models.ranking.SeenFilter`; -1: not computed yet).

    Only a cache: which slot an item gets never changes a list, so a worker keeps one
    for all its rankings and recovery need not restore it.
    """

    __slots__ = ("vocab", "bloom", "facts")

    def __init__(self, capacity: int = 200_000) -> None:
        self.vocab = ItemVocabulary(capacity)
        self.bloom = np.full((0, 3), -1, dtype=np.int32)
        self.facts = FactCache()  # catalog facts per slot, for rules

    def slots(self, items: Sequence[str], ts: float) -> np.ndarray:
        """Slots of ``items``; evicted slots forget their cached bit positions."""
        evicted: list[int] = []
        slots = self.vocab.encode(items, ts, evicted)
        size = self.vocab.size
        if len(self.bloom) < size:
            grow = max(size, 2 * len(self.bloom), 256)
            extra = np.full((grow - len(self.bloom), 3), -1, dtype=np.int32)
            self.bloom = np.concatenate([self.bloom, extra])
        if evicted:
            self.bloom[evicted] = -1
            self.facts.evict(evicted)
        return slots

    def bloom_positions(self, slots: np.ndarray) -> np.ndarray:
        """The ``(n, 3)`` Bloom bit positions of ``slots`` (computed once per item)."""
        pos = self.bloom[slots]
        todo = np.flatnonzero(pos[:, 0] < 0)
        if len(todo):
            ids = self.vocab.ids
            for row in todo.tolist():
                raw = ids[int(slots[row])].encode()
                h = zlib.crc32(raw)
                pos[row] = (h & 0xFFF, (h >> 12) & 0xFFF, zlib.adler32(raw) & 0xFFF)
            self.bloom[slots[todo]] = pos[todo]
        return pos
