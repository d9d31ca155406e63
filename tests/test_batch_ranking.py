"""Batch ranking gives the lists of the per-request reference (``models.ranking.rank``)."""

from __future__ import annotations

import copy
import pickle
import random

import numpy as np
import pytest

from models.batch_ranking import ItemCodes, RankModels, rank_batch
from models.blend import ContextBlend
from models.content import VectorIndex, item_vector
from models.mf import ImplicitMF
from models.ranking import RankConfig, RankInput, SeenFilter, prior_weights, rank
from models.trending import Trending

T0 = 1_732_680_000.0
CATS = [f"c{i}" for i in range(6)]


def _world(rng: random.Random, n_items: int = 400):
    items = [f"p{i}" for i in range(n_items)]
    category = {it: rng.choice(CATS) for it in items}
    trending = Trending(3600.0)
    vectors = VectorIndex(capacity=300, search_window=128)
    for it in rng.sample(items, 250):
        trending.observe(it, category[it], rng.uniform(0.1, 50.0), T0 - rng.uniform(0, 600))
        tags = [f"t{rng.randrange(20)}" for _ in range(rng.randrange(0, 3))]
        vectors.put(it, item_vector(category[it], tags, {"brand": rng.randrange(5)}))
    for seg in ("f-20", "m-30"):
        for it in rng.sample(items, 40):
            trending.observe_segment(seg, it, rng.uniform(0.1, 5.0), T0 - rng.uniform(0, 600))
    mf = ImplicitMF(max_users=100, max_items=1000)
    for _ in range(300):
        mf.learn(f"u{rng.randrange(10)}", rng.choice(items), rng.sample(items, 2))
    unavailable = set(rng.sample(items, 10))
    return items, category, trending, vectors, mf, unavailable


def _request(rng: random.Random, items: list[str], vectors: VectorIndex, ts: float) -> RankInput:
    def pairs(n):
        return [(it, rng.uniform(0.01, 1.0)) for it in rng.sample(items, n)]

    seen = rng.sample(items, rng.randrange(0, 8))
    bits = None
    if rng.random() < 0.6:
        bits = SeenFilter.empty()
        for it in rng.sample(items, rng.randrange(1, 30)):
            SeenFilter.add(bits, it)
        bits = bytes(bits)
    anchors = [(0.5**i, pairs(rng.randrange(0, 40))) for i in range(rng.randrange(0, 4))]
    content = None
    if rng.random() < 0.7 and seen:
        from models.content import user_vector
        content = user_vector([(1.0, vectors.get(it).astype(np.float16).tobytes())
                               for it in seen if vectors.get(it) is not None])
    return RankInput(
        ts=ts,
        anchors=anchors,
        knn=[(0.5**i, pairs(rng.randrange(0, 20))) for i in range(rng.randrange(0, 3))],
        categories=[(c, rng.uniform(0.1, 3.0)) for c in rng.sample(CATS, rng.randrange(0, 4))],
        session_categories=[(c, rng.uniform(0.1, 2.0)) for c in rng.sample(CATS, rng.randrange(0, 3))],
        preferences=rng.sample(CATS, 2) if rng.random() < 0.3 else None,
        segment=rng.choice([None, "f-20", "m-30", "x-99"]),
        seen=seen,
        excluded=rng.sample(items, rng.randrange(0, 4)),
        seen_filter=bits,
        cold=rng.random() < 0.2,
        content=content,
        user_id=f"u{rng.randrange(15)}",
        history=rng.randrange(0, 30),
    )


CONFIGS = [
    RankConfig(k=20, diversity=0.01),
    RankConfig(k=10, diversity=0.0),
    RankConfig(k=10, diversity=0.3, max_per_category=2),
    RankConfig(k=15, repeat_policy="demote", w_seen=0.4),
    RankConfig(k=12, repeat_policy="exclude", diversity=0.1),
    RankConfig(k=5, max_per_category=1),
]


