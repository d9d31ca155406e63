"""Contract tests for the item-side and ranking model classes: pickle after learning,
reads do not mutate, memory stays bounded as data grows (the user-side models, decay and
the event contract are in tests/test_models.py)."""

from __future__ import annotations

import copy
import pickle

import pytest

from models.covisitation import ItemState
from models.ranking import RankConfig, RankInput, rank
from models.trending import Trending

T0 = 1_732_680_000.0


def test_item_state_bounded_and_pickles():
    s = ItemState("p0")
    for i in range(5000):
        s.learn_followers([(f"p{i}", 1.0)], T0 + i, 3600.0, 50)
        s.learn_event("c", 1.0, T0 + i, 3600.0)
    assert len(s.neighbours) <= 63
    again = pickle.loads(pickle.dumps(s))
    assert again.followers(10, T0 + 5000) == s.followers(10, T0 + 5000)
    assert sum(w for _, w in s.followers(10, T0 + 5000)) == pytest.approx(1.0, abs=1e-4)


def test_trending_bounded_across_many_categories():
    t = Trending(3600.0, capacity=50, per_category=10, max_categories=20)
    for i in range(10_000):
        t.observe(f"p{i}", f"c{i % 500}", 1.0 + i % 7, T0)
        t.observe_segment(f"s{i % 100}", f"p{i}", 1.0, T0)
    assert len(t.by_category) <= 20 and len(t.by_segment) <= 20
    assert len(t.overall) <= 63
    pickle.loads(pickle.dumps(t))


def test_rank_does_not_mutate_inputs_and_applies_rules():
    t = Trending(3600.0)
    for i in range(30):
        t.observe(f"p{i}", "c1" if i % 2 else "c2", float(i), T0)
    inp = RankInput(ts=T0, anchors=[(1.0, [("p1", 0.5), ("p2", 0.3), ("gone", 0.2)])],
                    seen=["p2"], excluded=["p1"])
    frozen = copy.deepcopy(inp)
    snap = pickle.dumps(t)
    result = rank(inp, t, {"p2": "c2"}, {"gone"}, RankConfig(k=10))
    items, strategy = result.items, result.strategy
    ids = [i for i, _ in items]
    assert "p1" not in ids and "gone" not in ids and len(ids) == 10
    assert strategy == "covis"
    assert pickle.dumps(t) == snap and inp == frozen
    only = rank(inp, t, {}, {"gone"}, RankConfig(k=10, repeat_policy="exclude")).items
    assert "p2" not in [i for i, _ in only]


def test_diversity_spreads_categories():
    t = Trending(3600.0)
    anchors = [(1.0, [(f"a{i}", 1.0 - i * 0.01) for i in range(8)] + [("b0", 0.85)])]
    cats = {**{f"a{i}": "A" for i in range(10)}, "b0": "B"}
    plain = rank(RankInput(ts=T0, anchors=anchors), t, cats, set(), RankConfig(k=5, diversity=0.0)).items
    mixed = rank(RankInput(ts=T0, anchors=anchors), t, cats, set(), RankConfig(k=5, diversity=0.5)).items
    assert "b0" not in [i for i, _ in plain]
    assert "b0" in [i for i, _ in mixed]


def test_blend_learns_from_feedback_and_pickles():
    import numpy as np

    from models.blend import OnlineBlend
    from models.ranking import FEATURES, prior_weights

    blend = OnlineBlend(prior_weights(RankConfig()), learning_rate=0.2)
    session, seen = FEATURES.index("session"), FEATURES.index("seen")
    chosen = np.zeros(len(FEATURES)); chosen[seen] = 1.0  # users keep choosing seen items
    other = np.zeros(len(FEATURES)); other[0] = 0.5
    for _ in range(200):
        blend.learn(chosen, other[None, :])
    assert blend.weights[seen] > 0.5
    again = pickle.loads(pickle.dumps(blend))
    assert np.array_equal(again.weights, blend.weights)
    # no feedback: stays at the prior
    fresh = OnlineBlend(prior_weights(RankConfig()))
    fresh.learn(chosen, np.zeros((0, len(FEATURES))))
    assert np.array_equal(fresh.weights, prior_weights(RankConfig())) and session == 1


