"""Event-time order inside the steps, and the lock-step replay source.

A list must be ranked with what happened before its event only, however the events
were batched or spread over workers: no look into the future.
"""

from __future__ import annotations

import dataclasses
import pickle
import time

import pytest

from evaluation.pacing import PacedFileSource, ProgressBoard
from operators.item_step import ItemLogic, ItemStepConfig
from operators.messages import ItemAnswer, ItemQuery, RankRequest, TrendDelta
from operators.rank_step import RankLogic, RankStepConfig


def _step(logic, values: list) -> tuple[list, bool]:
    """One batch into a step's logic, as Bytewax runs it: ``on_batch``, then, when the
    logic asks to be notified (the rank step ranks its complete requests there), the
    ``on_notify`` of the step's next activation. The rank step takes its messages in
    bundles (one list per upstream batch)."""
    out, complete = logic.on_batch([values] if isinstance(logic, RankLogic) else values)
    out = list(out)
    if logic.notify_at() is not None:
        more, complete = logic.on_notify()
        out += list(more)
    return out, complete


def _request(user: str, seq: int, ts: float) -> RankRequest:
    return RankRequest(route="rank-0", user_id=user, seq=seq, ts=ts, event_id=f"{user}-{seq}",
                       event_type="view", ingested_at=None, expected=0, item_id=None,
                       interaction=0.0, categories=[], session_categories=[],
                       preferences=None, segment=None, seen=[], excluded=[])


def _items(recs) -> list[str]:
    return [item for item, _ in recs.items]


def _paced(tmp_path, n_lines: int, batch_size: int, stall: float):
    """A board and a lock-step source over ``n_lines`` small JSON lines."""
    events = tmp_path / "events.jsonl"
    events.write_text("".join(f'{{"n": {n}}}\n' for n in range(n_lines)))
    board_path = tmp_path / "progress.board"
    board = ProgressBoard(board_path)
    part = PacedFileSource(events, board_path, batch_size=batch_size, stall=stall).build_part(
        "s", "p", None)
    return board, part


def _next_nonempty(part, timeout: float = 5.0) -> list:
    deadline = time.monotonic() + timeout
    batch: list = []
    while not batch and time.monotonic() < deadline:
        batch = part.next_batch()
        time.sleep(0.01)
    return batch


def test_trend_news_from_later_events_waits_for_requests_after_it():
    logic = RankLogic(RankStepConfig(conflate=False), None)
    past = ("old", "hats", 5.0, 50.0, None)
    future = ("new", "hats", 9.0, 200.0, None)
    (early,), _ = _step(logic, [TrendDelta("rank-0", [past, future], []), _request("u1", 1, 100.0)])
    assert _items(early) == ["old"]  # "new" became popular at ts 200, after this event
    (late,), _ = _step(logic, [_request("u2", 1, 300.0)])
    assert _items(late)[0] == "new" and "old" in _items(late)
    assert logic.models().deferred == []


def test_requests_of_one_batch_are_ranked_in_event_time_order():
    # round_requests=1: every run spans at most batch_window (60 s) of event time.
    logic = RankLogic(RankStepConfig(conflate=False, round_requests=1), None)
    news = TrendDelta("rank-0", [("a", None, 1.0, 10.0, None), ("b", None, 50.0, 150.0, None)], [])
    out, _ = _step(logic, [news, _request("late", 1, 200.0), _request("early", 1, 100.0)])
    lists = {rec.user_id: _items(rec) for rec in out}
    assert lists["early"] == ["a"]
    assert lists["late"][0] == "b"


def test_a_quiet_stream_is_ranked_in_one_call_and_no_list_sees_newer_news():
    # Two requests 100 s apart are fewer than round_requests: one ranking call, with the
    # news up to the first request's time (b's news, at 150, is newer than it).
    logic = RankLogic(RankStepConfig(conflate=False), None)
    assert logic.cfg.round_requests > 2
    news = TrendDelta("rank-0", [("a", None, 1.0, 10.0, None), ("b", None, 50.0, 150.0, None)], [])
    calls = []
    rank_step_module = __import__("operators.rank_step", fromlist=["rank_round"])
    real = rank_step_module.rank_round
    rank_step_module.rank_round = lambda cfg, round_, shared: calls.append(len(round_)) or real(
        cfg, round_, shared)
    try:
        out, _ = _step(logic, [news, _request("late", 1, 200.0), _request("early", 1, 100.0)])
    finally:
        rank_step_module.rank_round = real
    assert calls == [2]
    lists = {rec.user_id: _items(rec) for rec in out}
    assert lists == {"early": ["a"], "late": ["a"]}
    assert [entry[0] for entry in logic.models().deferred] == [150.0]


