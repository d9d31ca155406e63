"""Merchandising rules in the batch ranker, held to a plain Python reference."""

from __future__ import annotations

import math
import random

import pytest

from models.batch_ranking import ItemCodes, RankModels, rank_batch
from models.placement import NewItems
from models.ranking import RankConfig
from models.rules import InvalidRule, RuleSet, parse_rule
from tests.test_batch_ranking import CATS, T0, _request, _world


def _facts(rng: random.Random, items: list[str]):
    price = {it: round(rng.uniform(1, 300), 2) for it in items if rng.random() < 0.9}
    attrs = {it: {"brand": f"b{rng.randrange(5)}", "eco": rng.random() < 0.3} for it in items}
    return price, {it: {k: str(v).lower() if isinstance(v, bool) else v for k, v in a.items()}
                   for it, a in attrs.items()}


def _random_rules(rng: random.Random, items: list[str]) -> list[dict]:
    rules = []
    for n in range(rng.randrange(1, 7)):
        kind = rng.choice(["boost", "block", "filter", "boost", "block"])
        match = rng.choice([
            {"category": rng.choice(CATS)},
            {"item_id": rng.sample(items, 5)},
            {"price_max": rng.uniform(100, 300)},
            {"price_min": rng.uniform(0, 50), "category": rng.sample(CATS, 3)},
            {"attributes": {"brand": [f"b{rng.randrange(5)}", f"b{rng.randrange(5)}"]}},
            {"attributes": {"eco": True}},
        ])
        if kind == "filter" and "item_id" in match:
            match = {"category": rng.sample(CATS, 4)}
        rule = {"rule_id": f"r{n}", "action": kind, "match": match}
        if kind == "boost":
            rule["factor"] = rng.choice([0.5, 1.5, 3.0, 10.0])
        rules.append(rule)
    return rules


def _plain(item: str, raw: dict, category, price, attrs) -> bool:
    """The rule records read literally, one item at a time."""
    m = raw["match"]
    if "item_id" in m and item not in m["item_id"]:
        return False
    if "category" in m and category.get(item) not in ([m["category"]] if isinstance(m["category"], str) else m["category"]):
        return False
    p = price.get(item, math.nan)
    if "price_min" in m and not p >= m["price_min"]:
        return False
    if "price_max" in m and not p <= m["price_max"]:
        return False
    for name, want in m.get("attributes", {}).items():
        want = want if isinstance(want, list) else [want]
        if attrs[item].get(name) not in [str(w).lower() if isinstance(w, bool) else w for w in want]:
            return False
    return True


@pytest.mark.parametrize("cached", [False, True], ids=["facts-read", "facts-cached"])
@pytest.mark.parametrize("seed", range(8))
def test_blocks_filters_boosts_and_pages_match_the_plain_reference(seed, cached):
    rng = random.Random(seed)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    price, attrs = _facts(rng, items)
    raws = _random_rules(rng, items)
    rules = RuleSet([parse_rule(r) for r in raws])
    inputs = [_request(rng, items, vectors, T0) for _ in range(rng.randrange(1, 30))]
    for inp in inputs:
        if rng.random() < 0.3:
            inp.page_category = rng.choice(CATS)
    # The reference ranks every candidate without rules, then applies them by hand.
    everything = RankConfig(k=10_000, diversity=0.0, new_item_slots=0)
    plain_models = RankModels(trending, category, unavailable, vectors, None, ItemCodes(5000),
                              price, attrs)
    full = rank_batch(inputs, plain_models, everything)
    models = RankModels(trending, category, unavailable, vectors, None, ItemCodes(5000),
                        price, attrs, rules, facts_version=0 if cached else None)
    k = 10
    cfg = RankConfig(k=k, diversity=0.0, new_item_slots=0)
    if cached:  # a first batch fills the per-slot cache; the second reads it
        rank_batch(inputs[::-1], models, cfg)
    got = rank_batch(inputs, models, cfg)
    for inp, whole, res in zip(inputs, full, got):
        expected = []
        for item, score in whole.items:
            if any(_plain(item, r, category, price, attrs) for r in raws if r["action"] == "block"):
                continue
            if not all(_plain(item, r, category, price, attrs) for r in raws if r["action"] == "filter"):
                continue
            if inp.page_category and category.get(item) != inp.page_category:
                continue
            rule = None
            for r in raws:
                if r["action"] == "boost" and _plain(item, r, category, price, attrs):
                    score = score * r["factor"] if score >= 0 else score / r["factor"]
                    rule = rule or r["rule_id"]
            expected.append((item, score, rule))
        expected.sort(key=lambda e: -e[1])  # stable: ties keep the ranked order
        expected = expected[:k]
        assert [i for i, _ in res.items] == [e[0] for e in expected]
        assert [s for _, s in res.items] == pytest.approx([e[1] for e in expected], rel=1e-4, abs=1e-5)
        assert [reason.get("rule") for reason in res.reasons or []] == [e[2] for e in expected]
        assert all(reason["kind"] not in ("pinned", "new") for reason in res.reasons or [])


