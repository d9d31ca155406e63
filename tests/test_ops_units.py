"""The metric types of ``streamrec.metrics`` and the ops endpoint's helpers, without a worker."""

from __future__ import annotations

import doctest
import threading

import numpy as np

import connectors.ops_server
import streamrec.metrics
from streamrec.metrics import BatchHistogram, Tally


def test_docstring_examples_run():
    for module in (streamrec.metrics, connectors.ops_server):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_tally_loses_nothing_under_concurrent_threads_and_scrapes():
    tally = Tally("t_total", "test", "type", registry=None)
    per_thread, threads = 20_000, 4
    stop = threading.Event()

    def scrape_forever():
        while not stop.is_set():
            tally.totals()

    scraper = threading.Thread(target=scrape_forever)
    scraper.start()
    workers = [threading.Thread(target=lambda: [tally.add("view" if i % 3 else "click")
                                                for i in range(per_thread)])
               for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    stop.set()
    scraper.join()
    totals = tally.totals()
    assert sum(totals.values()) == per_thread * threads
    assert totals["click"] == threads * len(range(0, per_thread, 3))


def test_batch_histogram_matches_prometheus_le_semantics():
    h = BatchHistogram("h_seconds", "test", (0.01, 0.1, 1.0), registry=None)
    values = np.array([0.0, 0.01, 0.0100001, 0.1, 0.5, 1.0, 7.0])
    h.observe_many(values[:3])
    h.observe_many(values[3:])
    h.observe_many([])
    samples = {(s.name, s.labels.get("le")): s.value for s in next(iter(h.collect())).samples}
    assert samples[("h_seconds_bucket", "0.01")] == 2  # 0.0 and 0.01 (le is inclusive)
    assert samples[("h_seconds_bucket", "0.1")] == 4
    assert samples[("h_seconds_bucket", "1.0")] == 6
    assert samples[("h_seconds_bucket", "+Inf")] == 7
    assert samples[("h_seconds_count", None)] == 7
    assert abs(samples[("h_seconds_sum", None)] - values.sum()) < 1e-9


def test_every_metric_is_documented_and_the_dashboard_uses_only_real_ones():
    import json
    import re
    from pathlib import Path

    from prometheus_client import REGISTRY

    root = Path(__file__).resolve().parents[1]
    names = set()
    for family in REGISTRY.collect():
        if family.name.startswith("streamrec_"):
            suffix = "_total" if family.type == "counter" else ""
            names.add(family.name + suffix)
    assert len(names) >= 12
    doc = (root / "docs" / "operations.md").read_text()
    assert not [n for n in names if f"`{n}`" not in doc], "undocumented metrics"
    dashboard = json.loads((root / "docs" / "grafana-dashboard.json").read_text())
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"streamrec_[a-z_]+", target["expr"]))
    known = names | {f"{n}_{s}" for n in names for s in ("bucket", "sum", "count")}
    assert used and used <= known, used - known


def test_tally_keeps_one_dict_per_worker_thread_across_bytewax_batches():
    # Bytewax calls Python from its worker threads with a thread state that lasts one
    # call: a thread-local dict was a new one every batch (kept and summed for ever).
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, cluster_main

    tally = Tally("t_batches_total", "test", "kind", registry=None)

    def count(batch):
        tally.add("event", len(batch))
        return batch

    flow = Dataflow("tally")
    stream = op.redistribute("spread", op.input("in", flow, TestingSource(list(range(1_000)),
                                                                           batch_size=10)))
    op.output("out", op.flat_map_batch("count", stream, count), TestingSink([]))
    cluster_main(flow, [], 0, worker_count_per_proc=2)
    assert tally.totals() == {"event": 1_000}
    assert 1 <= len(tally._shards) <= 2  # one per worker thread, not one per batch
