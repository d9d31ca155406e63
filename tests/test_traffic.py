"""The synthetic shop traffic follows the contracts and has learnable structure."""

from __future__ import annotations

import collections
import itertools
import math
import re
import time

import orjson
import pytest

from workloads.traffic import TrafficConfig, generate_catalog, generate_events
from models.events import EVENT_TYPES, ITEM_REQUIRED_TYPES, validate_event
from streamrec.errors import ConfigError

START = 1_732_680_000.0
CFG = TrafficConfig(n_users=800, n_items=3000, n_categories=12, seed=11, start_ts=START)
N = 60_000


@pytest.fixture(scope="module")
def catalog() -> list[dict]:
    return generate_catalog(CFG)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return list(generate_events(CFG, N))


def item_events(events: list[dict]) -> list[dict]:
    return [e for e in events if "item_id" in e]


# --- catalog -------------------------------------------------------------------------


def test_catalog_follows_the_contract(catalog: list[dict]) -> None:
    assert len(catalog) == CFG.n_items
    assert [item["item_id"] for item in catalog] == [f"p{i}" for i in range(CFG.n_items)]
    for item in catalog:
        assert set(item) == {"item_id", "category", "tags", "price", "title", "available", "attributes"}
        assert isinstance(item["category"], str) and re.fullmatch(r"[a-z][a-z0-9-]+", item["category"])
        assert item["tags"] and all(isinstance(t, str) and t for t in item["tags"])
        assert isinstance(item["price"], float) and item["price"] > 0
        assert isinstance(item["title"], str) and item["title"]
        assert isinstance(item["available"], bool)
        assert isinstance(item["attributes"]["brand"], str) and item["attributes"]["brand"]
    assert len({item["category"] for item in catalog}) == CFG.n_categories
    unavailable = sum(not item["available"] for item in catalog) / len(catalog)
    assert 0.005 < unavailable < 0.08


def test_catalog_tags_come_from_a_per_category_vocabulary(catalog: list[dict]) -> None:
    vocab = collections.defaultdict(set)
    for item in catalog:
        vocab[item["category"]].update(item["tags"][:-1])  # the last tag is the colour
    shoes, headphones = vocab["shoes"], vocab["headphones"]
    assert 5 <= len(shoes) <= 10 and "running" in shoes
    assert not shoes & headphones


def test_catalog_is_deterministic_per_seed(catalog: list[dict]) -> None:
    assert generate_catalog(CFG) == catalog
    assert generate_catalog(TrafficConfig(n_items=3000, n_categories=12, seed=12)) != catalog


def test_more_categories_than_built_in_names_get_numbered_variants() -> None:
    items = generate_catalog(TrafficConfig(n_items=400, n_categories=70))
    names = {item["category"] for item in items}
    assert len(names) == 70 and "shoes" in names and "shoes-2" in names and "shoes-3" in names


# --- events: contract ------------------------------------------------------------------


def test_every_event_follows_the_input_contract(events: list[dict], catalog: list[dict]) -> None:
    by_id = {item["item_id"]: item for item in catalog}
    assert len(events) == N
    assert len({e["event_id"] for e in events}) == N
    for e in events:
        assert isinstance(e["event_id"], str) and isinstance(e["user_id"], str)
        assert isinstance(e["session_id"], str)
        assert isinstance(e["ts"], float) and START <= e["ts"] < START + 365 * 86_400
        assert e["type"] in EVENT_TYPES and e["type"] != "erase"
        if e["type"] in ITEM_REQUIRED_TYPES:
            assert "item_id" in e
        if "item_id" in e:
            assert e["category"] == by_id[e["item_id"]]["category"]
        context = e["context"]
        assert context["page"] and context["device"] in {"mobile", "desktop", "tablet"}
        value = e.get("value")
        assert value is None or (isinstance(value, float) and math.isfinite(value))
        match e["type"]:
            case "impression":
                assert len(context["items"]) == len(set(context["items"])) >= 2
                assert all(i in by_id for i in context["items"]) and context["rec_id"]
            case "search":
                assert isinstance(context["query"], str) and context["query"]
            case "filter":
                assert isinstance(context["facets"], dict) and context["facets"]["category"]
            case "hover" | "dwell":
                assert value > 0
            case "scroll":
                assert 0.0 <= value <= 1.0
            case "consent":
                assert value in (0.0, 1.0) and e["consent"] is (value == 1.0)
            case "rating":
                assert value in (1.0, 2.0, 3.0, 4.0, 5.0)
        # The project's own validator accepts it, also after a JSON round trip.
        parsed = validate_event(orjson.loads(orjson.dumps(e)))
        assert (parsed.event_id, parsed.ts, parsed.item_id) == (e["event_id"], e["ts"], e.get("item_id"))


