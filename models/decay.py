"""Exponential time decay in event time, with forward decay for bounded counters.

A weight observed at time ``t`` is worth ``exp(-ln2 * (now - t) / half_life)`` at ``now``.
Forward decay stores ``w * exp(ln2 * (t - landmark) / half_life)`` instead, so adding a new
observation never touches the old ones; reading divides by the same factor at ``now``.
The landmark moves forward (one pass over the entries) only when the factors would grow
too large for floats.

>>> c = DecayedCounter(half_life=10.0, capacity=3)
>>> c.add("a", 1.0, ts=0.0); c.add("b", 1.0, ts=10.0)
>>> round(c.value("a", ts=10.0), 3), round(c.value("b", ts=10.0), 3)
(0.5, 1.0)
>>> [k for k, _ in c.top(2, ts=10.0)]
['b', 'a']
"""

from __future__ import annotations

import heapq
import math

__all__ = ["LN2", "decayed_weight", "DecayedCounter", "DecayedScalar"]

LN2 = math.log(2.0)
# Rebase the landmark when scale factors pass e**40 (~2e17): far from float overflow,
# and rare (every 40 / ln2 ~ 58 half-lives).
_REBASE_EXPONENT = 40.0


def _read_factor(ts: float, landmark: float, half_life: float) -> float:
    """Factor that reads a forward-decayed weight at ``ts``. A read far before the
    landmark (an event weeks older than the newest one) is capped as if ~58 half-lives
    earlier, instead of overflowing: such a weight is noise next to the recent ones.

    >>> _read_factor(0.0, 1e9, 3600.0) == math.exp(_REBASE_EXPONENT)
    True
    """
    return math.exp(min(-LN2 * (ts - landmark) / half_life, _REBASE_EXPONENT))


def decayed_weight(age: float, half_life: float) -> float:
    """Weight of an observation ``age`` seconds old.

    >>> decayed_weight(3600.0, 3600.0)
    0.5
    """
    return math.exp(min(-LN2 * age / half_life, _REBASE_EXPONENT))


class DecayedScalar:
    """One forward-decayed sum (e.g. an item's popularity)."""

    __slots__ = ("half_life", "landmark", "scaled")

    def __init__(self, half_life: float, landmark: float | None = None) -> None:
        self.half_life = half_life
        self.landmark = landmark
        self.scaled = 0.0

    def add(self, weight: float, ts: float) -> None:
        if self.landmark is None:
            self.landmark = ts
        exponent = LN2 * (ts - self.landmark) / self.half_life
        if exponent > _REBASE_EXPONENT:
            self.scaled *= math.exp(-exponent)
            self.landmark = ts
            exponent = 0.0
        self.scaled += weight * math.exp(exponent)

    def value(self, ts: float) -> float:
        if self.landmark is None:
            return 0.0
        return self.scaled * _read_factor(ts, self.landmark, self.half_life)

    def __getstate__(self):
        return (self.half_life, self.landmark, self.scaled)

    def __setstate__(self, state):
        self.half_life, self.landmark, self.scaled = state


