"""`streamrec bench` at tiny sizes: every phase runs and yields sane numbers (no timing bars)."""

from __future__ import annotations

import doctest
import importlib
import math

import orjson
import pytest
import redis

from bench.harness import BenchOptions, run_bench
from bench.report import to_markdown

BENCH_MODULES = ["bench.ceiling", "bench.workload", "bench.process", "bench.profile", "bench.report"]


@pytest.mark.parametrize("name", BENCH_MODULES)
def test_bench_doctests(name):
    # testpaths collects these doctests as well; this also checks each module keeps examples.
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.integration
def test_bench_runs_every_phase_at_tiny_sizes(kafka, redis_server, tmp_path, monkeypatch):
    # A relative --keep-dir, as typed on a command line: workers, broker and Redis run
    # in other directories, so the harness must hand them absolute paths.
    monkeypatch.chdir(tmp_path)
    opts = BenchOptions(events=1500, skip=frozenset({"taobao"}), latency_seconds=1.0,
                        memory_events=800, json_path=str(tmp_path / "bench.json"),
                        markdown_path=str(tmp_path / "bench.md"), keep_dir="work",
                        progress=False, bootstrap=kafka.bootstrap, redis_url=redis_server.url,
                        run_timeout=180)
    report = run_bench(opts)

    runs = report["throughput"]
    assert {(r["flow"], r["processes"], r["recovery"]) for r in runs} == {
        ("ceiling", 1, False), ("full", 1, False), ("ceiling", 2, False), ("full", 2, False),
        ("full", 1, True)}
    for r in runs:
        assert r["complete"] and r["events"] == 1500, r
        assert 0 < r["matched"] == r["users"] <= 1500
        assert r["events_per_s"] > 0 and r["seconds"] > 0 and r["cpu_us_per_event"] > 0
        assert r["rss_mib"] > 10
    # The ceiling answers every event; the full pipeline conflates per batch.
    ceiling = next(r for r in runs if r["flow"] == "ceiling" and r["processes"] == 1)
    assert ceiling["recs_added"] == 1500
    ratios = report["ratios"]["generated"]
    assert all(v is not None and v > 0 for v in ratios.values()), ratios

    assert [row["label"] for row in report["latency"]] == ["1000/s", "3000/s", "80% of max"]
    for row in report["latency"]:
        assert row["entries"] > 0 and row["samples"] > 0
        assert 0 < row["p50"] <= row["p95"] <= row["p99"] <= row["max"] < 120_000

    mem = report["memory"]
    assert mem["rss_serving_mib"] > 10 and mem["active_users"] > 0
    assert mem["users_answered"] == mem["users_expected"] > 0
    assert math.isfinite(mem["kib_per_user"]) and math.isfinite(mem["kib_per_item"])

    rec = report["recovery"]
    assert rec["complete"] and rec["with_events_per_s"] > 0 and rec["store_mib"] >= 0

    assert {t["target"] for t in report["targets"]} >= {
        "generated: full >= 30% of ceiling, 1 process", "p99 <= 50 ms at 1000/s",
        "p99 <= 100 ms at 3000/s",
        "<= 2 KiB RSS per active user"}
    saved = orjson.loads((tmp_path / "bench.json").read_bytes())
    assert saved["throughput"] == runs and saved["machine"]["nproc"] >= 1
    markdown = (tmp_path / "bench.md").read_text()
    assert markdown == to_markdown(report) + "\n"
    assert "| generated | full | 1 |" in markdown and "### Latency" in markdown
    # Every run cleaned up its Redis keys.
    client = redis.Redis.from_url(redis_server.url)
    assert not list(client.scan_iter("bench-*", count=1000))


def test_bench_steps_runs_the_flow_in_process_and_fingerprints_its_lists():
    from bench.steps import call_costs, run_steps
    from bench.workload import generated_workload

    wl = generated_workload(1200, n_users=120, n_items=60)
    small = run_steps(wl, batch_size=5)
    again = run_steps(wl, batch_size=5)
    large = run_steps(wl, batch_size=400)
    # Every user with an event gets lists; the same input and batching give the same lists.
    assert small.lists > 0 and small.events == 1200
    assert small.fingerprint == again.fingerprint and small.lists == again.lists
    users = {key for key, _ in wl.payloads}
    assert small.lists >= len(users)
    # Ranking calls are counted from the worker's own metrics: every list was ranked in
    # one (lists of last resort too), and small batches make more calls.
    assert small.rank_requests == small.lists and large.rank_requests == large.lists
    assert small.rank_requests >= small.rank_calls > large.rank_calls > 0
    assert small.cpu_seconds > 0 and small.rank_seconds > 0
    assert small.rank_seconds < small.cpu_seconds


def test_call_costs_solves_fixed_and_per_request_parts():
    from bench.steps import StepRun, call_costs

    def run(calls, requests):  # 500 us per call + 200 us per request
        return StepRun("w", 100, 1, 1.0, 1.0, 1, "x", calls, requests,
                       calls * 500e-6 + requests * 200e-6)

    fixed, per_request = call_costs(run(1000, 2000), run(10, 600))
    assert fixed == pytest.approx(500.0) and per_request == pytest.approx(200.0)
    assert call_costs(run(100, 200), run(50, 100)) is None  # same requests per call
    assert call_costs(run(0, 0), run(10, 600)) is None