def test_events_are_in_time_order_and_sessions_belong_to_one_user(events: list[dict]) -> None:
    assert all(a["ts"] <= b["ts"] for a, b in zip(events, events[1:]))
    owner: dict[str, str] = {}
    for e in events:
        assert owner.setdefault(e["session_id"], e["user_id"]) == e["user_id"]


def test_sessions_tell_a_plausible_story(events: list[dict]) -> None:
    """Clicks come from impressions that showed the item; purchases follow add-to-cart."""
    shown: dict[str, set[str]] = collections.defaultdict(set)
    carted: set[tuple[str, str]] = set()
    attributed = clicks = 0
    for e in events:
        ctx = e["context"]
        if e["type"] == "impression":
            shown[ctx["rec_id"]].update(ctx["items"])
        elif e["type"] == "click":
            clicks += 1
            if "rec_id" in ctx:
                attributed += 1
                assert e["item_id"] in shown[ctx["rec_id"]]
        elif e["type"] == "add_to_cart":
            carted.add((e["session_id"], e["item_id"]))
        elif e["type"] in ("purchase", "remove_from_cart"):
            assert (e["session_id"], e["item_id"]) in carted
    assert 0.3 < attributed / clicks < 0.9


def test_all_behaviour_types_occur_in_a_realistic_mix(events: list[dict]) -> None:
    counts = collections.Counter(e["type"] for e in events)
    assert set(counts) == EVENT_TYPES - {"erase"}
    assert counts["view"] == max(counts[t] for t in ITEM_REQUIRED_TYPES)
    assert counts["view"] > counts["click"] > counts["add_to_cart"] > counts["purchase"] > counts["rating"]
    assert counts["consent"] < 0.01 * N


def test_sessions_have_the_configured_mean_length(events: list[dict]) -> None:
    per_session = collections.Counter(e["session_id"] for e in events)
    assert 7.0 < N / len(per_session) < 9.0
    longer = list(generate_events(TrafficConfig(events_per_session_mean=16.0, start_ts=START), 40_000))
    assert 14.0 < len(longer) / len({e["session_id"] for e in longer}) < 18.0


# --- events: learnable structure -------------------------------------------------------


def test_users_concentrate_on_few_categories(events: list[dict]) -> None:
    per_user = collections.defaultdict(collections.Counter)
    for e in item_events(events):
        per_user[e["user_id"]][e["category"]] += 1
    shares = [sum(n for _, n in c.most_common(2)) / sum(c.values()) for c in per_user.values() if sum(c.values()) >= 20]
    assert len(shares) > 100
    # Two of twelve categories would hold ~1/6 of a user's events if tastes were uniform.
    assert sum(shares) / len(shares) > 0.8