def test_seen_filter_has_few_false_positives():
    from models.ranking import SeenFilter

    bits = SeenFilter.empty()
    for i in range(250):
        SeenFilter.add(bits, f"seen-{i}")
    assert all(SeenFilter.contains(bits, f"seen-{i}") for i in range(250))
    false = sum(SeenFilter.contains(bits, f"other-{i}") for i in range(10_000))
    assert false < 100  # < 1%


def test_vector_index_is_bounded_pickles_and_finds_similar_items():
    from models.content import VectorIndex, item_vector, user_vector

    index = VectorIndex(capacity=50)
    for i in range(500):
        index.put(f"p{i}", item_vector(f"c{i % 7}", [f"t{i % 11}"], None))
    assert len(index) == 50 and index.matrix.shape[0] <= 128
    again = pickle.loads(pickle.dumps(index))
    user = user_vector([(1.0, item_vector("c3", ["t5"], None))])
    assert again.nearest(user, 5) == index.nearest(user, 5)
    top_item = index.nearest(user, 1)[0][0]
    assert int(top_item[1:]) % 7 == 3 or int(top_item[1:]) % 11 == 5


def test_vector_index_searches_only_its_window_of_recent_items():
    from models.content import VectorIndex, item_vector, user_vector

    index = VectorIndex(capacity=40, search_window=8)
    hats = item_vector("hats", None, None)
    for i in range(100):  # hats first, then shoes: the window holds only recent shoes
        index.put(f"h{i}" if i < 50 else f"s{i}", hats if i < 50 else item_vector("shoes", None, None))
    user = user_vector([(1.0, hats)])
    assert index.nearest(user, 5) == []  # hats are indexed (some) but not recent
    assert index.cosine(user, ["h49", "s99"]).tolist() == [0.0, 0.0]  # h49 went round
    index.put("h7", hats)  # put again: recent, found
    assert [i for i, _ in index.nearest(user, 5)] == ["h7"]
    # Whatever the index forgets, the window forgets too: 40 more shoes push h7 out.
    for i in range(100, 140):
        index.put(f"s{i}", item_vector("shoes", None, None))
    assert index.get("h7") is None and index.nearest(user, 5) == []
    index.put("h8", hats)
    again = pickle.loads(pickle.dumps(index))
    shoes = user_vector([(1.0, item_vector("shoes", None, None))])
    for u in (user, shoes):
        assert again.nearest(u, 10) == index.nearest(u, 10)
    assert len(index.nearest(shoes, 10)) == 7  # 8 recent: h8 and the 7 shoes before it
    # Restored under other settings: the window follows them, from the last insertions.
    again.set_search_window(0)
    assert len(again.nearest(shoes, 100)) == 39 and again.recent is None
    again.set_search_window(3)
    assert [i for i, _ in again.nearest(shoes, 10)] == ["s138", "s139"]  # and h8
    assert [i for i, _ in again.nearest(user, 10)] == ["h8"]


def test_session_neighbours_contract():
    """Session-kNN store: pickles after learning, votes do not mutate it, bounded."""
    import pickle as _pickle

    from models.sessionknn import SessionNeighbours

    s = SessionNeighbours()
    for key in range(1, 500):
        s.add(key, [f"i{key % 7}", f"i{key % 11}", f"j{key}"], capacity=40, max_items=2)
    assert len(s) == 40
    assert all(len(items) <= 2 for items in s.sessions.values())
    before = dict(s.sessions)
    votes = s.votes({"i3": 1.0, "i5": 0.5}, exclude=0, k=10, n=5)
    assert s.sessions == before
    assert votes and abs(sum(w for _, w in votes) - 1.0) < 1e-4
    assert all(item not in ("i3", "i5") for item, _ in votes)  # the asker's items: not votes
    assert _pickle.loads(_pickle.dumps(s)).votes({"i3": 1.0, "i5": 0.5}, 0, 10, 5) == votes
    # the asking session itself never votes
    own = SessionNeighbours()
    own.add(99, ["x"], capacity=5, max_items=5)
    assert own.votes({"y": 1.0}, exclude=99, k=5, n=5) == []


