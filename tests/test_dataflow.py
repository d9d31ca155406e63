"""The recommend flow end to end over in-memory input, under several entry points."""

from __future__ import annotations

import pickle

import pytest
from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from workloads.traffic import TrafficConfig, generate_catalog, generate_events
from operators.messages import EraseUser, ProfileWrite, RecUpdate
from streamrec.settings import Settings
from tests.flowkit import build_test_flow

T0 = 1_732_680_000.0


@pytest.fixture(scope="module")
def traffic():
    cfg = TrafficConfig(n_users=60, n_items=300, n_categories=6, seed=3, start_ts=T0)
    return generate_catalog(cfg), list(generate_events(cfg, 3000))


def _by_type(out, cls):
    return [m for m in out if isinstance(m, cls)]


def test_every_user_with_an_item_event_gets_a_list(entry_point, traffic):
    catalog, events = traffic
    flow, out, dead = build_test_flow(events, catalog=catalog)
    entry_point(flow)
    recs = _by_type(out, RecUpdate)
    users_with_items = {e["user_id"] for e in events if e.get("item_id")}
    users_with_lists = {r.user_id for r in recs if r.items}
    assert users_with_items <= users_with_lists
    assert not dead
    # Without conflation there is one update per applied event (consent and erase
    # events and refused events aside).
    assert len(recs) > 0.8 * len(events)


def test_recommendations_follow_the_sequence_structure(entry_point):
    # 30 users all browse a -> b -> c; a new user who views a must get b first.
    events = []
    n = 0
    for u in range(30):
        for step, item in enumerate(["a", "b", "c"]):
            n += 1
            events.append({"event_id": f"e{n}", "ts": T0 + u * 100 + step, "user_id": f"u{u}",
                           "type": "view", "item_id": item, "category": "cat"})
    events.append({"event_id": "new-1", "ts": T0 + 9000, "user_id": "fresh", "type": "view",
                   "item_id": "a", "category": "cat"})
    flow, out, _ = build_test_flow(events)
    entry_point(flow)
    last = [r for r in _by_type(out, RecUpdate) if r.user_id == "fresh"][-1]
    assert last.trigger_event_id == "new-1"
    assert last.items[0][0] == "b"
    assert last.strategy == "covis"


def test_first_event_of_a_new_user_gets_a_non_empty_list(entry_point, traffic):
    _, events = traffic
    extra = {"event_id": "cold-1", "ts": events[-1]["ts"] + 1, "user_id": "brand-new",
             "type": "view", "item_id": "never-seen-item"}
    flow, out, _ = build_test_flow(events + [extra])
    entry_point(flow)
    rec = [r for r in _by_type(out, RecUpdate) if r.user_id == "brand-new"]
    assert rec and len(rec[0].items) == 20


def test_purchased_items_are_never_recommended(entry_point):
    events = []
    n = 0
    for u in range(20):
        for step, item in enumerate(["a", "b", "c", "d"]):
            n += 1
            events.append({"event_id": f"e{n}", "ts": T0 + u * 100 + step, "user_id": f"u{u}",
                           "type": "view", "item_id": item})
    events += [
        {"event_id": "p1", "ts": T0 + 5000, "user_id": "buyer", "type": "purchase", "item_id": "b"},
        {"event_id": "p2", "ts": T0 + 5001, "user_id": "buyer", "type": "view", "item_id": "a"},
    ]
    flow, out, _ = build_test_flow(events)
    entry_point(flow)
    last = [r for r in _by_type(out, RecUpdate) if r.user_id == "buyer"][-1]
    assert last.items and "b" not in [i for i, _ in last.items]


def test_unavailable_items_are_never_recommended():
    events = []
    n = 0
    for u in range(20):
        for step, item in enumerate(["a", "b", "c"]):
            n += 1
            events.append({"event_id": f"e{n}", "ts": T0 + u * 100 + step, "user_id": f"u{u}",
                           "type": "view", "item_id": item})
    events.append({"event_id": "last", "ts": T0 + 9999, "user_id": "x", "type": "view", "item_id": "a"})
    catalog = [{"item_id": "b", "category": "c1", "available": True},
               {"item_id": "b", "category": "c1", "available": False}]
    flow, out, _ = build_test_flow(events, catalog=catalog)
    run_main(flow)
    last = [r for r in _by_type(out, RecUpdate) if r.user_id == "x"][-1]
    assert "b" not in [i for i, _ in last.items]
    assert last.items[0][0] == "c"


def test_erase_removes_state_and_asks_the_sink_to_delete(entry_point):
    events = [
        {"event_id": "e1", "ts": T0, "user_id": "gone", "type": "view", "item_id": "a"},
        {"event_id": "e2", "ts": T0 + 1, "user_id": "gone", "type": "erase"},
        {"event_id": "e3", "ts": T0 + 2, "user_id": "gone", "type": "view", "item_id": "z"},
    ]
    flow, out, _ = build_test_flow(events)
    entry_point(flow)
    assert sorted(e.part for e in _by_type(out, EraseUser)) == ["outputs", "profile"]
    profiles = [p for p in _by_type(out, ProfileWrite) if p.user_id == "gone"]
    # After the erase the profile starts from nothing: only the new item is known.
    assert profiles[-1].profile["recent_items"] == ["z"]
    assert profiles[-1].seq == 1