@pytest.mark.parametrize("cached", [False, True], ids=["facts-read", "facts-cached"])
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: f"k{c.k}-{c.repeat_policy}-d{c.diversity}-cap{c.max_per_category}")
def test_batch_gives_the_reference_lists(seed, cfg, cached):
    rng = random.Random(seed)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    category.update({items[j]: "" for j in range(0, len(items), 37)})  # empty: no category
    blend = ContextBlend(prior_weights(cfg))
    for context in range(len(blend)):  # learned, unequal weights per context
        blend[context].weights = blend[context].weights + np.array(
            [rng.uniform(-0.2, 0.5) for _ in range(len(blend[context].weights))])
    inputs = [_request(rng, items, vectors, T0) for _ in range(rng.randrange(1, 40))]
    contexts = [blend.context(len(inp.seen)) for inp in inputs]
    expected = [rank(inp, trending, category, unavailable, cfg, blend[c], vectors, mf)
                for inp, c in zip(inputs, contexts)]
    # Cached: catalog facts (categories for rules and diversity) kept per item slot while
    # the facts' version stays; the second batch reads them from the cache.
    models = RankModels(trending, category, unavailable, vectors, mf, ItemCodes(5000),
                        facts_version="v1" if cached else None)
    weights = np.stack([b.weights for b in blend.blends])
    frozen = pickle.dumps((inputs, trending, vectors, mf))
    got = rank_batch(inputs, models, cfg, weights, contexts)
    if cached:
        again = rank_batch(inputs, models, cfg, weights, contexts)
        assert [r.items for r in again] == [r.items for r in got]
    assert pickle.dumps((inputs, trending, vectors, mf)) == frozen  # nothing mutated
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert [i for i, _ in g.items] == [i for i, _ in e.items]
        assert [s for _, s in g.items] == pytest.approx([s for _, s in e.items], abs=1e-6)
        assert g.strategy == e.strategy
        assert g.candidates == e.candidates
        np.testing.assert_allclose(g.features, e.features, rtol=1e-6, atol=1e-7)


def test_batch_with_nothing_known_gives_empty_lists_and_handles_no_requests():
    models = RankModels(Trending(3600.0))
    got = rank_batch([RankInput(ts=T0), RankInput(ts=T0, seen=[])], models, RankConfig())
    assert [r.items for r in got] == [[], []] and {r.strategy for r in got} == {"empty"}
    assert rank_batch([], models, RankConfig()) == []


def test_a_small_vocabulary_evicts_and_still_ranks_like_the_reference():
    rng = random.Random(11)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    cfg = RankConfig(k=10, diversity=0.05)
    models = RankModels(trending, category, unavailable, vectors, mf, ItemCodes(600))
    for round_ in range(30):  # more distinct items over time than the vocabulary holds
        more = [f"q{round_}-{i}" for i in range(60)]
        inputs = [_request(rng, items, vectors, T0)
                  for _ in range(3)] + [RankInput(ts=T0, anchors=[(1.0, [(m, 1.0 / (1 + j)) for j, m in enumerate(more)])])]
        expected = [rank(inp, trending, category, unavailable, cfg, None, vectors, mf)
                    for inp in inputs]
        got = rank_batch(inputs, models, cfg)
        assert [[i for i, _ in r.items] for r in got] == [[i for i, _ in r.items] for r in expected]
    assert len(models.codes.vocab) <= 600
    copy.deepcopy(models)  # picklable state: no clients, no lambdas


def test_every_listed_item_has_a_reason_naming_what_proposed_it():
    rng = random.Random(21)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    cfg = RankConfig(k=20, diversity=0.01)
    models = RankModels(trending, category, unavailable, vectors, mf, ItemCodes(5000))
    inputs = [_request(rng, items, vectors, T0) for _ in range(30)]
    for inp in inputs:
        inp.anchor_items = [f"anchor{i}" for i in range(len(inp.anchors))]
    kinds = set()
    for inp, res in zip(inputs, rank_batch(inputs, models, cfg)):
        assert len(res.reasons) == len(res.items)
        for (item, _), reason in zip(res.items, res.reasons):
            kinds.add(reason["kind"])
            if reason["kind"] == "covis" and "because" in reason:
                anchor = int(reason["because"].removeprefix("anchor"))
                assert item in dict(inp.anchors[anchor][1])  # that anchor's follower
            if reason["kind"] == "category":
                assert reason["category"] in {c for c, _ in inp.categories + inp.session_categories} | set(inp.preferences or [])
    assert {"covis", "category"} <= kinds


def test_reasons_name_the_strongest_anchor():
    t = Trending(3600.0)
    inp = RankInput(ts=T0, anchors=[(1.0, [("x", 0.2), ("y", 0.9)]), (0.5, [("x", 0.9)])],
                    anchor_items=["p-new", "p-old"])
    (res,) = rank_batch([inp], RankModels(t), RankConfig(k=2))
    reasons = dict(zip([i for i, _ in res.items], res.reasons))
    assert reasons["y"] == {"kind": "covis", "because": "p-new"}
    # x: 1/1.5 * 0.2 from p-new against 0.5/1.5 * 0.9 from p-old
    assert reasons["x"] == {"kind": "covis", "because": "p-old"}