def test_context_blend_contract():
    # Each context learns apart; pickles after learning; reading does not mutate; its size
    # does not grow with feedback (fixed number of fixed-width weight vectors).
    import numpy as np

    from models.blend import ContextBlend, OnlineBlend
    from models.ranking import FEATURES, prior_weights

    blend = ContextBlend(prior_weights(RankConfig()), learning_rate=0.2)
    seen = FEATURES.index("seen")
    chosen = np.zeros(len(FEATURES)); chosen[seen] = 1.0
    other = np.zeros(len(FEATURES)); other[0] = 0.5
    size = len(pickle.dumps(blend))
    for _ in range(300):
        blend[blend.context(7)].learn(chosen, other[None, :])
    late, first = blend[blend.context(7)], blend[blend.context(1)]
    assert late.weights[seen] > 0.5 and first.weights[seen] == prior_weights(RankConfig())[seen]
    before = [b.weights.copy() for b in blend.blends]
    blend[2].score(np.ones((3, len(FEATURES))))
    assert all(np.array_equal(a, b.weights) for a, b in zip(before, blend.blends))
    again = pickle.loads(pickle.dumps(blend))
    assert all(np.array_equal(a.weights, b.weights) for a, b in zip(again.blends, blend.blends))
    assert len(pickle.dumps(blend)) <= size + 64  # bounded: only an update counter grows
    # An old single blend becomes every context's starting point.
    old = OnlineBlend(prior_weights(RankConfig()))
    old.learn(chosen, other[None, :])
    restored = ContextBlend.from_single(old)
    assert all(np.array_equal(b.weights, old.weights) for b in restored.blends)
    restored[0].learn(chosen, other[None, :])
    assert not np.array_equal(restored[0].weights, restored[1].weights)


def test_partial_sorts_give_the_head_of_a_full_stable_sort():
    # Ranking and content recall take the best n by a partition then a stable sort of
    # what passes the bound: the same items, in the same order (ties by position), as
    # sorting everything, also when thousands of values tie.
    import numpy as np

    from models.content import DIM, VectorIndex
    from models.ranking import _best_first

    rng = np.random.default_rng(3)
    for values in (rng.random(500), rng.integers(0, 4, 500).astype(float), np.zeros(7)):
        for n in (1, 5, 80, 499, 500, 600):
            want = np.argsort(-values, kind="stable")[:n]
            assert np.array_equal(_best_first(values, n), want)
    index = VectorIndex(capacity=5000, search_window=0)
    rows = rng.integers(0, 3, (3000, DIM)).astype(np.float16)  # few distinct similarities
    for i, row in enumerate(rows):
        index.put(f"p{i}", row.tobytes())
    user = np.ones(DIM, dtype=np.float32) / DIM**0.5
    sims = index.matrix[:3000] @ user
    pos = np.flatnonzero(sims > 0)
    want = [f"p{i}" for i in pos[np.argsort(-sims[pos], kind="stable")][:30]]
    assert [item for item, _ in index.nearest(user, 30)] == want


def test_many_fresh_ids_cannot_pump_one_item():
    from operators.item_step import FRESH_SEQ, ItemLogic, ItemStepConfig
    from operators.messages import ItemQuery
    from streamrec.metrics import GUARDED

    before = GUARDED.totals().get("fresh_id_flood", 0)
    logic = ItemLogic(ItemStepConfig(max_fresh_per_minute=50), None)
    made_up = [ItemQuery("p1", f"bot{i}", 1, T0 + i * 0.1, "rank-0", 0.0, [], 1.0, "c")
               for i in range(200)]
    logic.on_batch(made_up)
    assert logic.state.popularity_at(T0 + 20) == pytest.approx(50.0, rel=0.01)
    assert GUARDED.totals()["fresh_id_flood"] - before == 150
    # Users past their first events count in full, and so do fresh ids a minute later.
    known = [ItemQuery("p1", f"u{i}", FRESH_SEQ + 1, T0 + 30, "rank-0", 0.0, [], 1.0, "c")
             for i in range(100)]
    logic.on_batch(known + [ItemQuery("p1", "late", 1, T0 + 90, "rank-0", 0.0, [], 1.0, "c")])
    assert logic.state.popularity_at(T0 + 30) > 140
