"""A short evaluation through the production dataflow, on the YooChoose-format test file."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from connectors.datasets import DATASET_FOLDERS, load_dataset
from streamrec.cli import main

TEST_DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def yoochoose_slice(tmp_path_factory):
    ds = load_dataset("yoochoose", TEST_DATA / DATASET_FOLDERS["yoochoose"])
    events = ds.events[:12_000]
    path = tmp_path_factory.mktemp("eval") / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    return path, events


def test_eval_on_a_slice_beats_popularity_and_writes_every_output(yoochoose_slice, tmp_path, capsys):
    path, events = yoochoose_slice
    out, report, chart = tmp_path / "recs.jsonl", tmp_path / "report.json", tmp_path / "chart.png"
    assert main(["eval", "--events", str(path), "--out", str(out), "--json", str(report),
                 "--plot", str(chart)]) == 0
    table = capsys.readouterr().out
    assert "| streamrec |" in table and "| V-SKNN |" in table
    data = orjson.loads(report.read_bytes())
    res = data["results"]
    assert res["streamrec"]["scored"] == res["POP"]["scored"] > 500
    assert res["streamrec"]["HR@20"] > res["POP"]["HR@20"] * 2
    assert res["streamrec"]["MRR@20"] > res["POP"]["MRR@20"] * 2
    # New-item targets (not seen earlier in the session): the same targets for every strategy.
    assert "HR@20_new | MRR@20_new" in table
    assert {r["scored_new"] for r in res.values()} == {res["streamrec"]["scored_new"]}
    assert 100 < res["streamrec"]["scored_new"] < res["streamrec"]["scored"]
    for r in res.values():
        assert 0 <= r["MRR@20_new"] <= r["HR@20_new"] <= 1
    assert res["streamrec"]["HR@20_new"] > res["POP"]["HR@20_new"]
    lines = out.read_bytes().splitlines()
    assert len(lines) == len(events)  # one update per event, none conflated away
    first = orjson.loads(lines[0])
    assert {"user_id", "trigger_event_id", "items", "strategy", "model_version"} <= set(first)
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("dataset", ["yoochoose", "movielens"])
def test_two_processes_give_the_same_lists(dataset, yoochoose_slice, tmp_path):
    # yoochoose: sessions, no catalog; movielens: a catalog of every item, loaded first,
    # whose records reach each worker in an order that depends on the worker count.
    from streamrec.eval_cli import run_eval

    if dataset == "yoochoose":
        events, items = yoochoose_slice[1][:6000], []
    else:
        ds = load_dataset("movielens", TEST_DATA / DATASET_FOLDERS["movielens"])
        events, items = ds.events[:4000], ds.items
    test_start = events[int(len(events) * 0.7)]["ts"]
    one = run_eval("slice", events, items, test_start, processes=1, baselines=False,
                   progress=False, out=str(tmp_path / "one.jsonl"))
    two = run_eval("slice", events, items, test_start, processes=2, baselines=False,
                   progress=False, out=str(tmp_path / "two.jsonl"))
    scored = one["results"]["streamrec"]["scored"]
    assert scored == two["results"]["streamrec"]["scored"] > 300
    # The lock-step replay waits for every answer and every model update an event set
    # off, and ties are broken the same way whatever order messages arrive in: the
    # worker count must not change a single list.
    def lists(path):
        recs = (orjson.loads(line) for line in path.read_bytes().splitlines())
        return {r["trigger_event_id"]: [i["item_id"] for i in r["items"]] for r in recs}

    lists_one, lists_two = lists(tmp_path / "one.jsonl"), lists(tmp_path / "two.jsonl")
    assert len(lists_one) == len(events)
    differ = [e for e in lists_one if lists_one[e] != lists_two.get(e)]
    assert not differ, f"{len(differ)} lists differ, first {differ[0]}"
    assert one["results"]["streamrec"]["HR@20"] == two["results"]["streamrec"]["HR@20"]


def test_every_model_update_a_replay_sends_lands(yoochoose_slice, tmp_path, caplog):
    # The lock-step replay waits for "news in flight" to come back to zero; a step that
    # counted a message as sent but not as landed (or the reverse) would stall every
    # event, or let the source run ahead. Two processes: the news crosses between them.
    import logging

    from evaluation.pacing import ProgressBoard
    from evaluation.replay import read_recs, replay

    path, events = yoochoose_slice
    small = tmp_path / "small.jsonl"
    small.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events[:1500]))
    with caplog.at_level(logging.WARNING, logger="evaluation.pacing"):
        replay(small, tmp_path / "out", processes=2, progress=False)
    assert not [r for r in caplog.records if "did not land" in r.getMessage()]
    board = ProgressBoard(tmp_path / "out" / "progress.board")
    assert board.news() == 0
    assert board.total() == len(read_recs(tmp_path / "out")) == 1500


def test_events_without_a_list_do_not_stall_the_lock_step_replay(tmp_path, caplog, monkeypatch):
    # A duplicate, consent withdrawal and grant, an event while consent is withdrawn and
    # an erasure leave no list; the replay must know they are done, not wait for a stall
    # (2 s per event, then "passed over" with a warning) before it reads on.
    import logging

    from evaluation.replay import read_recs, replay

    t0 = 1_700_000_000.0

    def ev(i, user, etype="view", item="p1", **extra):
        return {"event_id": f"e{i}", "ts": t0 + i, "user_id": user, "type": etype,
                "item_id": item, "category": "c", **extra}

    events = [ev(0, "u1"), ev(1, "u1", item="p2"), ev(1, "u1", item="p2"),  # duplicate
              ev(2, "u2"), ev(3, "u2", "consent", None, value=0), ev(4, "u2", item="p3"),
              ev(5, "u2", "consent", None, value=1), ev(6, "u2", item="p4"),
              ev(7, "u1", "erase", None), ev(8, "u1", item="p5")]
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    with caplog.at_level(logging.WARNING, logger="evaluation.pacing"):
        replay(path, tmp_path / "out", progress=False)
    assert not [r for r in caplog.records if "left no record" in r.getMessage()]
    got = sorted(r["trigger_event_id"] for r in read_recs(tmp_path / "out"))
    assert got == ["e0", "e1", "e2", "e6", "e8"]

    # Batches of several events: an erasure drops the lists its user's earlier events of
    # the same batch would have had (never ranked into the new life), and says so.
    monkeypatch.setenv("STREAMREC_EVAL_BATCH", "3")
    events = [ev(0, "u1"), ev(1, "u1", "erase", None), ev(2, "u1", item="p3"),  # one batch
              ev(3, "u2"), ev(4, "u1", item="p4"), ev(5, "u3")]
    path.write_bytes(b"\n".join(orjson.dumps(e) for e in events) + b"\n")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="evaluation.pacing"):
        replay(path, tmp_path / "out3", progress=False)
    assert not [r for r in caplog.records if "left no record" in r.getMessage()]
    recs = {r["trigger_event_id"]: r for r in read_recs(tmp_path / "out3")}
    assert sorted(recs) == ["e2", "e3", "e4", "e5"]
    assert [i["item_id"] for i in recs["e2"]["items"]] == ["p3"]  # nothing of the old life
