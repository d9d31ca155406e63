"""The hybrid blend: one weight per signal, learned online from what users do next.

Each list is scored as ``X @ w`` where a row of ``X`` holds a candidate's signal values
(see ``models.ranking.FEATURES``). When the user's next item event arrives, the item they
chose is a positive and the candidates ranked above it (or the top ones) are negatives; a
pairwise logistic (BPR) step moves ``w`` so the chosen item would have ranked higher.
The weights start at a prior (the hand-set blend), so a new system ranks sensibly before
it has seen any feedback, and they can drift apart per site: on a shop where people
re-find items the ``session`` weight grows; where nobody repeats (ratings) the ``seen``
weight goes negative.

A hand-written numpy learner rather than ``river.linear_model.LogisticRegression``:
river's model cannot start from per-feature prior weights through its public API, and a
pairwise loss optimises the ranking directly.

>>> b = OnlineBlend(np.array([1.0, 0.0]), learning_rate=0.5)
>>> for _ in range(3000):
...     b.learn(np.array([0.0, 1.0]), np.array([[1.0, 0.0]]))
>>> bool(b.weights[1] > b.weights[0])
True
"""

from __future__ import annotations

import bisect
import copy

import numpy as np

__all__ = ["ContextBlend", "OnlineBlend"]


class OnlineBlend:
    __slots__ = ("prior", "raw", "weights", "learning_rate", "l2", "smoothing", "updates")

    def __init__(self, prior: np.ndarray, learning_rate: float = 0.05, l2: float = 1e-3,
                 smoothing: float = 0.002) -> None:
        self.prior = np.asarray(prior, dtype=np.float64).copy()
        self.raw = self.prior.copy()  # the SGD iterate: noisy, one step per feedback
        self.weights = self.prior.copy()  # what ranks: an exponential average of ``raw``
        self.learning_rate = learning_rate
        self.l2 = l2
        self.smoothing = smoothing
        self.updates = 0

    def __getstate__(self):
        return tuple(getattr(self, s) for s in self.__slots__)

    def __setstate__(self, state):
        for s, v in zip(self.__slots__, state):
            setattr(self, s, v)

    def score(self, features: np.ndarray) -> np.ndarray:
        return features @ self.weights

    def learn(self, positive: np.ndarray, negatives: np.ndarray) -> None:
        """One pairwise step: ``positive`` (F,) should outscore each row of ``negatives``."""
        if len(negatives) == 0:
            return
        diff = positive[None, :] - negatives  # (n, F)
        margin = diff @ self.raw
        # d/dw of -log(sigmoid(margin)), averaged over the pairs
        coeff = 1.0 / (1.0 + np.exp(np.clip(margin, -30.0, 30.0)))
        grad = (coeff[:, None] * diff).mean(axis=0)
        # L2 pulls towards the prior, not towards zero: no feedback keeps the prior.
        self.raw += self.learning_rate * (grad - self.l2 * (self.raw - self.prior))
        # Averaging the iterates keeps one user's odd choice from swinging every list.
        self.weights += self.smoothing * (self.raw - self.weights)
        self.updates += 1


class ContextBlend:
    """One :class:`OnlineBlend` per context: how far the current session has got.

    What predicts the next item changes along a session: on its first item the user's
    history and co-visitation carry the list, later the session itself (re-finding,
    neighbour sessions). A single linear blend has to average these; one blend per
    session-length band learns each balance. Bands are upper bounds on the number of
    session items: ``(1, 3)`` gives the contexts 1 item, 2-3 items, 4 or more.

    >>> cb = ContextBlend(np.array([1.0, 0.0]), bands=(1, 3))
    >>> [cb.context(n) for n in (0, 1, 2, 3, 4, 20)]
    [0, 0, 1, 1, 2, 2]
    >>> for _ in range(3000):
    ...     cb[2].learn(np.array([0.0, 1.0]), np.array([[1.0, 0.0]]))
    >>> bool(cb[2].weights[1] > cb[2].weights[0]), bool(cb[0].weights[1] > cb[0].weights[0])
    (True, False)
    """

    __slots__ = ("bands", "blends")

    def __init__(self, prior: np.ndarray, learning_rate: float = 0.05,
                 bands: tuple[int, ...] = (1, 3)) -> None:
        self.bands = tuple(bands)
        self.blends = [OnlineBlend(prior, learning_rate) for _ in range(len(self.bands) + 1)]

    @classmethod
    def from_single(cls, blend: OnlineBlend, bands: tuple[int, ...] = (1, 3)) -> "ContextBlend":
        """Every context starts from what one shared blend has learned (old snapshots)."""
        out = cls(blend.prior, blend.learning_rate, bands)
        out.blends = [copy.deepcopy(blend) for _ in out.blends]
        return out

    def __getstate__(self):
        return (self.bands, self.blends)

    def __setstate__(self, state):
        self.bands, self.blends = state

    def context(self, session_items: int) -> int:
        return bisect.bisect_left(self.bands, session_items)

    def __getitem__(self, context: int) -> OnlineBlend:
        return self.blends[context]

    def __len__(self) -> int:
        return len(self.blends)

    @property
    def updates(self) -> int:
        return sum(b.updates for b in self.blends)

