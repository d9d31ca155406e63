"""Validation splits for tuning: only warm-up data, rec15-style held-out sessions."""

from __future__ import annotations

from evaluation.tune import _session_split

DAY = 86400.0


def _ev(n: int, session: str, item: str, ts: float) -> dict:
    return {"event_id": f"e{n}", "ts": ts, "user_id": session, "session_id": session,
            "type": "click", "item_id": item}


def test_sessions_ending_in_the_last_day_are_held_out_with_known_items_only():
    warm = [
        _ev(1, "old", "a", 0.0), _ev(2, "old", "b", 10.0),            # ends 3 days early
        _ev(3, "late", "a", 2.5 * DAY), _ev(4, "late", "new", 2.6 * DAY),
        _ev(5, "late", "b", 2.9 * DAY), _ev(6, "late", "a", 3.0 * DAY),  # held out
        _ev(7, "short", "a", 2.95 * DAY), _ev(8, "short", "zz", 2.96 * DAY),  # 1 known item
        _ev(9, "mid", "c", 1.0 * DAY), _ev(10, "mid", "a", 1.1 * DAY),
    ]
    events, _, start = _session_split(warm, {}, days=1.0)
    ids = [e["event_id"] for e in events]
    assert ids == ["e1", "e2", "e9", "e10", "e3", "e5", "e6"]  # time order, "new" item dropped
    assert start == 2.5 * DAY  # a held-out session may start before the last day
    assert all(e["ts"] < start for e in events if e["user_id"] != "late")
