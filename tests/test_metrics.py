"""NextItemScorer and score_stream: hand-computed examples and agreement of both APIs."""

import math
import random

import orjson
import pytest

from evaluation.metrics import NextItemScorer, event_ts, recs_by_trigger_from_records, score_stream


def _ev(event_id, ts, user, item="x", **extra):
    event = {"event_id": event_id, "ts": ts, "user_id": user, "type": "view", **extra}
    if item is not None:
        event["item_id"] = item
    return event


def test_hand_computed_hr_mrr_ndcg_coverage():
    scorer = NextItemScorer(k_values=(1, 3), test_start=0.0, catalog_size=10)
    scorer.on_event(_ev("1", 1, "u", "a"))
    scorer.predict("u", ["b", "c", "d"])
    assert scorer.on_event(_ev("2", 2, "u", "c"))  # rank 2
    scorer.predict("u", ["e", "a"])
    assert scorer.on_event(_ev("3", 3, "u", "e"))  # rank 1
    scorer.predict("u", ["a", "b", "c", "f"])  # only the top 3 count
    assert scorer.on_event(_ev("4", 4, "u", "f"))  # rank 4: miss at K <= 3
    result = scorer.result()
    assert result["scored"] == 3
    assert result["HR@1"] == pytest.approx(1 / 3)
    assert result["HR@3"] == pytest.approx(2 / 3)
    assert result["MRR@1"] == pytest.approx(1 / 3)
    assert result["MRR@3"] == pytest.approx((1 / 2 + 1) / 3)
    assert result["NDCG@3"] == pytest.approx((1 / math.log2(3) + 1) / 3)
    # scored top-3 lists hold b, c, d, e, a -> 5 of 10 catalog items
    assert result["coverage@3"] == pytest.approx(0.5)


def test_first_event_and_events_before_test_start_are_not_scored():
    scorer = NextItemScorer(k_values=(10,), test_start=100.0)
    assert not scorer.on_event(_ev("1", 50, "u", "a"))  # first event of the user
    scorer.predict("u", ["b"])
    assert not scorer.on_event(_ev("2", 99, "u", "b"))  # before the test start: warm-up only
    scorer.predict("u", ["c"])
    assert scorer.on_event(_ev("3", 100, "u", "c"))  # at the test start: scored
    assert not scorer.on_event(_ev("4", 101, "v", "c"))  # another user's first event
    assert scorer.result()["HR@10"] == 1.0
    assert scorer.result()["scored"] == 1


def test_missing_prediction_is_a_miss_and_lists_are_not_reused():
    scorer = NextItemScorer(k_values=(10,), test_start=0.0)
    scorer.on_event(_ev("1", 1, "u", "a"))
    scorer.predict("u", ["b"])
    scorer.on_event(_ev("2", 2, "u", "b"))  # hit
    # no list emitted after event 2: the list from event 1 must not be reused
    scorer.on_event(_ev("3", 3, "u", "b"))
    scorer.on_event(_ev("4", 4, "u", "b"))
    result = scorer.result()
    assert result["scored"] == 3
    assert result["HR@10"] == pytest.approx(1 / 3)


def test_event_without_item_is_the_previous_event_but_not_a_target():
    scorer = NextItemScorer(k_values=(10,), test_start=0.0)
    scorer.on_event(_ev("1", 1, "u", "a"))
    scorer.predict("u", ["zzz"])
    assert not scorer.on_event(_ev("2", 2, "u", None, type="search"))
    scorer.predict("u", ["b"])
    assert scorer.on_event(_ev("3", 3, "u", "b"))  # scored against the list after the search
    assert scorer.result()["HR@10"] == 1.0


def test_default_catalog_is_distinct_items_seen_and_empty_result_is_zero():
    scorer = NextItemScorer(k_values=(2,), test_start=0.0)
    assert scorer.result() == {"HR@2": 0.0, "MRR@2": 0.0, "NDCG@2": 0.0, "coverage@2": 0.0, "scored": 0,
                               "HR@2_new": 0.0, "MRR@2_new": 0.0, "scored_new": 0}
    for i, item in enumerate(["a", "b", "c", "d"]):
        scorer.on_event(_ev(str(i), i, "u", item))
        scorer.predict("u", ["a"])
    assert scorer.result()["coverage@2"] == pytest.approx(1 / 4)


def test_predictions_may_be_rec_entries_and_ts_may_be_iso():
    scorer = NextItemScorer(k_values=(10,), test_start=event_ts({"ts": "2024-01-01T00:00:00+00:00"}))
    scorer.on_event(_ev("1", "2024-01-01T00:00:00+00:00", "u", "a"))
    scorer.predict("u", [{"item_id": "b", "score": 0.9}])
    scorer.on_event(_ev("2", "2024-01-01T01:00:00+01:00", "u", "b"))  # same instant as event 1
    assert scorer.result()["HR@10"] == 1.0


def test_rejects_bad_k_values():
    with pytest.raises(ValueError, match="k_values"):
        NextItemScorer(k_values=(0, 10))
    with pytest.raises(ValueError, match="session_gap"):
        NextItemScorer(session_gap=0)