def test_both_parts_of_an_erasure_carry_its_receipt_and_bad_receipts_are_dropped(entry_point):
    events = [
        {"event_id": "e1", "ts": T0, "user_id": "a", "type": "view", "item_id": "x"},
        {"event_id": "e2", "ts": T0 + 1, "user_id": "a", "type": "erase",
         "context": {"receipt": "r-1"}},
        {"event_id": "e3", "ts": T0, "user_id": "b", "type": "view", "item_id": "x"},
        {"event_id": "e4", "ts": T0 + 1, "user_id": "b", "type": "erase",
         "context": {"receipt": "x" * 65}},
        {"event_id": "e5", "ts": T0, "user_id": "c", "type": "view", "item_id": "x"},
        {"event_id": "e6", "ts": T0 + 1, "user_id": "c", "type": "erase",
         "context": {"receipt": "bad\x00receipt"}},
        {"event_id": "e7", "ts": T0 + 2, "user_id": "d", "type": "consent", "value": 0},
    ]
    flow, out, _ = build_test_flow(events)
    entry_point(flow)
    got = sorted((e.user_id, e.part, e.receipt) for e in _by_type(out, EraseUser))
    assert got == [("a", "outputs", "r-1"), ("a", "profile", "r-1"),
                   ("b", "outputs", None), ("b", "profile", None),
                   ("c", "outputs", None), ("c", "profile", None),
                   ("d", "outputs", None), ("d", "profile", None)]


def test_consent_withdrawal_stops_learning():
    events = [
        {"event_id": "e1", "ts": T0, "user_id": "u", "type": "view", "item_id": "a"},
        {"event_id": "e2", "ts": T0 + 1, "user_id": "u", "type": "consent", "value": 0},
        {"event_id": "e3", "ts": T0 + 2, "user_id": "u", "type": "view", "item_id": "b"},
    ]
    flow, out, _ = build_test_flow(events)
    run_main(flow)
    recs = [r for r in _by_type(out, RecUpdate) if r.user_id == "u"]
    # e1's list may or may not be out before the withdrawal overtakes it; nothing after.
    assert [r.trigger_event_id for r in recs] in ([], ["e1"])
    assert sorted(e.part for e in _by_type(out, EraseUser)) == ["outputs", "profile"]
    assert not [p for p in _by_type(out, ProfileWrite) if p.seq > 1]


def test_duplicates_are_dropped():
    ev = {"event_id": "dup", "ts": T0, "user_id": "u", "type": "view", "item_id": "a"}
    flow, out, _ = build_test_flow([ev, dict(ev), dict(ev)])
    run_main(flow)
    assert len(_by_type(out, RecUpdate)) == 1


def _final_profiles(out) -> dict:
    final = {}
    for p in _by_type(out, ProfileWrite):
        if p.user_id not in final or final[p.user_id].seq <= p.seq:
            final[p.user_id] = p
    return {u: p.profile for u, p in final.items()}


def test_abort_and_resume_restores_profile_state(tmp_path, traffic):
    _, events = traffic
    events = events[:1500]
    flow, out, _ = build_test_flow(events, flow_id="uninterrupted")
    run_main(flow)
    expected = _final_profiles(out)

    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    aborted = events[:900] + [TestingSource.ABORT()] + events[900:]
    flow2, out2, _ = build_test_flow(aborted, flow_id="resumed")
    run_main(flow2, epoch_interval=__import__("datetime").timedelta(0), recovery_config=recovery)
    assert len(_by_type(out2, RecUpdate)) < len(events)  # it really stopped part way
    run_main(flow2, epoch_interval=__import__("datetime").timedelta(0), recovery_config=recovery)
    assert _final_profiles(out2) == expected


def test_without_recovery_no_state_is_pickled_and_results_are_the_same(traffic):
    from dataflows.recommend import recovery_requested
    from operators.rank_step import RankLogic, RankStepConfig

    assert RankLogic(RankStepConfig(snapshots=False), None).snapshot() is None
    assert pickle.loads(RankLogic(RankStepConfig(), None).snapshot()) is not None
    run = "/x/site-packages/bytewax/run.py"
    for args in (["--recovery-directory=s"], ["--r", "s"], ["-rs"], ["-r", "s", "-s", "5"]):
        assert recovery_requested([run, "dataflows.recommend", *args], {}), args
    assert recovery_requested([run, "dataflows.recommend"], {"BYTEWAX_RECOVERY_DIRECTORY": ""})
    assert not recovery_requested([run, "dataflows.recommend", "-i", "0", "-a", "a:1"], {})
    assert recovery_requested(["some_other_launcher.py"], {})
    catalog, events = traffic
    runs = []
    for snapshots in (True, False):
        flow, out, _ = build_test_flow(events[:1500], catalog=catalog, snapshots=snapshots)
        run_main(flow)
        runs.append(sorted((r.user_id, r.seq, tuple(i for i, _ in r.items))
                           for r in _by_type(out, RecUpdate)))
    assert runs[0] and runs[0] == runs[1]


