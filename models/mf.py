"""Online matrix factorisation for users with long histories (river's FunkMF).

Implicit feedback: the item a user chose is a positive (1), items shown above it that
they passed over are negatives (0). Scores are read only for a short candidate list and
only for users and items the model already knows: ``FunkMF.predict_one`` on an unseen
id would add it, so reads go through the latent tables with ``dict.get``. Users and
items are bounded (oldest first out).

>>> mf = ImplicitMF(n_factors=4, max_users=10, max_items=10, seed=1)
>>> for _ in range(300):
...     mf.learn("u1", "good", ["bad"])
>>> s = mf.scores("u1", ["good", "bad", "never-seen"])
>>> bool(s[0] > s[1]), float(s[2]), mf.knows("stranger")
(True, 0.0, False)
"""

from __future__ import annotations

from itertools import compress, repeat
from operator import is_not

import numpy as np
from river import optim, reco

__all__ = ["ImplicitMF"]


class ImplicitMF:
    __slots__ = ("model", "max_users", "max_items", "updates")

    def __init__(self, n_factors: int = 16, learning_rate: float = 0.05, l2: float = 0.01,
                 max_users: int = 50_000, max_items: int = 50_000, seed: int = 7) -> None:
        self.model = reco.FunkMF(
            n_factors=n_factors,
            optimizer=optim.SGD(learning_rate),
            l2=l2,
            initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=seed),
            seed=seed,
        )
        self.max_users = max_users
        self.max_items = max_items
        self.updates = 0

    def __getstate__(self):
        return (self.model, self.max_users, self.max_items, self.updates)

    def __setstate__(self, state):
        self.model, self.max_users, self.max_items, self.updates = state

    def knows(self, user: str) -> bool:
        return user in self.model.u_latents

    def learn(self, user: str, chosen: str, passed_over: list[str]) -> None:
        model = self.model
        model.learn_one(user, chosen, 1.0)
        for item in passed_over:
            if item != chosen:
                model.learn_one(user, item, 0.0)
        self.updates += 1
        self._bound(model.u_latents, self.max_users)
        self._bound(model.i_latents, self.max_items)

    @staticmethod
    def _bound(table: dict, limit: int) -> None:
        while len(table) > limit:
            del table[next(iter(table))]

    def forget(self, user: str) -> None:
        self.model.u_latents.pop(user, None)

    def scores(self, user: str, items: list[str]) -> np.ndarray:
        """Predicted affinity of ``user`` for each item (0 where either is unknown)."""
        out = np.zeros(len(items))
        u = self.model.u_latents.get(user)
        if u is None:
            return out
        vecs = list(map(self.model.i_latents.get, items))
        known = list(map(is_not, vecs, repeat(None)))
        if any(known):
            # One product for the whole list (the rows and the sums of a product per item).
            out[np.flatnonzero(known)] = np.stack(list(compress(vecs, known))) @ u
        return out