def test_cached_verdicts_follow_new_facts_and_new_rules():
    """The per-slot verdicts are only a cache: a price learnt after a first ranking (the
    facts version does not move for a fact that was unknown) and a rule set replaced at
    run time both show in the next list."""
    rng = random.Random(3)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    inputs = [_request(rng, items, vectors, T0) for _ in range(20)]
    cfg = RankConfig(k=10_000, diversity=0.0, new_item_slots=0)
    price: dict[str, float] = {}
    cheap = RuleSet([parse_rule({"rule_id": "cheap", "action": "filter", "match": {"price_max": 100}})])
    models = RankModels(trending, category, unavailable, vectors, None, ItemCodes(5000),
                        price, {}, cheap, facts_version=0)
    listed = lambda: {i for res in rank_batch(inputs, models, cfg) for i, _ in res.items}
    assert listed() == set()  # no price known: the filter lets nothing through
    for it in items:
        price[it] = 50.0 if int(it[1:]) % 2 else 500.0
    got = listed()
    assert got and all(price[i] == 50.0 for i in got)
    models.rules = RuleSet([parse_rule({"rule_id": "no-odd", "action": "block",
                                        "match": {"item_id": sorted(got)[:3]}})])
    again = listed()
    assert not again & set(sorted(got)[:3]) and any(price[i] == 500.0 for i in again)


def test_pins_take_their_position_once_and_only_when_allowed():
    rng = random.Random(5)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    blocked = sorted(set(items) - unavailable)[0]
    bought = sorted(set(items) - unavailable)[1]
    shoes = sorted(i for i in items if category[i] == "c1" and i not in unavailable)
    gone = sorted(unavailable)[0]
    rules = RuleSet([parse_rule(r) for r in [
        {"rule_id": "p-top", "action": "pin", "item_id": shoes[0], "position": 1},
        {"rule_id": "p-c1", "action": "pin", "item_id": shoes[1], "position": 3,
         "match": {"category": "c1"}},
        {"rule_id": "p-same", "action": "pin", "item_id": shoes[2], "position": 1},
        {"rule_id": "p-gone", "action": "pin", "item_id": gone, "position": 2},
        {"rule_id": "p-blocked", "action": "pin", "item_id": blocked, "position": 2},
        {"rule_id": "p-bought", "action": "pin", "item_id": bought, "position": 2},
        {"rule_id": "b", "action": "block", "match": {"item_id": blocked}},
    ]])
    inputs = [_request(rng, items, vectors, T0) for _ in range(20)]
    for inp in inputs:
        inp.excluded = [bought]
    inputs[0].session_categories, inputs[0].categories = [("c1", 1.0)], []
    inputs[1].session_categories, inputs[1].categories, inputs[1].preferences = [("c2", 1.0)], [], None
    models = RankModels(trending, category, unavailable, vectors, None, ItemCodes(5000), rules=rules)
    for n, (inp, res) in enumerate(zip(inputs, rank_batch(inputs, models, RankConfig(k=8)))):
        listed = [i for i, _ in res.items]
        assert len(listed) == len(set(listed)) <= 8
        assert listed[0] == shoes[0] and res.reasons[0] == {"kind": "pinned", "rule": "p-top"}
        assert listed[1] == shoes[2]  # position 1 was taken by the first rule: the next one
        assert gone not in listed and blocked not in listed and bought not in listed
        if n == 0:
            assert listed[2] == shoes[1] and res.reasons[2] == {"kind": "pinned", "rule": "p-c1"}
        if n == 1:
            assert shoes[1] not in listed or res.reasons[listed.index(shoes[1])]["kind"] != "pinned"
        assert len(res.reasons) == len(res.items)