class DecayedCounter:
    """Forward-decayed weights per key, bounded to ``capacity`` keys.

    When the key count passes ``capacity * 1.25`` the weakest keys are dropped down to
    ``capacity``: amortised O(1) per add, and memory stays bounded.
    """

    __slots__ = ("half_life", "capacity", "landmark", "weights", "_top")

    def __init__(self, half_life: float, capacity: int) -> None:
        self.half_life = half_life
        self.capacity = capacity
        self.landmark: float | None = None
        self.weights: dict[str, float] = {}
        # Decay scales every stored weight alike, so the order of the keys only changes
        # on writes: the sorted head is cached, and a write moves one key within it (or
        # leaves it alone when the key stays below it) instead of a new sort of all keys.
        self._top: tuple[int, list[tuple[str, float]], set[str]] | None = None

    def _scale(self, ts: float) -> float:
        if self.landmark is None:
            self.landmark = ts
        exponent = LN2 * (ts - self.landmark) / self.half_life
        if exponent > _REBASE_EXPONENT:
            factor = math.exp(-exponent)
            self.weights = {k: v * factor for k, v in self.weights.items()}
            self.landmark = ts
            self._top = None
            exponent = 0.0
        return math.exp(exponent)

    def add(self, key: str, weight: float, ts: float) -> None:
        scale = self._scale(ts)  # first: a landmark move replaces the dict
        weights = self.weights
        old = weights.get(key)
        new = weights[key] = (0.0 if old is None else old) + weight * scale
        if self._top is not None:
            self._written(key, new, old is None)
        if len(weights) > self.capacity + (self.capacity >> 2) + 1:
            self._prune()

    def set(self, key: str, value: float, ts: float) -> None:
        """Store ``value`` as the key's weight as of ``ts``."""
        scale = self._scale(ts)  # first: a landmark move replaces the dict
        fresh = key not in self.weights
        new = self.weights[key] = value * scale
        if self._top is not None:
            self._written(key, new, fresh)
        if len(self.weights) > self.capacity + (self.capacity >> 2) + 1:
            self._prune()

    def _written(self, key: str, new: float, fresh: bool = False) -> None:
        """Keep the cached head sorted after ``key``'s stored weight became ``new``
        (``fresh``: the key was not in the dict before).

        Equal weights are ordered by key insertion (as ``heapq.nlargest`` over the dict
        leaves them), which a single move cannot know: a tie drops the cache instead,
        except for a fresh key, which comes last among its equals.
        """
        n, best, members = self._top
        if len(best) < n and key not in members:
            # The head holds every key of positive weight (there were fewer than n): a
            # small counter, as most categories' are. It stays whole.
            if new <= 0.0:
                return  # it stays out, as nlargest's filter leaves it
            if not fresh:
                self._top = None  # back from zero: its place among equals is unknown
                return
            i = len(best)
            while i > 0 and best[i - 1][1] < new:
                i -= 1
            best.insert(i, (key, new))
            members.add(key)
            return
        if key in members:
            i = next(i for i, kv in enumerate(best) if kv[0] == key)
            if new < best[i][1] or new <= 0.0:
                self._top = None  # it may fall below keys outside the head: sort again
                return
            while i > 0 and best[i - 1][1] < new:
                best[i] = best[i - 1]
                i -= 1
            best[i] = (key, new)
        elif len(best) < n or new == best[-1][1]:
            self._top = None  # room in the head, or a tie at its end: sort again
            return
        elif new > best[-1][1]:
            members.discard(best.pop()[0])
            i = len(best)
            while i > 0 and best[i - 1][1] < new:
                i -= 1
            best.insert(i, (key, new))
            members.add(key)
        else:
            return
        if (i > 0 and best[i - 1][1] == new) or (i + 1 < len(best) and best[i + 1][1] == new):
            self._top = None

    def _prune(self) -> None:
        keep = heapq.nlargest(self.capacity, self.weights.items(), key=_weight)
        self.weights = dict(keep)
        self._top = None

    def value(self, key: str, ts: float) -> float:
        scaled = self.weights.get(key)
        if scaled is None:
            return 0.0
        return scaled * self.factor(ts)

    def factor(self, ts: float) -> float:
        """Multiply a stored weight by this to read it at ``ts``."""
        if self.landmark is None:
            return 0.0
        return _read_factor(ts, self.landmark, self.half_life)

    def top(self, n: int, ts: float) -> list[tuple[str, float]]:
        """The ``n`` heaviest keys with their weights at ``ts``, heaviest first."""
        if not self.weights:
            return []
        factor = self.factor(ts)
        cached = self._top
        if cached is not None and cached[0] >= n:
            best = cached[1][:n]
        else:
            best = [kv for kv in heapq.nlargest(n, self.weights.items(), key=_weight) if kv[1] > 0.0]
            self._top = (n, best, {k for k, _ in best})
        return [(k, v * factor) for k, v in best]

    def total(self, ts: float) -> float:
        return sum(self.weights.values()) * self.factor(ts)

    def remove(self, key: str) -> None:
        if self.weights.pop(key, None) is not None:
            self._top = None

    def __len__(self) -> int:
        return len(self.weights)

    def __contains__(self, key: str) -> bool:
        return key in self.weights

    def __getstate__(self):
        return (self.half_life, self.capacity, self.landmark, self.weights)

    def __setstate__(self, state):
        self.half_life, self.capacity, self.landmark, self.weights = state
        self._top = None

    def copy(self) -> "DecayedCounter":
        c = DecayedCounter(self.half_life, self.capacity)
        c.landmark = self.landmark
        c.weights = dict(self.weights)
        return c


def _weight(kv: tuple[str, float]) -> float:
    return kv[1]
