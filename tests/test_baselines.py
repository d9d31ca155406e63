"""Online baselines: hand-computed rankings and the generic model contract."""

import pickle
import random

import pytest

from evaluation.baseline_runs import run_baselines
from evaluation.baselines import VSKNN, DecayedPopularity, SequentialRules, default_baselines
from evaluation.metrics import NextItemScorer

MODELS = [DecayedPopularity, SequentialRules, VSKNN]


def _click(ts, user, item, session=None, **extra):
    event = {"event_id": f"{user}-{ts}", "ts": float(ts), "user_id": user, "type": "click", "item_id": item}
    if session is not None:
        event["session_id"] = session
    event.update(extra)
    return event


def _learn_all(model, events):
    for event in events:
        model.learn(event)
    return model


def _session(user, items, start=0.0, session=None):
    return [_click(start + i, user, item, session) for i, item in enumerate(items)]


def _random_events(seed, n=2_000, users=40, items=60):
    rng = random.Random(seed)
    ts = 0.0
    events = []
    for i in range(n):
        ts += rng.choice([5.0, 30.0, 2_500.0])  # some gaps end sessions
        events.append(_click(ts, f"u{rng.randrange(users)}", f"i{int(rng.paretovariate(1.2)) % items}"))
    return events


# --- SequentialRules ------------------------------------------------------------


def test_sr_ranks_by_div_weighted_rules_of_last_item():
    # a b c a b: rules from b are b->c 1, b->a 1/2, b->b 1/3 (distance weights 1/d)
    sr = _learn_all(SequentialRules(), _session("u", ["a", "b", "c", "a", "b"]))
    assert sr.recommend("u", 10) == ["c", "a", "b"]
    # x a b c a b y a: from the a at 2: b 1, c 1/2, a 1/3, b 1/4, y 1/5, a 1/6;
    # from the a at 5: b 1, y 1/2, a 1/3 -> b 2.25, a 0.83, y 0.7, c 0.5
    sr2 = _learn_all(SequentialRules(), _session("v", ["x", "a", "b", "c", "a", "b", "y", "a"]))
    assert sr2.recommend("v", 3) == ["b", "a", "y"]
    assert sr2.recommend("v", 10) == ["b", "a", "y", "c"]


def test_sr_steps_limit_and_pruning():
    sr = _learn_all(SequentialRules(steps=2), _session("u", ["a", "b", "c", "d"]) + _session("w", ["a"], 10))
    # from a: b at distance 1, c at distance 2, d at 3 is beyond steps
    assert sr.recommend("w", 10) == ["b", "c"]
    pruned = _learn_all(SequentialRules(pruning=1), _session("u", ["a", "b", "c"]) + _session("w", ["a"], 10))
    assert pruned.recommend("w", 10) == ["b"]


def test_sr_no_rules_across_sessions():
    gap = 31 * 60
    events = [_click(0, "u", "a"), _click(gap, "u", "b"), _click(2 * gap, "v", "a")]
    assert _learn_all(SequentialRules(), events).recommend("v", 5) == []
    by_id = [_click(0, "u", "a", "s1"), _click(1, "u", "b", "s2"), _click(2, "v", "a", "s3")]
    assert _learn_all(SequentialRules(), by_id).recommend("v", 5) == []
    same_id = [_click(0, "u", "a", "s1"), _click(gap * 3, "u", "b", "s1"), _click(gap * 4, "v", "a", "s3")]
    assert _learn_all(SequentialRules(), same_id).recommend("v", 5) == ["b"]  # explicit id wins over the gap


# --- VSKNN ----------------------------------------------------------------------


def test_vsknn_hand_computed_scores():
    past = _session("s1", ["a", "b", "c"], 0) + _session("s2", ["a", "d"], 10)
    model = _learn_all(VSKNN(), past + _session("u", ["b", "d"], 20))
    # current [b, d]: weights b = 1/2, d = 2/2. s1 shares b: sim 0.5/2, latest shared item
    # is 2 steps back -> vote 0.25 * 1/2; s2 shares d: sim 1/2, step 1 -> vote 0.5.
    # a = 0.125 + 0.5, d = 0.5, b = c = 0.125 (tie -> by id)
    assert model.recommend("u", 10) == ["a", "d", "b", "c"]


def test_vsknn_sample_size_keeps_most_recent_sessions_and_k_limits_neighbours():
    past = _session("old", ["a", "x"], 0) + _session("new", ["a", "y"], 10)
    current = _session("u", ["a"], 20)
    assert _learn_all(VSKNN(sample_size=1), past + current).recommend("u", 10) == ["a", "y"]
    # both neighbours equally similar; k=1 keeps the more recent one
    assert _learn_all(VSKNN(k=1), past + current).recommend("u", 10) == ["a", "y"]
    assert _learn_all(VSKNN(), past + current).recommend("u", 10) == ["a", "x", "y"]