# (event, list recommended after it); None: no list (the event is the user's last)
NEW_ITEM_STREAM = [
    # u has session ids: they decide, whatever the time between events.
    (_ev("u1", 1, "u", "a", session_id="s1"), ["b", "a", "c"]),
    (_ev("u2", 2, "u", "a", session_id="s1"), ["b", "c"]),  # a: repeat, rank 2
    (_ev("u3", 3, "u", "c", session_id="s1"), ["a", "d"]),  # c: new, rank 2
    (_ev("u4", 4, "u", "a", session_id="s2"), ["x", "y"]),  # a: new in session s2, rank 1
    (_ev("u5", 5, "u", "d", session_id="s2"), ["d"]),  # d: new, missed
    (_ev("u6", 10_000, "u", "d", session_id="s2"), None),  # d: repeat (same id after 3 h), rank 1
    # v has none: a session ends after more than 1800 s without any event of v.
    (_ev("v1", 0, "v", "p"), ["p", "q"]),
    (_ev("v2", 100, "v", "p"), ["q", "p"]),  # p: repeat, rank 1
    (_ev("v3", 1901, "v", "p"), ["p"]),  # 1801 s later, a new session: p is new, rank 2
    (_ev("v4", 1902, "v", "p"), ["zzz"]),  # p: repeat, rank 1
    (_ev("v5", 3000, "v", None, type="search"), ["p"]),  # keeps the session alive
    (_ev("v6", 4700, "v", "p"), None),  # 1700 s after the search: same session, repeat, rank 1
]


def test_new_item_hr_and_mrr_by_hand():
    scorer = NextItemScorer(k_values=(1, 3), test_start=0.0, session_gap=1800.0)
    for event, recs in NEW_ITEM_STREAM:
        scorer.on_event(event)
        if recs is not None:
            scorer.predict(event["user_id"], recs)
    r = scorer.result()
    # All 9 targets (u2..u6, v2, v3, v4, v6), ranks 2, 2, 1, miss, 1, 1, 2, 1, 1.
    assert r["scored"] == 9
    assert r["HR@3"] == pytest.approx(8 / 9)
    assert r["MRR@3"] == pytest.approx((0.5 + 0.5 + 1 + 0 + 1 + 1 + 0.5 + 1 + 1) / 9)
    # New items only: u3 (rank 2), u4 (rank 1), u5 (miss), v3 (rank 2).
    assert r["scored_new"] == 4
    assert r["HR@3_new"] == pytest.approx(3 / 4)
    assert r["MRR@3_new"] == pytest.approx((0.5 + 1 + 0 + 0.5) / 4)
    assert r["HR@1_new"] == r["MRR@1_new"] == pytest.approx(1 / 4)
    # score_stream (the dataflow's path) gives the same numbers.
    events = [event for event, _ in NEW_ITEM_STREAM]
    recs = {event["event_id"]: items for event, items in NEW_ITEM_STREAM if items is not None}
    assert score_stream(events, recs, test_start=0.0, k_values=(1, 3), session_gap=1800.0) == r


def test_new_item_sessions_follow_the_session_gap():
    # With a gap of 2 h, v's return after 1801 s is the same session: p is not new.
    scorer = NextItemScorer(k_values=(3,), test_start=0.0, session_gap=7200.0)
    for event, recs in NEW_ITEM_STREAM:
        scorer.on_event(event)
        if recs is not None:
            scorer.predict(event["user_id"], recs)
    assert scorer.result()["scored_new"] == 3  # u3, u4, u5
    # Before the test start, events fill the session but are not scored.
    scorer = NextItemScorer(k_values=(3,), test_start=3.0)
    for event, recs in NEW_ITEM_STREAM[:4]:
        scorer.on_event(event)
        if recs is not None:
            scorer.predict(event["user_id"], recs)
    r = scorer.result()
    assert (r["scored"], r["scored_new"], r["HR@3_new"]) == (2, 2, 1.0)  # u3 (c) and u4 (a) are new


def _random_stream(seed, n_events=3_000, n_users=60, n_items=80):
    rng = random.Random(seed)
    events = []
    for i in range(n_events):
        item = None if rng.random() < 0.05 else f"i{rng.randrange(n_items)}"
        events.append(_ev(f"e{i}", float(i), f"u{rng.randrange(n_users)}", item))
    recs = {}
    for event in events:
        if rng.random() < 0.85:  # some triggers have no emitted list
            recs[event["event_id"]] = [f"i{j}" for j in rng.sample(range(n_items), 25)]
    return events, recs


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_score_stream_equals_streaming_scorer(seed):
    events, recs = _random_stream(seed)
    test_start = 1_000.0
    scorer = NextItemScorer(k_values=(10, 20), test_start=test_start, catalog_size=80)
    for event in events:
        scorer.on_event(event)
        if event["event_id"] in recs:
            scorer.predict(event["user_id"], recs[event["event_id"]])
    streamed = scorer.result()
    batch = score_stream(events, recs, test_start=test_start, catalog_size=80)
    assert batch == streamed
    assert set(batch) == {"HR@10", "MRR@10", "NDCG@10", "HR@20", "MRR@20", "NDCG@20", "coverage@20", "scored",
                          "HR@10_new", "MRR@10_new", "HR@20_new", "MRR@20_new", "scored_new"}
    assert 0 < batch["scored_new"] < batch["scored"]
    assert 0 < batch["HR@10"] < batch["HR@20"] < 1
    assert batch["scored"] > 1_000


def test_score_stream_from_output_records():
    events = [_ev("1", 1, "u", "a"), _ev("2", 2, "u", "b"), _ev("3", 3, "u", "c")]
    records = [
        {"user_id": "u", "trigger_event_id": "1", "items": orjson.dumps([{"item_id": "x", "score": 1.0}]).decode()},
        {"user_id": "u", "trigger_event_id": "1", "items": [{"item_id": "b", "score": 1.0}]},  # replay replaces
        {"user_id": "u", "trigger_event_id": "2", "items": ["q", "c"]},
    ]
    recs = recs_by_trigger_from_records(records)
    assert recs == {"1": ["b"], "2": ["q", "c"]}
    result = score_stream(events, recs, test_start=0.0, k_values=(1, 2))
    assert result["scored"] == 2
    assert result["HR@1"] == pytest.approx(0.5)
    assert result["MRR@2"] == pytest.approx((1 + 0.5) / 2)
