"""The recommend flow in one process, without broker or Redis (``streamrec bench-steps``).

The whole flow (``dataflows.recommend.wire``: parse, user, item, trend and rank steps)
runs under Bytewax's ``run_main`` over the first N events of a workload, fed from memory
in source batches of a chosen size, into a sink that only counts and fingerprints the
lists. What is left is the worker's own CPU per event, without the broker, Redis, the
producer and the other processes that share the cores in ``streamrec bench`` (whose
figures move 10% between runs on a 2-core machine, hiding smaller changes).

Each run reports:

- CPU microseconds per event (``time.process_time``, this process; the median over
  ``repeat`` runs);
- lists written, and a fingerprint of every list (user, sequence number, items): two
  versions of the code that give the same fingerprint wrote the same lists;
- ranking calls (``streamrec_rank_call_seconds``/``_requests``): how many, requests per
  call, microseconds per call. Two source batch sizes give two points of the line
  ``seconds per call = fixed + per request * requests``, printed as the fixed cost per
  call and the cost per request.

Small source batches behave like a live stream at a modest rate (a few events per
batch); batches of 1,000 like a backlog.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import os
import time
from typing import Iterable, Sequence

__all__ = ["StepRun", "run_steps", "call_costs"]


@dataclasses.dataclass
class StepRun:
    """One in-process run of the flow."""

    workload: str
    events: int
    batch_size: int
    cpu_seconds: float
    wall_seconds: float
    lists: int
    fingerprint: str
    rank_calls: int
    rank_requests: int
    rank_seconds: float

    @property
    def us_per_event(self) -> float:
        return 1e6 * self.cpu_seconds / max(self.events, 1)

    def as_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["us_per_event"] = round(self.us_per_event, 1)
        return out


class _Lists:
    """A sink's list that keeps only a digest of each recommendation update."""

    def __init__(self) -> None:
        self.keys: list[tuple] = []

    def __iadd__(self, items: Iterable) -> "_Lists":
        from operators.messages import RecUpdate

        self.keys.extend((m.user_id, m.seq, tuple(i for i, _ in m.items))
                         for m in items if isinstance(m, RecUpdate))
        return self

    def fingerprint(self) -> str:
        return hashlib.sha1(repr(sorted(self.keys)).encode()).hexdigest()[:12]


def _rank_totals() -> tuple[float, float, float]:
    """(calls, requests, seconds) observed by the ranking-call histograms so far."""
    from prometheus_client import REGISTRY

    def value(name: str) -> float:
        got = REGISTRY.get_sample_value(name)
        return got or 0.0

    return (value("streamrec_rank_call_requests_count"),
            value("streamrec_rank_call_requests_sum"),
            value("streamrec_rank_call_seconds_sum"))


def run_steps(workload, events: int | None = None, batch_size: int = 1000,
              env: dict[str, str] | None = None) -> StepRun:
    """Run the flow once over ``workload`` (a :class:`bench.workload.Workload`).

    Settings come from the environment as for a worker, with ``env`` on top; the burst
    guard is off (``STREAMREC_MAX_EVENTS_PER_MINUTE``), as in ``streamrec bench``, since
    a replay sends events far faster than their users did.
    """
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSink, TestingSource, run_main

    from dataflows.recommend import wire
    from operators.messages import Envelope
    from streamrec.gc_tuning import tune_gc
    from streamrec.settings import Settings

    payloads = workload.payloads[:events] if events else workload.payloads
    merged = {**os.environ, "STREAMREC_MAX_EVENTS_PER_MINUTE": "1000000000", **(env or {})}
    settings = Settings.from_env(merged)
    now = time.time()
    flow = Dataflow("streamrec-steps")
    src = op.input("events", flow, TestingSource([Envelope(v, now) for _, v in payloads],
                                                 batch_size=batch_size))
    catalog = None
    if workload.catalog:
        catalog = op.input("catalog", flow, TestingSource(
            [Envelope(item, None, "items") for item in workload.catalog], batch_size=1000))
    outputs, dead = wire(flow, src, catalog, settings, snapshots=False)
    lists = _Lists()
    op.output("lists", op.merge("all", outputs, dead), TestingSink(lists))  # type: ignore[arg-type]
    gc.collect()
    tune_gc(settings.gc_threshold)
    calls0, requests0, seconds0 = _rank_totals()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    try:
        run_main(flow)
    finally:
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
        gc.unfreeze()
    calls1, requests1, seconds1 = _rank_totals()
    return StepRun(workload.name, len(payloads), batch_size, cpu, wall, len(lists.keys),
                   lists.fingerprint(), int(calls1 - calls0), int(requests1 - requests0),
                   seconds1 - seconds0)


