"""Synthetic shop traffic: a product catalog and a time-ordered stream of input events.

The traffic has the structure a recommender is meant to learn, so quality numbers on it
mean something:

- users have tastes (a Dirichlet over one to four categories) and skewed activity
  (log-normal session rates), and they come back in sessions;
- item popularity is Zipf-skewed within each category;
- each category has a hidden circular order of its items (styles, brands and tags follow
  it), and a browsing step often moves to a *related* item, a near neighbour in that
  order, so co-visitation and content similarity are real, learnable signals;
- a returning user often resumes near the item they last looked at;
- every page visit yields the micro-events a shop front end records (impression, click,
  view, hover, scroll, dwell, cart, wishlist; search and filter on the way in; purchase,
  cart removal and rating at the end of a session; now and then a consent change).

Draws are vectorised with numpy per chunk of sessions; the only per-event Python work is
building the event dict. Output depends only on the config (and on ``start_ts``, which
defaults to now), and a shorter run is a prefix of a longer one.

>>> cfg = TrafficConfig(n_users=50, n_items=200, n_categories=5, start_ts=1_732_680_000.0)
>>> items = generate_catalog(cfg)
>>> len(items), sorted(items[0])
(200, ['attributes', 'available', 'category', 'item_id', 'price', 'tags', 'title'])
>>> events = list(generate_events(cfg, 1000))
>>> len(events), all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
(1000, True)
>>> events == list(generate_events(cfg, 1000))
True
"""

from __future__ import annotations

import gc
import itertools
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from workloads.shop_catalog import TOP_N, ShopCatalog
from workloads.shoppers import Shoppers
from streamrec.errors import ConfigError

__all__ = ["TrafficConfig", "generate_catalog", "generate_events"]

_SHOWN, _MAX_VISITS, _SESSIONS_PER_CHUNK = 8, 50, 2048

# Visit modes: how a user reached an item page.
_FIRST, _RESUME, _RELATED, _BACK, _BROWSE, _SWITCH, _EXPLORE = range(7)
_CAROUSEL_OFFSETS = np.array([1, -1, 2, -2, 3, -3, 4, -4])
_CLICK_PAGE = ("home", "home", "pdp", "pdp", "plp", "plp", "plp")
# Per-visit event probabilities (view always happens).
_P_SEARCH, _P_FILTER_AFTER_SEARCH, _P_FILTER_BROWSE = 0.35, 0.3, 0.15
_P_CLICK, _P_CLICK_FIRST, _P_IMPRESSION = 0.8, 0.5, 0.6
_P_HOVER, _P_SEEN_CAROUSEL, _P_SCROLL, _P_DWELL = 0.35, 0.15, 0.4, 0.6
_P_CART, _P_WISHLIST, _P_PURCHASE, _P_REMOVE, _P_RATING = 0.06, 0.03, 0.4, 0.25, 0.15
_P_RESUME, _P_BACK = 0.3, 0.06