def test_news_arriving_out_of_order_is_applied_by_event_time():
    # Two processes' trend shards interleave: a later message may carry older news.
    logic = RankLogic(RankStepConfig(conflate=False), None)
    vec = __import__("numpy").ones(64, dtype="float16").tobytes()
    _step(logic, [TrendDelta("rank-0", [("late", None, 9.0, 300.0, vec)], [])])
    _step(logic, [TrendDelta("rank-0", [("mid", None, 5.0, 150.0, vec),
                                          ("mid2", None, 5.0, 150.0, vec)], [])])
    _step(logic, [TrendDelta("rank-0", [("early", None, 1.0, 50.0, None)], [])])
    (rec,), _ = _step(logic, [_request("u1", 1, 200.0)])
    assert set(_items(rec)) == {"early", "mid", "mid2"}
    assert [entry[0] for entry in logic.models().deferred] == [300.0]
    (rec,), _ = _step(logic, [_request("u2", 1, 400.0)])
    assert _items(rec)[0] == "late" and logic.models().deferred == []


def test_deferred_news_is_bounded():
    logic = RankLogic(RankStepConfig(conflate=False, max_deferred=10), None)
    entries = [(f"i{n}", None, 1.0, float(n), None) for n in range(25)]
    _step(logic, [TrendDelta("rank-0", entries, [])])
    assert len(logic.models().deferred) <= 10


def test_item_step_answers_before_learning_from_a_later_event_in_the_same_batch():
    logic = ItemLogic(ItemStepConfig(), None)
    later = ItemQuery("p1", "u2", 1, 200.0, "rank-0", 0.0, [("p-later", 1.0)], 0.0, None)
    earlier_question = ItemQuery("p1", "u1", 1, 100.0, "rank-0", 1.0, [("p-before", 1.0)], 1.0, None)
    out, _ = _step(logic, [later, earlier_question])
    (answer,) = [m for m in out if isinstance(m, ItemAnswer)]
    assert [item for item, _ in answer.followers] == ["p-before"]
    again = ItemQuery("p1", "u3", 1, 300.0, "rank-0", 1.0, [], 0.0, None)
    out, _ = _step(logic, [again])
    (answer,) = [m for m in out if isinstance(m, ItemAnswer)]
    assert {item for item, _ in answer.followers} == {"p-before", "p-later"}


def test_lock_step_source_waits_for_each_batch_to_leave_its_records(tmp_path):
    board, part = _paced(tmp_path, 5, batch_size=2, stall=30.0)
    assert part.next_batch() == ['{"n": 0}', '{"n": 1}']
    assert part.next_batch() == []  # nothing finished yet
    board.add(1, 1)
    assert part.next_batch() == []  # one of two finished
    board.add(0, 1)  # records from another process count too
    assert part.next_batch() == ['{"n": 2}', '{"n": 3}']
    board.add(0, 2)
    assert part.next_batch() == ['{"n": 4}']
    board.add(0, 1)
    with pytest.raises(StopIteration):
        part.next_batch()


def test_lock_step_source_also_waits_for_model_updates_in_flight(tmp_path):
    # Trend news travels one hop more than a request's answers: the next event is read
    # only when every update an event set off has landed, whichever process it is in.
    board, part = _paced(tmp_path, 2, batch_size=1, stall=30.0)
    assert part.next_batch() == ['{"n": 0}']
    board.add_news(0, 2)  # two updates sent by process 0 ...
    board.add(0, 1)  # ... and the event's list written
    assert part.next_batch() == []
    board.add_news(1, -1)  # one landed in process 1
    assert part.next_batch() == []
    board.add_news(0, -1)
    assert board.news() == 0
    assert part.next_batch() == ['{"n": 1}']