def test_a_category_forgotten_for_room_is_not_served_from_the_fact_cache():
    """The worker keeps a bounded table of item categories; the per-slot cache that
    diversity and rules read must not outlive an entry dropped from it."""
    from operators.worker_models import WorkerModels

    shared = WorkerModels(3600.0, 100, 10, max_item_categories=3)
    for item, cat, pop in [("p1", "a", 9.0), ("p2", "a", 8.0), ("p3", "b", 7.0), ("p4", "c", 6.0)]:
        shared.trending.observe(item, cat, pop, T0)
    for item, cat in [("p1", "a"), ("p2", "a"), ("p3", "b")]:
        shared.learn_category(item, cat)
    cfg = RankConfig(k=4, max_per_category=1)
    codes = ItemCodes(100)
    inp = RankInput(ts=T0)

    def lists():
        models = RankModels(shared.trending, shared.item_category, set(), codes=codes,
                            facts_version=(shared.facts_owner, shared.facts_version))
        got = [i for i, _ in rank_batch([inp], models, cfg)[0].items]
        want = [i for i, _ in rank(inp, shared.trending, shared.item_category, set(), cfg).items]
        return got, want

    got, want = lists()  # fills the cache: p1 and p2 share category a
    assert got == want and "p2" not in got
    shared.learn_category("p4", "c")  # no room: p1's category is dropped
    assert "p1" not in shared.item_category
    got, want = lists()
    assert got == want and {"p1", "p2"} <= set(got)


@pytest.mark.parametrize("seed", range(5))
def test_requests_of_several_shards_in_one_call_get_their_own_shards_lists(seed):
    """A worker ranks its rank shards' requests in one call: each request with its own
    shard's blend rows, factor model and answer vectors gets the list a call for its
    shard alone gives."""
    rng = random.Random(100 + seed)
    cfg = CONFIGS[seed % len(CONFIGS)]
    items, category, trending, vectors, _, unavailable = _world(rng)
    shards = []
    for s in range(3):
        mf = ImplicitMF(max_users=100, max_items=1000)
        for _ in range(200):
            mf.learn(f"u{rng.randrange(15)}", rng.choice(items), rng.sample(items, 2))
        local = VectorIndex(capacity=64, search_window=0)
        for it in rng.sample(items, 40):  # vectors of the shard's answers: their own tags
            local.put(it, item_vector(category[it], [f"s{s}-{rng.randrange(4)}"], None))
        blend = ContextBlend(prior_weights(cfg))
        for context in range(len(blend)):
            blend[context].weights = blend[context].weights + np.array(
                [rng.uniform(-0.3, 0.6) for _ in range(len(blend[context].weights))])
        weights = np.stack([b.weights for b in blend.blends])
        inputs = [_request(rng, items, vectors, T0) for _ in range(rng.randrange(1, 12))]
        contexts = [blend.context(len(inp.seen)) for inp in inputs]
        shards.append((mf, local if s != 1 else None, weights, inputs, contexts))

    def models(**kw):
        return RankModels(trending, category, unavailable, vectors, codes=ItemCodes(5000), **kw)

    alone = []
    for mf, local, weights, inputs, contexts in shards:
        alone += rank_batch(inputs, models(mf=mf, local_vectors=local), cfg, weights, contexts)
    table = np.concatenate([w for _, _, w, _, _ in shards])
    rows, mf_of, local_of, inputs = [], [], [], []
    offset = 0
    for mf, local, weights, shard_inputs, contexts in shards:
        rows += [offset + c for c in contexts]
        offset += len(weights)
        mf_of += [mf] * len(shard_inputs)
        local_of += [local] * len(shard_inputs)
        inputs += shard_inputs
    together = rank_batch(inputs, models(mf_of=mf_of, local_of=local_of), cfg, table, rows)
    assert len(together) == len(alone)
    for t, a in zip(together, alone):
        assert t.items == a.items and t.strategy == a.strategy and t.reasons == a.reasons
        assert t.candidates == a.candidates
        np.testing.assert_array_equal(t.features, a.features)
    # The shards really differ: their own models change lists.
    swapped = rank_batch(inputs, models(mf_of=mf_of[::-1], local_of=local_of[::-1]), cfg, table, rows)
    assert [r.candidates for r in swapped] != [r.candidates for r in together]