@dataclass(frozen=True)
class TrafficConfig:
    """Knobs of the synthetic shop. Every field has a realistic default.

    Event times start at ``start_ts`` (default: now) and advance at the simulated rate:
    ``n_users * sessions_per_user_per_day`` sessions a day with a daily cycle of
    ``diurnal_amplitude``. ``event_rate`` (events per second of event time) replaces
    that with a flat rate; set it to a replay's rate and ``start_ts`` to the replay's
    start, and event times track the wall clock (sessions all begin at ``start_ts``, so
    the rate builds up over the first few minutes and event times lag a little).
    """

    n_users: int = 1000
    n_items: int = 2000
    n_categories: int = 20
    seed: int = 7
    start_ts: float | None = None
    events_per_session_mean: float = 8.0
    sessions_per_user_per_day: float = 1.0
    event_rate: float | None = None
    user_activity_skew: float = 1.2
    item_popularity_skew: float = 1.0
    taste_categories_mean: float = 1.8
    related_share: float = 0.55
    exploration: float = 0.03
    unavailable_share: float = 0.03
    consent_share: float = 0.02
    diurnal_amplitude: float = 0.5

    def __post_init__(self) -> None:
        checks = {
            "n_users": self.n_users >= 1,
            "n_categories": self.n_categories >= 1,
            "n_items": self.n_items >= self.n_categories,
            # One page visit already makes about four events (click, view, dwell, ...).
            "events_per_session_mean": self.events_per_session_mean >= 4.0,
            "sessions_per_user_per_day": self.sessions_per_user_per_day > 0,
            "event_rate": self.event_rate is None or self.event_rate > 0,
            "taste_categories_mean": self.taste_categories_mean >= 1.0,
            "related_share": 0.0 <= self.related_share <= 1.0 - _P_BACK,
            "exploration": 0.0 <= self.exploration <= 1.0,
            "unavailable_share": 0.0 <= self.unavailable_share <= 1.0,
            "consent_share": 0.0 <= self.consent_share <= 1.0,
            "diurnal_amplitude": 0.0 <= self.diurnal_amplitude < 1.0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            msg = f"TrafficConfig: invalid {', '.join(bad)} in {self!r}"
            raise ConfigError(msg)


def generate_catalog(cfg: TrafficConfig) -> list[dict]:
    """The catalog of ``cfg``, one dict per item in the catalog contract, ordered by item id."""
    return ShopCatalog(cfg).records()


def _later_mode_shares(cfg: TrafficConfig) -> tuple[float, float, float, float]:
    """Shares of (related, back, browse, switch-or-explore) for visits after the first."""
    rest = 1.0 - cfg.related_share - _P_BACK
    entry = rest * (cfg.exploration + 0.4 * (1.0 - cfg.exploration))
    return cfg.related_share, _P_BACK, rest - entry, entry


def _mean_visits(cfg: TrafficConfig) -> float:
    """Mean page visits per session that give ``events_per_session_mean`` events."""
    _, _, browse, entry = _later_mode_shares(cfg)
    per_visit = 1 + _P_HOVER + _P_SEEN_CAROUSEL + _P_SCROLL + _P_DWELL + _P_WISHLIST
    cart = _P_CART * (1.0 - cfg.unavailable_share)
    per_visit += cart * (1 + _P_PURCHASE * (1 + _P_RATING) + (1 - _P_PURCHASE) * _P_REMOVE)

    def events(m: float) -> float:
        first_entry = 1.0 - 0.7 * _P_RESUME  # about 70% of sessions belong to returning users
        search = (first_entry + (m - 1) * entry) * _P_SEARCH
        filters = search * _P_FILTER_AFTER_SEARCH + (m - 1) * browse * _P_FILTER_BROWSE
        first_click = first_entry * _P_SEARCH * _P_CLICK + (1 - first_entry * _P_SEARCH) * _P_CLICK_FIRST
        clicks = first_click + (m - 1) * _P_CLICK
        return cfg.consent_share + search + filters + clicks * (1 + _P_IMPRESSION) + m * per_visit

    slope = events(2.0) - events(1.0)
    return max(1.0, 1.0 + (cfg.events_per_session_mean - events(1.0)) / slope)


def _step_offsets(rng: np.random.Generator, size: int) -> np.ndarray:
    """Signed distances to a related item: mostly the nearest neighbours."""
    return rng.geometric(0.45, size) * rng.choice(np.array([-1, 1]), size)


class _Chunk:
    """Events of one batch of sessions: rounded times, tie-break keys and event dicts."""

    def __init__(self, gen: "_Generator", starts: np.ndarray, users: np.ndarray, visits: np.ndarray) -> None:
        self.gen, self.ts, self.keys, self.events = gen, [], [], []
        sid0 = gen.sessions
        self.session_ids = [f"s{gen.run}-{k}" for k in range(sid0, sid0 + len(starts))]
        gen.sessions += len(starts)
        self.starts, self.users, self.visits = starts, users, visits

    def add(self, etype: str, vids: np.ndarray, ts: np.ndarray, slot: int, sess: np.ndarray,
            items: np.ndarray | None, pages: list[str] | str, values: np.ndarray | None = None) -> list[dict]:
        """Append events of one type; ``vids`` are chunk visit indices (tie-break order)."""
        gen, t = self.gen, np.round(ts, 3)
        users = self.users[sess].tolist()
        page_of = itertools.repeat(pages) if isinstance(pages, str) else pages
        uid, dev, sids = gen.users.ids, gen.users.device, self.session_ids
        iid, icat = gen.catalog.item_ids, gen.catalog.item_category
        rows = zip(t.tolist(), users, sess.tolist(), page_of)
        # One comprehension per shape: building the dicts is the hot path of the generator.
        if items is None:
            base = [
                {"event_id": "", "ts": a, "user_id": uid[u], "session_id": sids[s], "type": etype,
                 "context": {"page": p, "device": dev[u]}}
                for a, u, s, p in rows
            ]
            if values is not None:
                for ev, v in zip(base, values.tolist()):
                    ev["value"] = v
        elif values is None:
            base = [
                {"event_id": "", "ts": a, "user_id": uid[u], "session_id": sids[s], "type": etype,
                 "item_id": iid[i], "category": icat[i], "context": {"page": p, "device": dev[u]}}
                for (a, u, s, p), i in zip(rows, items.tolist())
            ]
        else:
            base = [
                {"event_id": "", "ts": a, "user_id": uid[u], "session_id": sids[s], "type": etype,
                 "item_id": iid[i], "category": icat[i], "value": v, "context": {"page": p, "device": dev[u]}}
                for (a, u, s, p), i, v in zip(rows, items.tolist(), values.tolist())
            ]
        self.ts.append(t)
        self.keys.append((gen.visit_base + vids) * 16 + slot)
        self.events.append(base)
        return base


class _Generator:
    def __init__(self, cfg: TrafficConfig) -> None:
        self.cfg = cfg
        self.catalog = ShopCatalog(cfg)
        self.rng = np.random.default_rng([cfg.seed, 2])
        self.users = Shoppers(cfg, self.catalog, self.rng)
        self.start = time.time() if cfg.start_ts is None else float(cfg.start_ts)
        self.run = f"{zlib.crc32(f'{cfg.seed}:{self.start!r}'.encode()):08x}"
        self.mean_visits = _mean_visits(cfg)
        if cfg.event_rate is not None:
            self.session_rate = cfg.event_rate / cfg.events_per_session_mean
        else:
            self.session_rate = cfg.n_users * cfg.sessions_per_user_per_day / 86_400.0
        self.cat_cdf = np.cumsum(self.catalog.cat_weight)
        self.clock, self.sessions, self.visit_base = self.start, 0, 0

    def any_category(self, size: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cat_cdf, self.rng.random(size) * self.cat_cdf[-1]), len(self.cat_cdf) - 1)

    def chunk(self) -> tuple[np.ndarray, np.ndarray, list[dict], float]:
        """Sessions starting in the next stretch of time, and the end of that stretch."""
        cfg, rng, cat = self.cfg, self.rng, self.catalog
        # A set event_rate is flat, so event times can track a replay's wall clock.
        amp = 0.0 if cfg.event_rate is not None else cfg.diurnal_amplitude
        arrivals = self.clock + np.cumsum(rng.exponential(1.0 / (self.session_rate * (1 + amp)), _SESSIONS_PER_CHUNK))
        # Thinning gives a daily cycle peaking at 20:00 UTC with the configured mean rate.
        keep = rng.random(len(arrivals)) * (1 + amp) < 1 + amp * np.cos(2 * np.pi * (arrivals / 86_400.0 - 20 / 24))
        horizon = float(arrivals[-1])
        self.clock = horizon
        starts = arrivals[keep]
        n_sess = len(starts)
        if n_sess == 0:  # a deep diurnal trough can thin out a whole chunk
            return np.empty(0), np.empty(0, np.int64), [], horizon
        users = self.users.pick(rng, n_sess)
        extra = rng.gamma(1.5, max(self.mean_visits - 1.0, 1e-9) / 1.5, n_sess)
        visits = np.minimum(1 + rng.poisson(extra), _MAX_VISITS)
        ch = _Chunk(self, starts, users, visits)
        offs = np.concatenate([[0], np.cumsum(visits)[:-1]]).astype(np.int64)
        n_vis = int(visits.sum())
        item = np.zeros(n_vis, np.int64)
        mode = np.zeros(n_vis, np.int64)
        # Random walk over items, one step for all active sessions at a time.
        last = self.users.last_item[users]
        resume = (last >= 0) & (rng.random(n_sess) < _P_RESUME)
        explore = rng.random(n_sess) < cfg.exploration
        cats = np.where(explore, self.any_category(n_sess), self.users.taste(rng, users))
        revisit = rng.random(n_sess) < 0.4
        near_last = cat.related(np.maximum(last, 0), _step_offsets(rng, n_sess) * ~revisit)
        item[offs] = np.where(resume, near_last, cat.popular(rng, cats))
        mode[offs] = np.where(resume, _RESUME, np.where(explore, _EXPLORE, _FIRST))
        related, back, browse, _ = _later_mode_shares(cfg)
        for step in range(1, int(visits.max())):
            act = np.flatnonzero(visits > step)
            at = offs[act] + step
            n = len(act)
            prev = item[at - 1]
            prev2 = item[at - 2] if step >= 2 else prev
            r = rng.random(n)
            wander = rng.random(n) < cfg.exploration
            new_cat = np.where(wander, self.any_category(n), self.users.taste(rng, users[act]))
            is_back = (r >= related) & (r < related + back) & (step >= 2)
            is_browse = (r >= related) & (r < related + back + browse) & ~is_back
            m = np.where(r < related, _RELATED, np.where(is_back, _BACK, np.where(is_browse, _BROWSE,
                         np.where(wander, _EXPLORE, _SWITCH))))
            mode[at] = m
            item[at] = np.select(
                [m == _RELATED, m == _BACK, m == _BROWSE],
                [cat.related(prev, _step_offsets(rng, n)), prev2, cat.popular(rng, cat.item_cat[prev])],
                cat.popular(rng, new_cat),
            )
        sess = np.repeat(np.arange(n_sess), visits)
        self.users.last_item[users] = item[offs + visits - 1]
        self._visit_events(ch, sess, item, mode, offs)
        self.visit_base += n_vis
        ts = np.concatenate(ch.ts)
        keys = np.concatenate(ch.keys)
        events = [ev for part in ch.events for ev in part]
        return ts, keys, events, horizon

    def _shown_lists(self, vids: np.ndarray, anchors: np.ndarray, carousel: np.ndarray,
                     target: np.ndarray | None) -> tuple[list[list[str]], np.ndarray]:
        """Item lists shown on a page: neighbours of an anchor item (a pdp carousel) or a
        shuffled category best-seller listing; ``target`` (the item clicked next) is put
        at a position-biased slot. Returns the lists and the target slots."""
        rng, cat, k = self.rng, self.catalog, len(vids)
        near = cat.related(np.repeat(anchors, _SHOWN), np.tile(_CAROUSEL_OFFSETS, k)).reshape(k, _SHOWN)
        pick = np.argsort(rng.random((k, TOP_N)), axis=1)[:, :_SHOWN]
        listing = cat.cat_top[cat.item_cat[anchors]][np.arange(k)[:, None], pick]
        shown = np.where(carousel[:, None], near, listing)
        pos = np.minimum(rng.geometric(0.3, k) - 1, _SHOWN - 1)
        if target is not None:
            rows = np.arange(k)
            hit = shown == target[:, None]
            has = hit.any(axis=1)
            shown[rows[has], hit.argmax(axis=1)[has]] = shown[rows[has], pos[has]]
            shown[rows, pos] = target
        iid = cat.item_ids
        return [[iid[i] for i in row] for row in shown.tolist()], pos

    def _visit_events(self, ch: _Chunk, sess: np.ndarray, item: np.ndarray, mode: np.ndarray, offs: np.ndarray) -> None:
        cfg, rng, cat, n = self.cfg, self.rng, self.catalog, len(item)
        vids = np.arange(n)
        step = vids - offs[sess]
        entry = (mode == _FIRST) | (mode == _SWITCH) | (mode == _EXPLORE)
        search = entry & (rng.random(n) < _P_SEARCH)
        filters = (search & (rng.random(n) < _P_FILTER_AFTER_SEARCH)) | (
            (mode == _BROWSE) & (rng.random(n) < _P_FILTER_BROWSE)
        )
        click = rng.random(n) < np.where((step == 0) & ~search, _P_CLICK_FIRST, _P_CLICK)
        shown = click & (rng.random(n) < _P_IMPRESSION)
        gap = np.clip(rng.lognormal(np.log(6.0), 0.8, n), 1.0, 600.0) + search * rng.lognormal(np.log(15.0), 0.5, n)
        dwell = np.clip(rng.lognormal(np.log(25.0), 0.9, n), 2.0, 1200.0)
        before = np.cumsum(gap + dwell) - (gap + dwell)
        view = ch.starts[sess] + before - before[offs][sess] + gap
        leave = view + dwell
        click_page = np.where(search, "search", np.array(_CLICK_PAGE)[mode]).tolist()
        run, rec_base = self.run, self.visit_base

        n_sess = len(ch.starts)
        who = np.flatnonzero(rng.random(n_sess) < cfg.consent_share)
        granted = rng.random(len(who)) < 0.9
        evs = ch.add("consent", offs[who], ch.starts[who], 0, who, None, "privacy", granted.astype(float))
        for ev, g in zip(evs, granted.tolist()):
            ev["consent"] = g

        idx = np.flatnonzero(search)
        for ev, i in zip(ch.add("search", idx, view[idx] - 0.9 * gap[idx], 1, sess[idx], None, "search"), item[idx].tolist()):
            ev["context"]["query"] = cat.query[i]
        idx = np.flatnonzero(filters)
        price_max = (np.ceil(cat.price[item[idx]] / 25.0) * 25.0).tolist()
        evs = ch.add("filter", idx, view[idx] - 0.7 * gap[idx], 2, sess[idx], None, "plp")
        for ev, i, pm in zip(evs, item[idx].tolist(), price_max):
            ev["category"] = cat.item_category[i]
            ev["context"]["facets"] = {"category": cat.item_category[i], "colour": cat.colour[i], "price_max": pm}

        idx = np.flatnonzero(shown)
        anchors = np.where(mode[idx] == _RELATED, item[np.maximum(idx - 1, 0)], item[idx])
        lists, slots = self._shown_lists(idx, anchors, mode[idx] == _RELATED, item[idx])
        pages = [click_page[i] for i in idx.tolist()]
        evs = ch.add("impression", idx, view[idx] - 0.4 * gap[idx], 3, sess[idx], None, pages)
        attribution = {}
        for ev, shown_items, v, slot in zip(evs, lists, idx.tolist(), slots.tolist()):
            rec_id = f"r{run}-{rec_base + v}"
            ev["context"]["items"], ev["context"]["rec_id"] = shown_items, rec_id
            attribution[v] = (rec_id, slot)
        idx = np.flatnonzero(click)
        pages = [click_page[i] for i in idx.tolist()]
        for ev, v in zip(ch.add("click", idx, view[idx] - 0.1 * gap[idx], 4, sess[idx], item[idx], pages), idx.tolist()):
            if v in attribution:
                ev["context"]["rec_id"], ev["context"]["position"] = attribution[v]

        ch.add("view", vids, view, 5, sess, item, "pdp")
        idx = np.flatnonzero(rng.random(n) < _P_HOVER)
        hover_ms = np.round(np.clip(rng.lognormal(np.log(900.0), 0.8, len(idx)), 50.0, 30_000.0))
        ts = view[idx] + dwell[idx] * rng.uniform(0.01, 0.2, len(idx))
        ch.add("hover", idx, ts, 6, sess[idx], item[idx], "pdp", hover_ms)
        idx = np.flatnonzero(rng.random(n) < _P_SEEN_CAROUSEL)
        lists, _ = self._shown_lists(idx, item[idx], np.ones(len(idx), bool), None)
        for ev, shown_items, v in zip(ch.add("impression", idx, view[idx] + 0.25 * dwell[idx], 7, sess[idx], None, "pdp"),
                                      lists, idx.tolist()):
            ev["context"]["items"] = shown_items
            ev["context"]["rec_id"] = f"r{run}-{rec_base + v}c"
        idx = np.flatnonzero(rng.random(n) < _P_SCROLL)
        depth = np.round(rng.beta(2.0, 1.5, len(idx)), 2)
        ch.add("scroll", idx, view[idx] + dwell[idx] * rng.uniform(0.3, 0.5, len(idx)), 8, sess[idx], item[idx], "pdp", depth)
        carted = np.flatnonzero((rng.random(n) < _P_CART) & cat.available[item])
        for ev, i in zip(ch.add("add_to_cart", carted, view[carted] + 0.65 * dwell[carted], 9, sess[carted],
                                item[carted], "pdp"), item[carted].tolist()):
            ev["context"]["quantity"], ev["context"]["price"] = 1, float(cat.price[i])
        idx = np.flatnonzero(rng.random(n) < _P_WISHLIST)
        ch.add("wishlist", idx, view[idx] + 0.8 * dwell[idx], 10, sess[idx], item[idx], "pdp")
        idx = np.flatnonzero(rng.random(n) < _P_DWELL)
        ch.add("dwell", idx, leave[idx], 11, sess[idx], item[idx], "pdp", np.round(dwell[idx] * 1000.0))

        # End of session: checkout of part of the cart, removal of some of the rest, ratings.
        checkout = leave[offs + ch.visits - 1][sess[carted]] + 2.0 * step[carted]
        bought = rng.random(len(carted)) < _P_PURCHASE
        gone = ~bought & (rng.random(len(carted)) < _P_REMOVE)
        ch.add("remove_from_cart", carted[gone], checkout[gone] + 5.0, 12, sess[carted[gone]], item[carted[gone]], "cart")
        idx = carted[bought]
        evs = ch.add("purchase", idx, checkout[bought] + 120.0, 13, sess[idx], item[idx], "checkout")
        for ev, i, s in zip(evs, item[idx].tolist(), sess[idx].tolist()):
            ev["context"].update(quantity=1, price=float(cat.price[i]), order_id="o" + ch.session_ids[s][1:])
        rated = rng.random(len(idx)) < _P_RATING
        stars = rng.choice(np.arange(1.0, 6.0), int(rated.sum()), p=[0.05, 0.05, 0.15, 0.35, 0.4])
        ch.add("rating", idx[rated], checkout[bought][rated] + 300.0, 14, sess[idx[rated]], item[idx[rated]], "account", stars)