def test_vsknn_excludes_own_session_but_uses_users_earlier_sessions():
    gap = 31 * 60
    alone = _learn_all(VSKNN(), _session("u", ["a", "b"]))
    assert alone.recommend("u", 5) == []  # the only session with these items is the current one
    history = _session("u", ["a", "b"]) + _session("u", ["a"], gap)
    assert _learn_all(VSKNN(), history).recommend("u", 5) == ["a", "b"]


def test_vsknn_idf_weighting_prefers_rare_items():
    common = [e for i in range(5) for e in _session(f"c{i}", ["p"], i * 10)]
    past = common + _session("s", ["a", "p", "r"], 100)
    current = _session("u", ["a"], 200)
    plain = _learn_all(VSKNN(), past + current).recommend("u", 3)
    weighted = _learn_all(VSKNN(idf_weighting=5), past + current).recommend("u", 3)
    assert plain == ["a", "p", "r"]  # all tie, ordered by id
    # 7 sessions; events: p 6, a 2, r 1 -> idf r > a > p
    assert weighted == ["r", "a", "p"]


def test_vsknn_memory_is_bounded():
    model = _learn_all(VSKNN(max_sessions=50, max_sessions_per_item=20, max_users=30), _random_events(7))
    assert len(model._session_items) <= 50
    assert all(len(holders) <= 20 for holders in model._item_sessions.values())
    assert len(model._sessions._users) <= 30


# --- DecayedPopularity ----------------------------------------------------------


def test_pop_decay_in_event_time():
    events = [_click(0, "u", "old")] * 3 + [_click(10 * 3600, "v", "new")]
    assert _learn_all(DecayedPopularity(half_life=3600), events).recommend("x", 2) == ["new", "old"]
    assert _learn_all(DecayedPopularity(half_life=1e9), events).recommend("x", 2) == ["old", "new"]


def test_pop_top_list_matches_brute_force():
    events = _random_events(3, n=3_000)
    half_life = 5_000.0
    model = DecayedPopularity(half_life=half_life, top_size=15)
    t_end = events[-1]["ts"]
    for event in events:
        model.learn(event)
    weights: dict[str, float] = {}
    for event in events:
        weights[event["item_id"]] = weights.get(event["item_id"], 0.0) + 2 ** ((event["ts"] - t_end) / half_life)
    expected = sorted(weights, key=lambda item: (-weights[item], item))
    assert model.recommend("any", 10) == expected[:10]
    assert model.recommend("any", 40) == expected[:40]  # beyond top_size: full sort


def test_pop_rescales_long_histories_without_overflow():
    model = DecayedPopularity(half_life=1.0)
    model.learn(_click(0, "u", "a"))
    model.learn(_click(2_000, "u", "b"))  # 2**2000 would overflow without rescaling
    model.learn(_click(2_001, "u", "a"))
    assert model.recommend("u", 2) == ["a", "b"]


# --- contract shared by every model ----------------------------------------------


@pytest.mark.parametrize("model_class", MODELS)
def test_recommend_does_not_mutate_and_pickles(model_class):
    events = _random_events(11)
    model = _learn_all(model_class(), events)
    before = pickle.dumps(model)
    recs = {user: model.recommend(user, 20) for user in ("u1", "u2", "u3", "nobody")}
    assert pickle.dumps(model) == before
    clone = pickle.loads(before)
    assert {user: clone.recommend(user, 20) for user in recs} == recs
    if model_class is not DecayedPopularity:  # no history, no personal list
        assert recs["nobody"] == []
    assert all(len(items) == len(set(items)) <= 20 for items in recs.values())


@pytest.mark.parametrize("model_class", MODELS)
def test_deterministic_and_ignores_events_without_items(model_class):
    events = _random_events(5)
    noisy = []
    for event in events:
        noisy.append(event)
        noisy.append({"event_id": "q", "ts": event["ts"], "user_id": event["user_id"], "type": "search"})
    first = _learn_all(model_class(), events)
    second = _learn_all(model_class(), noisy)
    for user in ("u0", "u1", "u2"):
        assert first.recommend(user, 20) == second.recommend(user, 20)


@pytest.mark.parametrize("model_class", [SequentialRules, VSKNN])
def test_unknown_weighting_is_rejected(model_class):
    with pytest.raises(ValueError, match="weighting"):
        model_class(weighting="cubic")


# --- run_baselines -----------------------------------------------------------------


def test_run_baselines_equals_recommending_after_every_event():
    events = _random_events(13, n=1_500)
    test_start = events[900]["ts"]
    results = run_baselines(events, test_start, progress=False)
    assert list(results) == list(default_baselines())
    for name, factory in default_baselines().items():
        model = factory()
        scorer = NextItemScorer(test_start=test_start)
        for event in events:
            scorer.on_event(event)
            model.learn(event)
            scorer.predict(event["user_id"], model.recommend(event["user_id"], 20))
        expected = scorer.result()
        got = {key: value for key, value in results[name].items() if key != "seconds"}
        assert got == expected, name
        assert got["scored"] > 400