def test_user_activity_is_skewed(events: list[dict]) -> None:
    per_user = sorted(collections.Counter(e["user_id"] for e in events).values(), reverse=True)
    top_decile = sum(per_user[: len(per_user) // 10]) / sum(per_user)
    assert top_decile > 0.3


def test_item_popularity_is_skewed_within_categories(events: list[dict], catalog: list[dict]) -> None:
    views = collections.Counter(e["item_id"] for e in events if e["type"] == "view")
    sizes = collections.Counter(item["category"] for item in catalog)
    category = max(sizes, key=lambda c: sum(n for i, n in views.items() if catalog[int(i[1:])]["category"] == c))
    counts = sorted((views[i["item_id"]] for i in catalog if i["category"] == category), reverse=True)
    assert sum(counts[: len(counts) // 10]) / sum(counts) > 0.4


def test_co_visitation_is_a_learnable_signal(events: list[dict]) -> None:
    """Next-item hit rate from co-visitation counts beats global popularity by far."""
    views = [e for e in events if e["type"] == "view"]
    half = len(views) // 2
    last: dict[str, str] = {}
    co = collections.defaultdict(collections.Counter)
    popular: collections.Counter = collections.Counter()
    hits_co = hits_pop = scored = 0
    for k, e in enumerate(views):
        user, item = e["user_id"], e["item_id"]
        prev = last.get(user)
        if prev is not None and prev != item:
            if k >= half:
                scored += 1
                hits_co += item in {i for i, _ in co[prev].most_common(10)}
                hits_pop += item in {i for i, _ in popular.most_common(10)}
            co[prev][item] += 1
            co[item][prev] += 1
        popular[item] += 1
        last[user] = item
    assert scored > 1000
    assert hits_co / scored > 0.15
    assert hits_co > 2 * hits_pop


# --- events: determinism, time, speed --------------------------------------------------


def test_events_are_deterministic_and_a_shorter_run_is_a_prefix(events: list[dict]) -> None:
    assert list(generate_events(CFG, 5000)) == events[:5000]
    other = list(generate_events(TrafficConfig(n_users=800, n_items=3000, n_categories=12, seed=12, start_ts=START), 500))
    assert [e["user_id"] for e in other] != [e["user_id"] for e in events[:500]]


def test_runs_with_different_start_times_have_distinct_ids() -> None:
    a = list(generate_events(TrafficConfig(start_ts=START), 100))
    b = list(generate_events(TrafficConfig(start_ts=START + 1), 100))
    assert not {e["event_id"] for e in a} & {e["event_id"] for e in b}
    assert not {e["session_id"] for e in a} & {e["session_id"] for e in b}


def test_start_defaults_to_now() -> None:
    first = next(generate_events(TrafficConfig(), 1))
    assert abs(first["ts"] - time.time()) < 3600


def test_event_rate_sets_a_flat_event_time_rate() -> None:
    evs = list(generate_events(TrafficConfig(event_rate=200.0, start_ts=START), 150_000))
    # Sessions all begin at start_ts, so the stream needs a few minutes to reach its rate.
    settled = [e["ts"] for e in evs if e["ts"] >= START + 300]
    rate = len(settled) / (settled[-1] - settled[0])
    assert 180 < rate < 220
    mid = (settled[0] + settled[-1]) / 2
    assert 0.45 < sum(t < mid for t in settled) / len(settled) < 0.55


def test_zero_events_and_bad_arguments() -> None:
    assert list(generate_events(CFG, 0)) == []
    with pytest.raises(ValueError, match="n_events"):
        list(generate_events(CFG, -1))
    with pytest.raises(ConfigError, match="n_items"):
        TrafficConfig(n_items=5, n_categories=10)
    with pytest.raises(ConfigError, match="events_per_session_mean"):
        TrafficConfig(events_per_session_mean=2.0)
    with pytest.raises(ConfigError, match="related_share"):
        TrafficConfig(related_share=1.5)


def test_generation_is_fast() -> None:
    """The benchmark needs 10^6 events quickly; >= 200k/s on a dev machine, loose here."""
    cfg = TrafficConfig(n_users=100_000, n_items=50_000, start_ts=START)
    gen = generate_events(cfg, 200_000)
    next(gen)  # catalog and user set-up are not per-event cost
    started = time.perf_counter()
    count = sum(1 for _ in itertools.islice(gen, 199_999))
    rate = count / (time.perf_counter() - started)
    assert rate > 50_000, f"{rate:,.0f} events/s"
