"""How messages travel between the steps of the recommend flow: bundles per destination
and batch (dataflows.routing), catalog features to every rank shard, one ranking call per
worker for all its rank shards."""

from __future__ import annotations

from bytewax.testing import TestingSource, run_main

from operators.messages import RecUpdate
from streamrec.settings import Settings
from tests.flowkit import build_test_flow

T0 = 1_732_680_000.0


def _by_type(out, cls):
    return [m for m in out if isinstance(m, cls)]


def test_catalog_features_reach_every_rank_shard_in_one_bundle_per_shard_and_batch(
        entry_point, monkeypatch):
    """Each catalog change reaches every rank shard (with two workers too), travels in
    one message per shard and batch, not one per item and shard, and is applied once per
    worker to the models its shards share, not once per shard."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink

    from dataflows.recommend import wire
    from operators.messages import Envelope, FeaturesBundle, ItemFeatures
    from operators.worker_models import WorkerModels

    catalog = [{"item_id": f"c{i}", "category": f"k{i % 3}", "price": 1.0 + i} for i in range(120)]
    got: list = []  # (shard logic id, message) for every catalog message the rank step takes

    def observe(step, logic):
        if step != "rank":
            return logic
        inner_batch = logic.on_batch

        def on_batch(values):
            got.extend((id(logic), m) for bundle in values for m in bundle
                       if isinstance(m, (FeaturesBundle, ItemFeatures)))
            return inner_batch(values)
        logic.on_batch = on_batch
        return logic

    applied: dict[int, list[str]] = {}  # worker models -> items set, in order
    set_features = WorkerModels.set_features

    def counted(self, item, *args, **kw):
        applied.setdefault(id(self), []).append(item)
        return set_features(self, item, *args, **kw)
    monkeypatch.setattr(WorkerModels, "set_features", counted)

    settings = Settings(rank_shards=8)
    flow = Dataflow("bundles")
    events = op.input("in", flow, TestingSource([Envelope({"user_id": "u1", "item_id": "c1", "type": "view",
                                                            "ts": 1_732_680_000.0, "event_id": "e1"})]))
    items = op.input("items", flow, TestingSource([Envelope(c, None, "items") for c in catalog], batch_size=40))
    outputs, _ = wire(flow, events, items, settings, snapshots=False, observe=observe)
    op.output("out", outputs, TestingSink([]))
    entry_point(flow)

    assert got and all(isinstance(m, FeaturesBundle) for _, m in got)
    per_shard: dict[int, list[str]] = {}
    for shard, m in got:
        per_shard.setdefault(shard, []).extend(f.item_id for f in m.features)
    assert len(per_shard) == 8
    for items_seen in per_shard.values():
        assert sorted(items_seen) == sorted(c["item_id"] for c in catalog)
    # 3 source batches of 40 records: at most one bundle per shard for each batch a worker's
    # item step emitted (one per worker and batch), never one per item.
    assert len(got) <= 8 * 3 * 2 < len(catalog) * 8
    # One worker's shards share their models: each change is applied once per worker.
    assert applied and all(sorted(items) == sorted(c["item_id"] for c in catalog)
                           for items in applied.values())


def test_rank_and_trend_steps_get_one_message_per_destination_and_batch(entry_point):
    """60 users' events in source batches of 30 reach 8 rank shards and the trending
    aggregators as bundles: at most one per destination key for each batch a worker's
    upstream step emitted, each in the order sent, never one per event."""
    from dataflows.recommend import wire
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink

    from operators.messages import Envelope, RankRequest

    events = [{"event_id": f"e{i}", "ts": T0 + i, "user_id": f"user-{i % 60}", "type": "view",
               "item_id": f"p{i % 13}", "category": f"c{i % 3}"} for i in range(120)]
    got: dict[str, list] = {"rank": [], "trend": []}

    def observe(step, logic):
        if step not in got:
            return logic
        inner_batch = logic.on_batch

        def on_batch(values):
            got[step].extend(values)
            return inner_batch(values)
        logic.on_batch = on_batch
        return logic

    flow = Dataflow("bundled")
    src = op.input("in", flow, TestingSource([Envelope(e) for e in events], batch_size=30))
    # Without conflation every event asks for a list: with it, a user's two events that
    # reach the user step in one batch (two workers may hand it two source batches at
    # once) ask once, and the count below would depend on timing.
    settings = Settings(rank_shards=8, conflate=False)
    outputs, _ = wire(flow, src, None, settings, snapshots=False, observe=observe)
    recs: list = []
    op.output("out", outputs, TestingSink(recs))
    entry_point(flow)

    assert all(isinstance(b, list) and b for bundles in got.values() for b in bundles)
    for bundles in got.values():  # one route per bundle
        assert all(len({m.route for m in b}) == 1 for b in bundles)
    requests = [m for b in got["rank"] for m in b if isinstance(m, RankRequest)]
    assert len(requests) == len(events)  # every event's request arrived, once
    # 4 source batches; the user and item steps each emit once per batch and worker.
    assert len(got["rank"]) <= 8 * 4 * 2 * 2 < len(events) * 2
    # 4 aggregators; reports from the item step, segment hits from the user step.
    reports = sum(len(b) for b in got["trend"])
    assert len(got["trend"]) <= 4 * 4 * 2 * 2 and reports > len(got["trend"])
    # Within a shard, a user's requests arrive in the order of their events.
    for user in {m.user_id for m in requests}:
        seqs = [m.seq for m in requests if m.user_id == user]
        assert seqs == sorted(seqs)
    assert {r.user_id for r in recs if isinstance(r, RecUpdate)} == {e["user_id"] for e in events}


def test_a_worker_ranks_the_requests_of_all_its_rank_shards_in_one_call():
    """40 users' first events in one batch, 8 rank shards, one worker: one ranking call
    for all 40 lists (one per shard would be 8 calls of 5)."""
    from bench.steps import _rank_totals

    events = [{"event_id": f"e{u}", "ts": T0 + u, "user_id": f"user-{u}", "type": "view",
               "item_id": f"p{u % 7}", "category": "cat"} for u in range(40)]
    flow, out, dead = build_test_flow(events, Settings(rank_shards=8), snapshots=False)
    calls, requests, _ = _rank_totals()
    run_main(flow)
    calls2, requests2, _ = _rank_totals()
    recs = _by_type(out, RecUpdate)
    assert sorted(r.user_id for r in recs) == sorted(e["user_id"] for e in events)
    assert not dead
    assert requests2 - requests == 40
    assert calls2 - calls == 1


def test_restored_worker_models_forget_the_feature_origins_of_the_old_process():
    # Bundles are numbered per process start: the old process's origins never send
    # again, so a snapshot does not carry them on; trend origins stay (they are keys).
    import pickle

    from operators.worker_models import WorkerModels

    models = WorkerModels(3600.0, 100, 10, 100)
    assert models.take_copy("features:abc:1", 3) and not models.take_copy("features:abc:1", 2)
    assert models.take_broadcast("trend-0", 7, 0.0, [], [])
    restored = pickle.loads(pickle.dumps(models))
    assert restored.last_news == {"trend-0": 7}
    assert not restored.take_broadcast("trend-0", 7, 0.0, [], [])  # a copy already taken