def test_lock_step_source_gives_up_on_news_that_never_lands_once(tmp_path):
    board, part = _paced(tmp_path, 3, batch_size=1, stall=0.05)
    assert part.next_batch() == ['{"n": 0}']
    board.add_news(0, 1)  # lost: never lands
    board.add(0, 1)
    batch = _next_nonempty(part)
    assert batch == ['{"n": 1}'] and part.news_stalls == 1
    board.add(0, 1)
    assert part.next_batch() == ['{"n": 2}']  # the lost message costs one stall, not one each


def test_lock_step_source_moves_on_when_events_leave_no_record(tmp_path):
    _board, part = _paced(tmp_path, 2, batch_size=1, stall=0.05)
    assert part.next_batch() == ['{"n": 0}']
    batch = _next_nonempty(part)
    assert batch == ['{"n": 1}'] and part.skipped == 1


def test_a_rank_snapshot_from_before_the_queue_and_the_knn_feature_restores():
    # The layout that kept trending, categories, vectors and availability in every
    # shard, one blend for all contexts, no `knn` feature, no news queue: the shard's
    # own state restores, and its item-side models become the worker's.
    import numpy as np

    from models.blend import OnlineBlend
    from models.content import VectorIndex
    from models.mf import ImplicitMF
    from models.ranking import FEATURES, prior_weights
    from models.trending import Trending
    from operators.rank_step import RankShardState

    prior = np.delete(prior_weights(RankStepConfig().ranking), FEATURES.index("knn"))
    trending = Trending(3600.0)
    trending.observe("p0", "hats", 2.0, 1.0)
    shown = {"u1": (["a"], np.zeros((1, len(FEATURES) - 1), np.float32))}
    old = (trending, {"p0": "hats"}, {"gone"}, {}, {}, {}, OnlineBlend(prior), shown,
           VectorIndex(100), ImplicitMF(), {})  # no `deferred`, no `recent` yet
    restored = RankShardState.__new__(RankShardState)
    restored.__setstate__(old)
    assert restored.shown == {} and restored.recent == {}
    assert len(restored.blend) == 3
    assert all(len(restored.blend[c].weights) == len(FEATURES) for c in range(3))
    assert restored.legacy.deferred == [] and restored.legacy.unavailable == {"gone"}


    class OldSnapshot:  # pickles as the old class with its old state tuple
        def __reduce__(self):
            return (RankShardState.__new__, (RankShardState,), old)

    logic = RankLogic(RankStepConfig(conflate=False), pickle.dumps(OldSnapshot()))
    assert logic.models().item_category == {"p0": "hats"}
    assert logic.models().unavailable == {"gone"}
    (rec,), _ = _step(logic, [TrendDelta("rank-0", [("p1", None, 1.0, 1.0, None)], []),
                                _request("u1", 1, 5.0)])
    assert _items(rec) == ["p0", "p1"]


def test_erasure_leaves_the_rank_shard_behind_the_old_lists_and_before_new_ones():
    # The sink must erase after the old life's lists and before the new life's: writes of
    # different workers are not ordered, so the rank shard sends the outputs erasure itself.
    from operators.messages import EraseUser, ForgetUser

    logic = RankLogic(RankStepConfig(), None)
    news = TrendDelta("rank-0", [("p1", None, 1.0, 1.0, None)], [])
    old = _request("u1", 3, 10.0)
    new = _request("u1", 1, 20.0)  # a new life starts again at seq 1
    out, _ = _step(logic, [news, old, ForgetUser("rank-0", "u1", 3), new])
    assert [type(m).__name__ for m in out] == ["EraseUser", "RecUpdate"]
    assert out[0].part == "outputs" and out[1].seq == 1


