"""Simulated shoppers for the closed-loop simulator (``streamrec simulate``): latent
tastes, position bias and a purchase funnel. No I/O here: the runner sends what a
shopper does to Kafka and shows them the list the pipeline wrote to Redis.

A shopper has a taste over categories (Dirichlet, concentrated on a few) and a preferred
style; an item has a category, a style, a quality and a price. The appeal of an item
to a shopper is ``taste[category] * quality * (1 if the style matches else 0.4)``.

One step of a session: the shopper looks at the top ``visible`` items of their list,
position k examined with probability ``k ** -position_decay``; an examined item is
clicked with probability ``min(1, click_scale * appeal)`` (the first click wins). A
click leads to an add to cart with probability ``cart_rate``, and a cart to a purchase
with probability ``buy_rate``. Without a click the shopper browses on by themselves (a
view of an item drawn from their taste, popular items more often) with probability
``1 - leave_rate``, else the session ends; a session also ends after ``max_steps``.

>>> world = World(SimConfig(n_users=4, n_items=40, seed=1))
>>> world.first_view(0)["type"], len(world.catalog)
('view', 40)
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

__all__ = ["SimConfig", "World", "Step"]


@dataclass(frozen=True)
class SimConfig:
    n_users: int = 240
    n_items: int = 400
    n_categories: int = 8
    n_styles: int = 3
    seed: int = 0
    visible: int = 10  # items of a list on screen
    position_decay: float = 1.0
    click_scale: float = 0.35
    cart_rate: float = 0.35
    buy_rate: float = 0.5
    leave_rate: float = 0.25
    max_steps: int = 12
    taste_concentration: float = 0.3


@dataclass
class Step:
    """What a shopper did with one list: the events to send and what happened."""

    events: list[dict]
    clicked: str | None = None
    position: int = 0
    bought: float = 0.0  # revenue
    carted: bool = False
    ended: bool = False


class World:
    """The catalog and the shoppers of one simulation run."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        rng = self.rng = np.random.default_rng(cfg.seed)
        n, c = cfg.n_items, cfg.n_categories
        self.item_cat = rng.integers(0, c, n)
        self.item_style = rng.integers(0, cfg.n_styles, n)
        self.quality = rng.beta(2.0, 2.0, n)
        self.price = np.round(rng.lognormal(3.0, 0.6, n), 2)
        self.items = [f"sku{i}" for i in range(n)]
        self.index = {it: i for i, it in enumerate(self.items)}
        self.taste = rng.dirichlet(np.full(c, cfg.taste_concentration), cfg.n_users)
        self.style = rng.integers(0, cfg.n_styles, cfg.n_users)
        self.users = [f"shopper-{cfg.seed}-{u}" for u in range(cfg.n_users)]
        self.catalog = [{"item_id": it, "category": f"cat{self.item_cat[i]}",
                         "price": float(self.price[i]), "available": True,
                         "attributes": {"style": f"s{self.item_style[i]}"}}
                        for i, it in enumerate(self.items)]
        self._n = 0
        self.session = np.zeros(cfg.n_users, np.int64)  # sessions started, per shopper

    def appeal(self, user: int, items: np.ndarray) -> np.ndarray:
        match = np.where(self.item_style[items] == self.style[user], 1.0, 0.4)
        return self.taste[user, self.item_cat[items]] * self.quality[items] * match

    def _event(self, user: int, etype: str, item: int | None = None, **extra) -> dict:
        self._n += 1
        e = {"event_id": f"sim{self.cfg.seed}-{self._n}", "ts": time.time(),
             "user_id": self.users[user], "type": etype,
             "session_id": f"{self.users[user]}-s{self.session[user]}"}
        if item is not None:
            e["item_id"] = self.items[item]
            e["category"] = f"cat{self.item_cat[item]}"
        e.update(extra)
        return e

    def _browse(self, user: int) -> int:
        """An item the shopper finds by themselves: a category by taste, then an item of
        it by quality (the good ones are found more often)."""
        cat = self.rng.choice(self.cfg.n_categories, p=self.taste[user])
        pool = np.flatnonzero(self.item_cat == cat)
        w = self.quality[pool] ** 2
        return int(self.rng.choice(pool, p=w / w.sum()))

    def first_view(self, user: int) -> dict:
        """The first event of a new session."""
        self.session[user] += 1
        return self._event(user, "view", self._browse(user))

    def react(self, user: int, items: list[str], rec_id: str | None, step: int) -> Step:
        """The shopper sees ``items`` (best first) of list ``rec_id``."""
        shown = [self.index[i] for i in items[: self.cfg.visible] if i in self.index]
        context = {"items": [self.items[i] for i in shown]}
        if rec_id:
            context["rec_id"] = rec_id
        events = [self._event(user, "impression", context=context)] if shown else []
        out = Step(events)
        if shown:
            arr = np.array(shown)
            k = np.arange(1, len(arr) + 1)
            examined = self.rng.random(len(arr)) < k ** -self.cfg.position_decay
            clicks = examined & (self.rng.random(len(arr)) < np.minimum(1.0, self.cfg.click_scale
                                                                        * self.appeal(user, arr)))
            hit = np.flatnonzero(clicks)
            if len(hit):
                at = int(hit[0])
                item = int(arr[at])
                ctx = {"rec_id": rec_id} if rec_id else {}
                out.clicked, out.position = self.items[item], at + 1
                events.append(self._event(user, "click", item, context=ctx))
                if self.rng.random() < self.cfg.cart_rate:
                    out.carted = True
                    events.append(self._event(user, "add_to_cart", item, context=ctx))
                    if self.rng.random() < self.cfg.buy_rate:
                        out.bought = float(self.price[item])
                        events.append(self._event(user, "purchase", item, value=out.bought,
                                                  context=ctx))
                out.ended = step + 1 >= self.cfg.max_steps
                return out
        if step + 1 >= self.cfg.max_steps or self.rng.random() < self.cfg.leave_rate:
            out.ended = True
        else:
            events.append(self._event(user, "view", self._browse(user)))
        return out

    def random_list(self, k: int) -> list[str]:
        """The no-model baseline: items drawn uniformly from the catalog."""
        return [self.items[i] for i in self.rng.choice(len(self.items), size=k, replace=False)]