def median_run(runs: Sequence[StepRun]) -> StepRun:
    """The run with the median CPU time (lists and fingerprint as that run's)."""
    ordered = sorted(runs, key=lambda r: r.cpu_seconds)
    return ordered[(len(ordered) - 1) // 2]


def call_costs(small: StepRun, large: StepRun) -> tuple[float, float] | None:
    """``(fixed us per call, us per request)`` from two runs' ranking calls, or None when
    their requests per call are too close to tell the parts apart."""
    if not small.rank_calls or not large.rank_calls:
        return None
    n1, t1 = small.rank_requests / small.rank_calls, small.rank_seconds / small.rank_calls
    n2, t2 = large.rank_requests / large.rank_calls, large.rank_seconds / large.rank_calls
    if abs(n2 - n1) < 0.5:
        return None
    per_request = (t2 - t1) / (n2 - n1)
    return 1e6 * (t1 - per_request * n1), 1e6 * per_request


def table(runs: Sequence[StepRun], spread: dict[int, list[float]] | None = None) -> str:
    """The runs as a markdown table."""
    head = ("| workload | events | source batch | CPU us/event | lists | fingerprint "
            "| rank calls | requests/call | us/call |\n|---|---|---|---|---|---|---|---|---|")
    rows = []
    for r in runs:
        cpu = f"{r.us_per_event:,.0f}"
        if spread and len(spread.get(r.batch_size, [])) > 1:
            cpu += " (" + " / ".join(f"{v:,.0f}" for v in spread[r.batch_size]) + ")"
        per_call = r.rank_requests / r.rank_calls if r.rank_calls else 0.0
        us_call = 1e6 * r.rank_seconds / r.rank_calls if r.rank_calls else 0.0
        rows.append(f"| {r.workload} | {r.events:,} | {r.batch_size:,} | {cpu} | {r.lists:,} "
                    f"| `{r.fingerprint}` | {r.rank_calls:,} | {per_call:.1f} | {us_call:,.0f} |")
    return "\n".join([head, *rows])


def main(args) -> int:
    """``streamrec bench-steps``."""
    import json
    import sys

    from bench.workload import generated_workload, taobao_workload

    sizes = sorted({int(s) for s in str(args.batch_sizes).split(",") if s.strip()})
    if not sizes or min(sizes) < 1:
        print("--batch-sizes needs one or more positive integers, e.g. 20,1000", file=sys.stderr)
        return 2
    if args.dataset == "taobao":
        workload = taobao_workload(args.events, args.data_dir)
    else:
        n = args.events or 30_000
        workload = generated_workload(n, max(100, n // 10), max(100, n // 20))
    print(f"{workload.name}: {workload.events:,} events, {len(workload.catalog):,} catalog items; "
          f"source batches of {', '.join(map(str, sizes))}; {args.repeat} run(s) each",
          file=sys.stderr)
    chosen: list[StepRun] = []
    spread: dict[int, list[float]] = {}
    for size in sizes:
        runs = []
        for i in range(args.repeat):
            run = run_steps(workload, batch_size=size)
            runs.append(run)
            print(f"  batch {size}, run {i + 1}: {run.us_per_event:,.0f} us CPU/event, "
                  f"{run.lists:,} lists, fingerprint {run.fingerprint}", file=sys.stderr)
        if len({r.fingerprint for r in runs}) > 1:
            print(f"  note: batch {size}: the runs wrote different lists", file=sys.stderr)
        spread[size] = [r.us_per_event for r in runs]
        chosen.append(median_run(runs))
    print(table(chosen, spread))
    report = {"runs": [r.as_dict() for r in chosen], "cpu_us_per_event": spread}
    if len(chosen) > 1:
        costs = call_costs(chosen[0], chosen[-1])
        if costs is not None:
            fixed, per_request = costs
            print(f"\nranking calls: about {fixed:,.0f} us fixed per call + "
                  f"{per_request:,.0f} us per request (from batches of {sizes[0]} and {sizes[-1]})")
            report["rank_call_fixed_us"] = round(fixed, 1)
            report["rank_call_per_request_us"] = round(per_request, 1)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(report, fh, indent=2)
    return 0