def generate_events(cfg: TrafficConfig, n_events: int) -> Iterator[dict]:
    """Yield ``n_events`` input events in time order (ties keep session order).

    Event and session ids embed a run tag derived from the seed and the start time, so
    two runs with different start times never collide in a dedupe window.
    """
    if n_events < 0:
        msg = f"generate_events: n_events must be >= 0, got {n_events}"
        raise ValueError(msg)
    gen = _Generator(cfg)
    pending_ts, pending_keys, pending = np.empty(0), np.empty(0, np.int64), []
    produced = 0
    while produced < n_events:
        # The chunk allocates ~10^4 acyclic dicts; cyclic GC passes over them (and over
        # whatever the caller keeps) cost a third of the run. Off only inside this call.
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            ts, keys, events, horizon = gen.chunk()
        finally:
            if was_enabled:
                gc.enable()
        ts = np.concatenate([pending_ts, ts])
        keys = np.concatenate([pending_keys, keys])
        events = pending + events
        order = np.lexsort((keys, ts))
        # Every later session starts after the horizon, so events before it are final.
        cut = int(np.searchsorted(ts[order], round(horizon, 3), side="left"))
        for i in order[: min(cut, n_events - produced)].tolist():
            ev = events[i]
            ev["event_id"] = f"e{gen.run}-{produced}"
            produced += 1
            yield ev
        rest = order[cut:]
        pending_ts, pending_keys, pending = ts[rest], keys[rest], [events[i] for i in rest.tolist()]
