"""The synthetic shop's users (``workloads.traffic``): who comes, how often, with what taste.

Activity is log-normal (a few users make most of the sessions); a taste is a Dirichlet
share over one to four categories, picked with the categories' popularity as odds; a
device per user. The generator also keeps here the item each user looked at last, where
a returning user often resumes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from workloads.shop_catalog import ShopCatalog

if TYPE_CHECKING:
    from workloads.traffic import TrafficConfig

__all__ = ["Shoppers"]

_DEVICES = ("mobile", "desktop", "tablet")


class Shoppers:
    """Per-user traits (activity, tastes, device) and the item each user saw last."""

    def __init__(self, cfg: TrafficConfig, catalog: ShopCatalog, rng: np.random.Generator) -> None:
        n, nc = cfg.n_users, cfg.n_categories
        activity = rng.lognormal(0.0, cfg.user_activity_skew, n)
        self.cdf = np.cumsum(activity) / activity.sum()
        self.cdf[-1] = 1.0
        width = min(4, nc)
        k = np.minimum(1 + rng.poisson(cfg.taste_categories_mean - 1.0, n), width)
        gumbel = np.log(catalog.cat_weight) + rng.gumbel(size=(n, nc))
        self.taste_cats = np.argsort(-gumbel, axis=1)[:, :width]
        share = rng.gamma(1.0, size=(n, width)) * (np.arange(width)[None, :] < k[:, None])
        self.taste_cdf = np.cumsum(share, axis=1) / share.sum(axis=1, keepdims=True)
        self.taste_cdf[np.arange(width)[None, :] >= k[:, None] - 1] = 1.0
        self.device = [_DEVICES[d] for d in rng.choice(3, n, p=[0.6, 0.33, 0.07]).tolist()]
        self.ids = [f"u{i}" for i in range(n)]
        self.last_item = np.full(n, -1, np.int64)

    def pick(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Users for ``size`` new sessions, skewed by activity."""
        return np.minimum(np.searchsorted(self.cdf, rng.random(size), side="right"), len(self.cdf) - 1)

    def taste(self, rng: np.random.Generator, users: np.ndarray) -> np.ndarray:
        slot = (rng.random(len(users))[:, None] > self.taste_cdf[users]).sum(axis=1)
        return self.taste_cats[users, slot]