def test_state_survives_pickle_under_recovery(tmp_path):
    # Every stateful step's snapshot must pickle; this flow exercises all message kinds.
    events = [
        {"event_id": f"e{i}", "ts": T0 + i, "user_id": f"u{i % 3}", "type": t, "item_id": f"p{i % 7}",
         "category": "c", "context": {"user_attrs": {"age_band": "25-34", "gender": "F"}}}
        for i, t in enumerate(["view", "click", "add_to_cart", "purchase", "wishlist", "rating"] * 5)
        if t != "rating"
    ]
    init_db_dir(tmp_path, 1)
    flow, out, _ = build_test_flow(events)
    run_main(flow, recovery_config=RecoveryConfig(str(tmp_path)))
    assert _by_type(out, RecUpdate)
    pickle.dumps(out)


def _population(prefix: str, attrs: dict, items: list[str], users: int, t0: float) -> list[dict]:
    events = []
    for u in range(users):
        for step, item in enumerate(items):
            events.append({"event_id": f"{prefix}-{u}-{step}", "ts": t0 + u * 60 + step,
                           "user_id": f"{prefix}{u}", "type": "click", "item_id": item,
                           "category": "books" if item.startswith("b") else "toys",
                           "context": {"user_attrs": attrs}})
    return events


def test_a_user_known_only_by_attributes_gets_segment_recommendations(entry_point):
    young = {"age_band": "18-24", "gender": "F"}
    old = {"age_band": "55-64", "gender": "M"}
    events = (_population("y", young, ["t1", "t2", "t3"], 15, T0)
              + _population("o", old, ["b1", "b2", "b3"], 25, T0 + 5))
    events.sort(key=lambda e: e["ts"])
    newcomer = {"event_id": "n-1", "ts": T0 + 9000, "user_id": "newbie", "type": "search",
                "context": {"query": "gift", "user_attrs": young}}
    flow, out, _ = build_test_flow(events + [newcomer])
    entry_point(flow)
    rec = [r for r in _by_type(out, RecUpdate) if r.user_id == "newbie"][-1]
    top3 = {i for i, _ in rec.items[:3]}
    # Overall the "b" items are more popular; the segment says "t".
    assert top3 == {"t1", "t2", "t3"}, rec.items
    assert rec.strategy == "segment"


def test_onboarding_preferences_drive_a_cold_list():
    events = (_population("y", {}, ["t1", "t2"], 20, T0)
              + _population("o", {}, ["b1", "b2"], 10, T0 + 5))
    events.sort(key=lambda e: e["ts"])
    newcomer = {"event_id": "n-1", "ts": T0 + 9000, "user_id": "reader", "type": "filter",
                "context": {"facets": {"size": "m"}, "preferences": ["books"]}}
    flow, out, _ = build_test_flow(events + [newcomer])
    run_main(flow)
    rec = [r for r in _by_type(out, RecUpdate) if r.user_id == "reader"][-1]
    assert {i for i, _ in rec.items[:2]} == {"b1", "b2"}, rec.items


def test_content_similarity_recommends_items_never_seen_together():
    # The catalog says r1..r4 are running shoes; nobody ever browsed them together.
    catalog = [{"item_id": f"r{i}", "category": "shoes", "tags": ["running", "road"]} for i in range(1, 5)]
    catalog += [{"item_id": f"h{i}", "category": "hats", "tags": ["wool", "winter"]} for i in range(1, 5)]
    events = []
    # Enough traffic for every item's popularity to reach every rank shard (trend
    # broadcasts are batched).
    for n, item in enumerate(["r1", "r2", "r3", "r4", "h1", "h2", "h3", "h4"] * 20):
        events.append({"event_id": f"w{n}", "ts": T0 + n * 4000, "user_id": f"warm{n}",
                       "type": "view", "item_id": item})
    events.append({"event_id": "me-1", "ts": T0 + 700_000, "user_id": "me", "type": "view",
                   "item_id": "r1"})
    settings = Settings(conflate=False, w_content=1.0)
    flow, out, _ = build_test_flow(events, settings, catalog=catalog)
    run_main(flow)
    rec = [r for r in _by_type(out, RecUpdate) if r.user_id == "me"][-1]
    top = [i for i, _ in rec.items[:4]]
    assert sum(i.startswith("r") for i in top) >= 3, rec.items


def test_conflated_flow_keeps_every_update_and_answers_the_last_event(entry_point, traffic):
    _, events = traffic
    settings = Settings(conflate=True)
    flow, out, _ = build_test_flow(events, settings)
    entry_point(flow)
    recs = _by_type(out, RecUpdate)
    last_event = {}
    for e in events:
        last_event[e["user_id"]] = e["event_id"]
    final = {}
    for r in recs:
        if r.user_id not in final or final[r.user_id].seq < r.seq:
            final[r.user_id] = r
    listed = {u for u, r in final.items() if r.trigger_event_id == last_event[u]}
    # Every user's newest list reflects their last event (consent withdrawals aside).
    assert len(listed) >= 0.9 * len(final)
    assert len(recs) < len(events)  # and batches were conflated