def test_a_new_lifes_answer_that_overtakes_the_erasure_is_kept():
    # Two workers: the new life's first answer (item worker) can reach the rank shard
    # before the erasure (user worker). Dropping it with the old life's requests left the
    # new request waiting forever for an answer already thrown away.
    from operators.messages import ForgetUser

    logic = RankLogic(RankStepConfig(), None)
    _step(logic, [TrendDelta("rank-0", [("p1", None, 1.0, 1.0, None)], [])])
    early = ItemAnswer("rank-0", "u3", 1, "p9", 1.0, None, 1.0, [("p8", 1.0)], life=40.0)
    stale = ItemAnswer("rank-0", "u3", 4, "p7", 1.0, None, 1.0, [("p6", 1.0)], life=2.0)
    _step(logic, [early, stale, ForgetUser("rank-0", "u3", 4, 2.0)])
    assert ("u3", 1) in logic.state.pending and ("u3", 4) not in logic.state.pending
    request = _request("u3", 1, 41.0)
    request.life, request.expected = 40.0, 1
    (rec,), _ = _step(logic, [request])
    assert rec.seq == 1 and "p8" in _items(rec)


def test_a_new_life_is_answered_whatever_seq_its_first_request_carries():
    # With conflation a new life's first request can carry seq 5 (five events in one
    # batch). Waiting for seq 1 left the user without lists until the new life's seq
    # passed the old one (seen in the benchmark: a user who withdrew consent at seq 500
    # and came back had no list for 214 events).
    from operators.messages import ForgetUser

    # Lives are told apart by the profile's first event time (`life`).
    logic = RankLogic(RankStepConfig(), None)
    _step(logic, [TrendDelta("rank-0", [("p1", None, 1.0, 1.0, None)], [])])
    _step(logic, [ForgetUser("rank-0", "u1", 500, 1.0)])
    first = _request("u1", 5, 20.0)
    first.life = 19.0
    out, _ = _step(logic, [first])
    assert [(m.user_id, m.seq) for m in out] == [("u1", 5)]
    # With two processes the new life's answer may come before its request, and an
    # answer of the erased life may come later still: the first counts, the second not.
    _step(logic, [ForgetUser("rank-0", "u2", 7, 1.0)])
    new_answer = ItemAnswer("rank-0", "u2", 2, "p9", 1.0, None, 1.0, [("p8", 1.0)], life=30.0)
    old_answer = ItemAnswer("rank-0", "u2", 6, "p7", 1.0, None, 1.0, [("p6", 1.0)], life=1.0)
    _step(logic, [new_answer, old_answer])
    assert ("u2", 6) not in logic.state.pending
    request = _request("u2", 2, 31.0)
    request.life, request.expected = 30.0, 1
    (rec,), _ = _step(logic, [request])
    assert rec.seq == 2 and "p8" in _items(rec)


def test_a_fresh_system_answers_before_any_trend_news_arrives():
    # Trend news travels item step -> trend step -> rank shard; the first users of a new
    # system must not get empty lists while it is on its way.
    logic = RankLogic(RankStepConfig(), None)
    first = _request("u1", 1, 10.0)
    first.item_id = "p1"
    _step(logic, [first])
    searcher = _request("u2", 1, 11.0)  # a search: no item, no session, no news yet
    (rec,), _ = _step(logic, [searcher])
    assert _items(rec) == ["p1"] and rec.strategy == "recent"


def test_a_shard_dropped_with_requests_waiting_is_not_ranked_by_the_next_run():
    # A run stopped between the batch that completed a request and its ranking call (an
    # abort, a test that resumes the same flow): its shards are gone, and the next run's
    # ranking call must not rank their leftovers again from their stale state.
    import gc

    cfg = RankStepConfig()
    gone = RankLogic(cfg, None)
    out, _ = gone.on_batch([[_request("u-old", 1, 100.0)]])
    assert out == [] and gone.notify_at() is not None  # waiting for the ranking call
    del gone
    gc.collect()
    fresh = RankLogic(cfg, None)
    out, _ = _step(fresh, [_request("u-new", 1, 200.0)])
    assert [rec.user_id for rec in out] == ["u-new"]
    assert fresh.notify_at() is None  # nothing left waiting


