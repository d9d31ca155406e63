"""Shop rules and new catalog items through the whole recommend flow, changed mid-stream."""

from __future__ import annotations

import datetime
import pickle
import random

from bytewax.recovery import RecoveryConfig, init_db_dir
from bytewax.testing import TestingSource, run_main

from models.rules import parse_rule
from operators.messages import (
    ItemFeatures, RecUpdate, RulesUpdate, RulesWrite, TrendDelta,
)
from operators.rank_state import RankStepConfig
from operators.rank_step import RankLogic
from operators.worker_models import WorkerModels
from operators.messages import Envelope
from tests.flowkit import build_test_flow

T0 = 1_732_680_000.0
CATS = ("shoes", "hats", "bags")


def _catalog() -> list[dict]:
    return [{"item_id": f"{c[0]}{i}", "category": c, "price": 10.0 + 10 * i, "available": True,
             "attributes": {"brand": f"x{i % 3}"}}
            for c in CATS for i in range(20)]


class _Stream:
    """Events, catalog records and rule records in the order the flow reads them."""

    def __init__(self, seed: int = 1) -> None:
        self.rng = random.Random(seed)
        # The catalog is loaded before any event, as a replay or a fresh system does.
        self.items: list = [Envelope(r, None, "items") for r in _catalog()]
        self.items.append(TestingSource.EOF())
        self.n = 0
        self.ts = T0

    def event(self, user: str, item: str, event_id: str | None = None) -> None:
        self.n += 1
        self.ts += 1.0
        self.items.append({"event_id": event_id or f"e{self.n}", "ts": self.ts, "user_id": user,
                           "type": "view", "item_id": item,
                           "category": {"s": "shoes", "h": "hats", "b": "bags"}[item[0]]})

    def traffic(self, n: int) -> None:
        for _ in range(n):
            user = self.rng.randrange(40)
            cat = CATS[user % 3]
            self.event(f"u{user}", f"{cat[0]}{self.rng.randrange(20)}")

    def control(self, record) -> None:
        self.items.append(Envelope(record, None, "controls"))

    def catalog(self, record: dict) -> None:
        self.items.append(Envelope(record, None, "items"))

    def settle(self) -> None:
        """The flow finishes everything before this point before it reads on (an EOF of
        the source: the next run, resumed from recovery, continues after it)."""
        self.items.append(TestingSource.EOF())


def _run(entry_point, s: _Stream, tmp_path, flow_id: str = "controls"):
    """Run the stream through the flow to its end, run after run (one per EOF)."""
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    flow, out, dead = build_test_flow(s.items, flow_id=flow_id)
    for _ in range(sum(isinstance(i, TestingSource.EOF) for i in s.items) + 1):
        entry_point(flow, epoch_interval=datetime.timedelta(0), recovery_config=recovery)
    return out, dead


def _lists(out) -> dict[str, RecUpdate]:
    return {r.trigger_event_id: r for r in out if isinstance(r, RecUpdate)}


def test_rules_sent_mid_stream_change_the_next_lists(entry_point, tmp_path):
    s = _Stream()
    s.traffic(300)
    price = {r["item_id"]: r["price"] for r in _catalog()}

    def probe(tag: str) -> None:
        # Rules travel a shorter route than events: settled before and after, so that
        # the list before a rule cannot see it and the one after must.
        s.settle()
        s.traffic(20)
        s.event("probe", f"s{len(tag)}", f"probe-{tag}")
        s.settle()

    probe("before")
    s.control({"rule_id": "r1", "action": "boost", "match": {"category": "hats"}, "factor": 1000})
    probe("boost")
    s.control(b'{"rule_id": "r2", "action": "pin", "item_id": "b7", "position": 1}')
    s.control(b'{"rule_id": "bad", "action": "promote"}')
    probe("pin")
    s.control({"rule_id": "r3", "action": "block", "match": {"category": "hats"}})
    s.control({"rule_id": "r5", "action": "block", "match": {"item_id": "b7"}})
    probe("block")
    s.control({"rule_id": "r4", "action": "filter", "match": {"price_max": 100}})
    probe("filter")
    s.control({"rule_id": "r3", "action": "delete"})
    s.control({"rule_id": "r5", "action": "delete"})
    probe("delete")
    out, dead = _run(entry_point, s, tmp_path)
    lists = _lists(out)

    def items(tag):
        return [i for i, _ in lists[f"probe-{tag}"].items]

    def reasons(tag):
        return lists[f"probe-{tag}"].reasons

    assert all("rule" not in r and r["kind"] != "pinned" for r in reasons("before"))
    assert items("boost")[0].startswith("h") and reasons("boost")[0]["rule"] == "r1"
    assert items("pin")[0] == "b7" and reasons("pin")[0] == {"kind": "pinned", "rule": "r2"}
    assert items("pin")[1].startswith("h") and items("pin").count("b7") == 1
    blocked = items("block")
    assert blocked and not any(i.startswith("h") for i in blocked) and "b7" not in blocked
    filtered = items("filter")
    assert filtered and all(price[i] <= 100 for i in filtered)
    assert not any(i.startswith("h") for i in filtered)
    undone = items("delete")
    assert undone[0] == "b7" and undone[1].startswith("h") and reasons("delete")[1]["rule"] == "r1"
    assert all(price[i] <= 100 for i in undone)
    assert [(d.reason, d.source) for d in dead] == [("action:unknown", "controls")]
    last = max((m for m in out if isinstance(m, RulesWrite)), key=lambda m: m.seq)
    assert [r["rule_id"] for r in last.records] == ["r1", "r2", "r4"]


