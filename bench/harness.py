"""``streamrec bench``: every speed measurement in one invocation.

Phases (each can be skipped by name): ``taobao`` and ``generated`` throughput of the full
pipeline and of the ``ceiling`` flow, at 1 and 2 processes (``scaling``); ``recovery``
cost; ``latency`` at fixed rates; ``memory`` per user and per item; and, with a profile
directory, an extra unmeasured run of the full pipeline under py-spy (``profile``).

Services are the embedded broker and Redis on free ports unless ``bootstrap`` and
``redis_url`` are given (the test suite passes its own). Topic names and Redis prefixes
carry a run tag, and each run's keys are deleted when it ends, so a shared broker or Redis
is left as it was found apart from the topics.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import orjson
import redis

from bench import PHASES
from bench.latency import run_latency
from bench.memory import run_memory
from bench.profile import Profiler, summarise
from bench.recovery import recovery_cost
from bench.report import machine, ratios, targets, to_markdown
from bench.throughput import RunResult, delete_prefix, run_flow
from bench.workload import Workload, generated_workload, taobao_workload
from connectors.embedded import ensure_topics
from connectors.local_stack import LocalStack, StackOptions
from connectors.replay import produce_catalog, produce_raw
from streamrec.errors import ConfigError, StreamrecError

__all__ = ["BenchOptions", "PHASES", "run_bench"]

FULL_EVENTS, QUICK_EVENTS = 1_000_000, 20_000


@dataclass
class BenchOptions:
    quick: bool = False
    events: int | None = None  # generated stream (and taobao cap); default 1M, quick 20k
    skip: frozenset[str] = frozenset()
    json_path: str | None = None
    markdown_path: str | None = None
    latency_seconds: float | None = None  # per rate; default 20, quick 3
    memory_events: int | None = None  # default min(events, 300k)
    taobao_dir: str | None = None
    profile_dir: str | None = None  # py-spy the full pipeline (1 and 2 processes) here
    profile_seconds: float = 90.0  # each profiled run is cut off after this long (unmeasured)
    keep_dir: str | None = None
    run_timeout: float | None = None
    progress: bool = True
    bootstrap: str | None = None  # use these services instead of starting embedded ones
    redis_url: str | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.skip) - set(PHASES)
        if unknown:
            msg = f"--skip: unknown phase(s) {', '.join(sorted(unknown))}; known: {', '.join(PHASES)}"
            raise ConfigError(msg)
        if self.events is not None and self.events < 100:
            raise ConfigError(f"--events must be >= 100, got {self.events}")

    @property
    def n_events(self) -> int:
        return self.events or (QUICK_EVENTS if self.quick else FULL_EVENTS)


def _say(opts: BenchOptions, text: str) -> None:
    if opts.progress:
        print(text, file=sys.stderr, flush=True)


class _Bench:
    def __init__(self, opts: BenchOptions, bootstrap: str, redis_url: str, workdir: Path) -> None:
        self.opts, self.bootstrap, self.redis_url, self.workdir = opts, bootstrap, redis_url, workdir
        self.tag = uuid.uuid4().hex[:6]
        self.client = redis.Redis.from_url(redis_url)
        self.save: Callable[[], None] = lambda: None
        n = opts.n_events
        self.timeout = opts.run_timeout or max(120.0, 60.0 + n / 250.0)

    def env(self, name: str, topic: str, items_topic: str) -> dict:
        # A preloaded topic puts hours of a user's events into seconds of broker time, and
        # the per-user burst guard counts by broker time: it would take every heavy user
        # for a bot. The benchmark measures speed, so the guard is set out of reach.
        return {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, "REDIS_URL": self.redis_url,
                "STREAMREC_EVENTS_TOPIC": topic, "STREAMREC_ITEMS_TOPIC": items_topic,
                "STREAMREC_PREFIX": f"bench-{self.tag}-{name}",
                "STREAMREC_MAX_EVENTS_PER_MINUTE": "1000000000", **self.opts.extra}

    def load(self, w: Workload, processes: list[int]) -> dict[int, str]:
        """Topics holding ``w`` with 1 (and 2) partitions, plus its catalog topic."""
        base = f"bench-{self.tag}-{w.name}"
        topics = {p: f"{base}-p{p}" for p in processes}
        wanted = {t: p for p, t in topics.items()} | {f"{base}-items": 1}
        wanted |= {f"{t}.dlq": 1 for t in topics.values()}
        ensure_topics(self.bootstrap, wanted)
        produce_catalog(self.bootstrap, f"{base}-items", w.catalog)
        for p, topic in topics.items():
            t0 = time.monotonic()
            sent = produce_raw(self.bootstrap, topic, w.payloads)
            _say(self.opts, f"{w.name}: {sent:,} events into {topic} ({p} partition(s)) in "
                            f"{time.monotonic() - t0:.1f}s; {w.users:,} users, {len(w.catalog):,} items")
            if sent != w.events:
                raise StreamrecError(f"only {sent} of {w.events} events reached {topic}")
        return topics

    def run(self, flow: str, w: Workload, topic: str, processes: int, *, recovery_dir=None,
            label: str = "", on_start=None, finish=None, timeout: float | None = None) -> RunResult:
        name = f"{w.name}-{flow}-{processes}p{label}"
        env = self.env(name, topic, f"bench-{self.tag}-{w.name}-items")
        try:
            result = run_flow(flow, w, env, self.client, processes=processes,
                              recovery_dir=recovery_dir, log_dir=self.workdir / "logs" / name,
                              timeout=timeout or self.timeout, progress=self.opts.progress,
                              on_start=on_start)
        finally:
            if finish is not None:
                finish()
            delete_prefix(self.client, env["STREAMREC_PREFIX"])
        _say(self.opts, f"  {name}: {result.events_per_s:,.0f} events/s over {result.seconds:.1f}s, "
                        f"{result.cpu_us_per_event:.0f} us CPU/event, "
                        f"{result.matched:,}/{result.users:,} users answered"
                        + ("" if result.complete else " (cut off: not a throughput figure)"))
        return result


def run_bench(opts: BenchOptions) -> dict:
    """Run the phases ``opts`` asks for; returns the report (also written as asked)."""
    started = time.monotonic()
    report: dict = {"machine": machine(), "options": {
        "quick": opts.quick, "events": opts.n_events, "skip": sorted(opts.skip)}}
    # Absolute: the broker and Redis run in directories of their own.
    workdir = (Path(opts.keep_dir).resolve() if opts.keep_dir
               else Path(tempfile.mkdtemp(prefix="streamrec-bench-")))
    workdir.mkdir(parents=True, exist_ok=True)
    # Services only: each phase creates its own topics and starts its own workers.
    stack = LocalStack(workdir, StackOptions(processes=0), bootstrap=opts.bootstrap,
                       redis_url=opts.redis_url)
    try:
        stack.start_services()
        if opts.bootstrap is None or opts.redis_url is None:
            _say(opts, f"embedded kafka {stack.bootstrap}, redis {stack.redis_url} (logs in {workdir})")
        bench = _Bench(opts, stack.bootstrap, stack.redis_url, workdir)
        bench.save = lambda: _save(report, opts, started)
        _run_phases(bench, report)
    except BaseException as ex:
        # What was measured before a failure or Ctrl-C is still worth keeping.
        report["error"] = f"{type(ex).__name__}: {ex}"[:2000]
        raise
    finally:
        stack.stop()
        if not opts.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)
        _save(report, opts, started)
    return report


def _save(report: dict, opts: BenchOptions, started: float) -> None:
    """Derive ratios and targets and write the report files (also after every phase)."""
    report["ratios"] = ratios(report)
    report["targets"] = targets(report)
    report["load_avg_end"] = machine()["load_avg"]
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    if opts.json_path:
        Path(opts.json_path).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.json_path).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if opts.markdown_path:
        Path(opts.markdown_path).parent.mkdir(parents=True, exist_ok=True)
        Path(opts.markdown_path).write_text(to_markdown(report) + "\n")


def _run_phases(b: _Bench, report: dict) -> None:
    opts, skip, n = b.opts, b.opts.skip, b.opts.n_events
    processes = [1] if "scaling" in skip else [1, 2]
    flows = ["full"] if "ceiling" in skip else ["ceiling", "full"]
    gen = None
    if not {"generated", "recovery", "latency", "memory"} <= skip:
        t0 = time.monotonic()
        gen = generated_workload(n, n_users=max(100, n // 10), n_items=max(100, n // 20))
        _say(opts, f"generated: {gen.events:,} events of {gen.users:,} users "
                   f"({gen.meta['n_users']:,} in the population), {len(gen.catalog):,} items, "
                   f"in {time.monotonic() - t0:.1f}s")
    report["throughput"] = []
    workloads = []
    if "taobao" not in skip:
        tb = taobao_workload(n if opts.events or opts.quick else None, opts.taobao_dir)
        workloads.append(tb)
    if "generated" not in skip or "recovery" not in skip:
        workloads.append(gen)
    baseline: dict[str, RunResult] = {}
    topics: dict[str, dict[int, str]] = {}
    for w in workloads:
        topics[w.name] = b.load(w, processes)
        if w.name == "generated" and "generated" in skip:
            continue  # loaded only for the recovery run
        for p in processes:
            for flow in flows:
                result = b.run(flow, w, topics[w.name][p], p)
                report["throughput"].append(result.as_dict())
                b.save()
                if flow == "full" and p == 1:
                    baseline[w.name] = result
    if "recovery" not in skip and gen is not None:
        without = baseline.get("generated") or b.run("full", gen, topics["generated"][1], 1)
        if "generated" not in baseline:
            report["throughput"].append(without.as_dict())
            baseline["generated"] = without
        summary, with_rec = recovery_cost(
            b.workdir / f"recovery-{b.tag}", without,
            lambda store: b.run("full", gen, topics["generated"][1], 1, recovery_dir=store,
                                label="-recovery"))
        report["throughput"].append(with_rec.as_dict())
        report["recovery"] = summary
        b.save()
    if "latency" not in skip and gen is not None:
        best = baseline.get("generated") or next(iter(baseline.values()), None)
        rates = [("1000/s", 1000.0), ("3000/s", 3000.0)]
        if best is not None:
            rates.append(("80% of max", round(0.8 * best.events_per_s, 1)))
        topic = f"bench-{b.tag}-latency"
        ensure_topics(b.bootstrap, {topic: 1, f"{topic}.dlq": 1, f"{topic}-items": 1})
        produce_catalog(b.bootstrap, f"{topic}-items", gen.catalog)
        seconds = opts.latency_seconds or (3.0 if opts.quick else 20.0)
        env = b.env("latency", topic, f"{topic}-items")
        try:
            report["latency"] = run_latency(
                bootstrap=b.bootstrap, redis_url=b.redis_url, env=env, rates=rates, seconds=seconds,
                n_users=gen.meta["n_users"], n_items=gen.meta["n_items"],
                log_dir=b.workdir / "logs" / "latency", progress=opts.progress)
        finally:
            delete_prefix(b.client, env["STREAMREC_PREFIX"])
        for row in report["latency"]:
            _say(opts, f"  latency {row['label']}: p50 {row.get('p50')} p99 {row.get('p99')} ms")
        b.save()
    if "memory" not in skip and gen is not None:
        topic = f"bench-{b.tag}-memory"
        ensure_topics(b.bootstrap, {topic: 1, f"{topic}.dlq": 1, f"{topic}-items": 1})
        env = b.env("memory", topic, f"{topic}-items")
        try:
            report["memory"] = run_memory(
                bootstrap=b.bootstrap, redis_url=b.redis_url, env=env, workload=gen,
                n_events=opts.memory_events or min(n, 300_000),
                log_dir=b.workdir / "logs" / "memory", progress=opts.progress)
        finally:
            delete_prefix(b.client, env["STREAMREC_PREFIX"])
        _say(opts, f"  memory: {report['memory']['kib_per_user']} KiB/user, "
                   f"{report['memory']['kib_per_item']} KiB/item")
        b.save()
    if opts.profile_dir:
        report["profile"] = _profile(b, workloads, topics, processes)


def _profile(b: _Bench, workloads: list[Workload], topics: dict, processes: list[int]) -> dict:
    """Unmeasured extra runs of the full pipeline under py-spy, one per dataset and size."""
    if not Profiler.available():
        _say(b.opts, "profile: py-spy not found (pip install py-spy); skipped")
        return {}
    out = {}
    for w in workloads:
        for p in processes:
            prof = Profiler(Path(b.opts.profile_dir), f"full-{w.name}-{p}p")
            paths: list[Path] = []
            b.run("full", w, topics[w.name][p], p, label="-profiled", on_start=prof.attach,
                  finish=lambda: paths.extend(prof.finish()), timeout=b.opts.profile_seconds)
            if paths:
                out[f"full {w.name} {p}p"] = summarise(paths)
    return out