def test_a_pin_follows_its_items_facts_and_availability_between_lists():
    """What the rules say of a pinned item is cached per worker, but a price learnt later
    and an item going out of stock show in the next list."""
    rng = random.Random(6)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    pinned = sorted(set(items) - unavailable)[3]
    price: dict[str, float] = {}
    rules = RuleSet([parse_rule(r) for r in [
        {"rule_id": "pin", "action": "pin", "item_id": pinned, "position": 1},
        {"rule_id": "cheap", "action": "filter", "match": {"price_max": 100}}]])
    for it in items:
        price[it] = 10.0
    del price[pinned]
    models = RankModels(trending, category, unavailable, vectors, None, ItemCodes(5000),
                        price, {}, rules, facts_version=0)
    inputs = [_request(rng, items, vectors, T0) for _ in range(3)]
    first = lambda: [res.items[0][0] if res.items else None  # noqa: E731
                     for res in rank_batch(inputs, models, RankConfig(k=8))]
    assert pinned not in first()  # no price known: the filter keeps it out
    price[pinned] = 50.0
    assert first() == [pinned] * 3
    unavailable.add(pinned)
    assert pinned not in first()


def test_new_items_take_the_last_slot_of_lists_of_their_category():
    rng = random.Random(9)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    new = NewItems(per_category=20, window=3600.0)
    new.add("brand-new", "c3", T0 - 10)
    new.add("too-old", "c4", T0 - 7200)
    category = dict(category, **{"brand-new": "c3", "too-old": "c4"})
    inputs = [_request(rng, items, vectors, T0) for _ in range(3)]
    inputs[0].session_categories = [("c3", 2.0)]
    inputs[1].session_categories, inputs[1].categories, inputs[1].preferences = [("c4", 1.0)], [], None
    inputs[2].session_categories, inputs[2].categories = [("c3", 1.0)], []
    inputs[2].page_category = "c0"  # a page of another category: not this one
    models = RankModels(trending, category, unavailable, vectors, None, ItemCodes(5000),
                        new_items=new)
    got = rank_batch(inputs, models, RankConfig(k=6))
    assert got[0].items[-1][0] == "brand-new" and len(got[0].items) == 6
    assert got[0].reasons[-1] == {"kind": "new", "category": "c3"}
    assert "too-old" not in [i for i, _ in got[1].items]
    assert "brand-new" not in [i for i, _ in got[2].items]
    assert {category[i] for i, _ in got[2].items} == {"c0"}
    off = rank_batch(inputs[:1], models, RankConfig(k=6, new_item_slots=0))
    assert "brand-new" not in [i for i, _ in off[0].items]


@pytest.mark.parametrize(("record", "reason"), [
    ({"action": "boost"}, "rule_id:missing_or_not_string"),
    ({"rule_id": "r", "action": "promote"}, "action:unknown"),
    ({"rule_id": "r", "action": "boost", "match": {"category": "x"}}, "factor:not_number"),
    ({"rule_id": "r", "action": "boost", "match": {"category": "x"}, "factor": 0}, "factor:out_of_range"),
    ({"rule_id": "r", "action": "block"}, "match:missing"),
    ({"rule_id": "r", "action": "block", "match": {"colour": "red"}}, "match:unknown_key"),
    ({"rule_id": "r", "action": "filter", "match": {"price_min": 5, "price_max": 1}}, "match.price:empty_range"),
    ({"rule_id": "r", "action": "filter", "match": {"price_max": "cheap"}}, "match.price_max:not_number"),
    ({"rule_id": "r", "action": "pin", "position": 1}, "item_id:missing_or_not_string"),
    ({"rule_id": "r", "action": "pin", "item_id": "p", "position": 0}, "position:not_1_to_1000"),
    ({"rule_id": "r", "action": "pin", "item_id": "p", "match": {"price_max": 3}}, "match:unknown_key"),
    ([1, 2], "rule:not_object"),
])
def test_invalid_rules_say_why(record, reason):
    with pytest.raises(InvalidRule) as err:
        parse_rule(record)
    assert err.value.reason == reason


def test_a_rule_reads_back_as_the_record_it_came_from():
    raw = {"rule_id": "r4", "action": "filter",
           "match": {"price_max": 100.0, "category": ["a", "b"], "attributes": {"brand": ["x"]}}}
    assert parse_rule(raw).to_record() == raw
    pin = {"rule_id": "r2", "action": "pin", "item_id": "p9", "position": 1, "match": {"category": ["shoes"]}}
    assert parse_rule(pin).to_record() == pin