def test_requests_waiting_at_a_snapshot_are_ranked_after_a_restore():
    import gc

    cfg = RankStepConfig()
    logic = RankLogic(cfg, None)
    out, _ = logic.on_batch([[_request("u-snap", 1, 100.0)]])
    assert out == []
    snapshot = logic.snapshot()
    del logic  # the process died before the ranking call
    gc.collect()
    restored = RankLogic(RankStepConfig(), snapshot)
    assert restored.notify_at() is not None  # Bytewax asks restored keys too
    out, _ = restored.on_notify()
    assert [(rec.user_id, rec.seq) for rec in out] == [("u-snap", 1)]
    assert restored.notify_at() is None and restored.snapshot() is not None


def test_feedback_rows_kept_per_user_do_not_hold_the_batch_matrix():
    # The blend learns from what a user was shown; each user's rows must be their own
    # array: a slice of the ranking call's matrix would keep every user's rows alive.
    logic = RankLogic(RankStepConfig(conflate=False), None)
    news = TrendDelta("rank-0", [(f"i{n}", None, 1.0 + n, 10.0, None) for n in range(40)], [])
    out, _ = _step(logic, [news] + [_request(f"u{n}", 1, 100.0 + n) for n in range(5)])
    assert len(out) == 5
    shown = logic.state.shown
    assert sorted(shown) == [f"u{n}" for n in range(5)]
    for candidates, rows, _context, ts in shown.values():
        assert rows.base is None and rows.shape[0] == len(candidates) > 0
        assert 100.0 <= ts < 105.0


def _chose(user: str, seq: int, ts: float, item: str) -> RankRequest:
    return dataclasses.replace(_request(user, seq, ts), item_id=item, interaction=1.0)


def test_a_choice_teaches_the_blend_only_within_the_window_of_the_list():
    # The blend learns from the user's last list when their next item event shows what
    # they chose; a choice more than the attribution window later is not an answer to it.
    cfg = RankStepConfig(conflate=False, attribution_window=600.0)
    for gap, learns in [(599.0, True), (601.0, False)]:
        logic = RankLogic(cfg, None)
        news = TrendDelta("rank-0", [(f"i{n}", None, 1.0 + n, 10.0, None) for n in range(40)], [])
        (first,), _ = _step(logic, [news, _request("u", 1, 100.0)])
        chosen = _items(first)[3]
        _step(logic, [_chose("u", 2, 100.0 + gap, chosen)])
        assert (logic.state.blend.updates == 1) is learns, gap


def test_feedback_rows_and_attributed_lists_leave_two_windows_after_their_list():
    # Rows and lists of users who did not come back go once a list two windows newer is
    # written in the shard: memory follows the users of the last two windows, not all.
    cfg = RankStepConfig(conflate=False, attribution_window=600.0)
    logic = RankLogic(cfg, None)
    news = TrendDelta("rank-0", [(f"i{n}", None, 1.0 + n, 10.0, None) for n in range(40)], [])
    _step(logic, [news] + [_request(f"old{n}", 1, 100.0 + n) for n in range(3)])
    _step(logic, [_request("mid", 1, 800.0)])
    st = logic.state
    assert sorted(st.shown) == ["mid", "old0", "old1", "old2"]  # 700 s: within two windows
    assert len(st.attribution.lists) == 4
    _step(logic, [_request("new", 1, 1301.5)])  # old0 and old1 are now > 1,200 s older
    assert sorted(st.shown) == ["mid", "new", "old2"]
    assert sorted(s.user for s in st.attribution.lists.values()) == ["mid", "new", "old2"]


def test_an_event_stamped_hours_ahead_does_not_expire_everyone_elses_lists():
    # Lists expire two windows behind the newest event, but never later than the wall
    # clock allows: one client with a clock a day ahead must not take every list along.
    now = time.time()
    cfg = RankStepConfig(conflate=False, attribution_window=600.0)
    logic = RankLogic(cfg, None)
    news = TrendDelta("rank-0", [(f"i{n}", None, 1.0 + n, now - 60.0, None) for n in range(40)], [])
    _step(logic, [news] + [_request(f"u{n}", 1, now - 10.0 + n) for n in range(5)])
    _step(logic, [_request("ahead", 1, now + 22 * 3600.0)])
    st = logic.state
    assert sorted(st.shown) == ["ahead", "u0", "u1", "u2", "u3", "u4"]
    assert len(st.attribution.lists) == 6