def test_a_new_catalog_item_is_listed_to_its_category_within_a_batch(entry_point, tmp_path):
    s = _Stream(seed=2)
    s.traffic(300)
    s.event("hat-fan", "h1", "fan-before")
    s.settle()
    s.catalog({"item_id": "h-fresh", "category": "hats", "price": 15.0, "tags": ["wool"]})
    s.traffic(49)  # the record and the probe in one batch of the source (50)
    s.event("hat-fan", "h2", "fan-after")
    s.event("shoe-fan", "s2", "shoe-after")
    out, dead = _run(entry_point, s, tmp_path)
    lists = _lists(out)
    assert not dead
    before = [r for r in lists.values() if r.trigger_event_id != "fan-after"
              and any(reason["kind"] == "new" for reason in r.reasons or [])]
    # The catalog loaded before the events brings no new items, only the record that
    # came while events flowed.
    assert {i for r in before for (i, _), reason in zip(r.items, r.reasons)
            if reason["kind"] == "new"} <= {"h-fresh"}
    after = lists["fan-after"]
    assert after.items[-1][0] == "h-fresh" and len(after.items) == 20
    assert after.reasons[-1] == {"kind": "new", "category": "hats"}
    assert "h-fresh" not in [i for i, _ in lists["shoe-after"].items]


def test_rules_survive_an_abort_and_resume(tmp_path):
    s = _Stream(seed=3)
    s.traffic(200)
    s.control({"rule_id": "r2", "action": "pin", "item_id": "b7", "position": 2})
    s.traffic(200)
    s.items.append(TestingSource.ABORT())
    s.traffic(100)
    s.event("probe", "s3", "probe-resumed")
    init_db_dir(tmp_path, 1)
    recovery = RecoveryConfig(str(tmp_path))
    flow, out, _ = build_test_flow(s.items, flow_id="resumed")
    for _ in range(2):  # the catalog, then the events up to the abort
        run_main(flow, epoch_interval=datetime.timedelta(0), recovery_config=recovery)
    assert "probe-resumed" not in _lists(out)  # it really stopped part way
    run_main(flow, epoch_interval=datetime.timedelta(0), recovery_config=recovery)
    got = _lists(out)["probe-resumed"]
    assert got.items[1][0] == "b7" and got.reasons[1] == {"kind": "pinned", "rule": "r2"}


def test_worker_models_keep_rules_prices_and_new_items_through_a_snapshot():
    cfg = RankStepConfig()
    logic = RankLogic(cfg, None)
    rules = (parse_rule({"rule_id": "r1", "action": "filter", "match": {"price_max": 50}}),)
    logic.on_batch([[
        TrendDelta("rank-0", [("p1", "hats", 2.0, T0, None)], [], "trend-0", 1),
        ItemFeatures("rank-0", "p9", "hats", None, 20.0, {"brand": "x"}, True),
        RulesUpdate("rank-0", 2, rules),
        RulesUpdate("rank-0", 1, ()),  # an older set that came late: ignored
    ]])
    resumed = RankLogic(RankStepConfig(), logic.snapshot()).models()
    assert [r.rule_id for r in resumed.rules.rules] == ["r1"] and resumed.rules_seq == 2
    assert resumed.item_price == {"p9": 20.0} and resumed.item_attributes == {"p9": {"brand": "x"}}
    assert resumed.new_items.newest("hats", T0) == ["p9"]


def test_worker_models_from_before_rules_restore_with_none():
    models = WorkerModels(3600.0, 100, 10, 100)
    models.learn_category("p1", "hats")
    old = models.__getstate__()[:8]  # the fields a snapshot had before rules
    restored = WorkerModels.__new__(WorkerModels)
    restored.__setstate__(old)
    assert restored.item_category == {"p1": "hats"} and len(restored.rules) == 0
    assert restored.item_price == {} and len(restored.new_items) == 0
    assert pickle.loads(pickle.dumps(restored)).rules_seq == 0


def test_a_fresh_shard_lists_the_users_own_items_then_the_catalog_rather_than_nothing():
    """The very first lists of a fresh system, before any signal or trend news: the
    shard's users' recent items, else the user's own, else the catalog the worker knows."""
    from operators.messages import RankRequest

    logic = RankLogic(RankStepConfig(snapshots=False), None)
    shared = logic.models()
    request = RankRequest("rank-0", "u1", 1, T0, "e1", "search", None, 0, None, 0.0, [], [],
                          None, None, [], ["hats3"])
    assert logic._last_resort(request, shared) == []  # nothing known at all
    for item in ("hats1", "hats2", "hats3"):
        shared.learn_category(item, "hats")
    assert [i for i, _ in logic._last_resort(request, shared)] == ["hats2", "hats1"]
    request.seen = ["shoes9"]
    assert [i for i, _ in logic._last_resort(request, shared)][:2] == ["shoes9", "hats2"]
