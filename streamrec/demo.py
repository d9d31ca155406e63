"""`streamrec demo`: the whole pipeline on this machine with nothing configured.

Starts the embedded Kafka-protocol broker and Redis on free ports, creates the topics,
feeds a catalog and events into Kafka at a chosen rate, runs the worker as
``python -m bytewax.run dataflows.recommend``, shows progress and live sample
recommendations, and ends with a summary. Every process it started is stopped on exit
or Ctrl-C.
"""

from __future__ import annotations

import logging
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from connectors.local_stack import LocalStack, StackOptions
from streamrec.errors import StreamrecError
from streamrec.latency import LatencyRecorder

__all__ = ["DemoOptions", "run_demo"]

log = logging.getLogger("streamrec.demo")


@dataclass
class DemoOptions:
    events: str | None = None  # a recorded JSONL file; default: built-in traffic generator
    catalog: str | None = None
    count: int = 20_000
    rate: float = 1000.0
    processes: int = 1
    users: int = 2_000
    items: int = 3_000
    seed: int = 7
    prefix: str = "streamrec"
    bad_share: float = 0.005
    keep_dir: str | None = None
    sample_every: float = 3.0
    json_out: str | None = None
    extra_env: dict = field(default_factory=dict)


def _events_and_catalog(opts: DemoOptions):
    if opts.events:
        from connectors.datasets import read_events_jsonl

        path = Path(opts.events)
        if not path.is_file():
            raise StreamrecError(f"--events {opts.events}: no such file")
        events = read_events_jsonl(path)
        catalog = list(read_events_jsonl(opts.catalog)) if opts.catalog else []
        return events, catalog, opts.count
    from workloads.traffic import TrafficConfig, generate_catalog, generate_events

    cfg = TrafficConfig(n_users=opts.users, n_items=opts.items, seed=opts.seed,
                        start_ts=time.time())
    return generate_events(cfg, opts.count), generate_catalog(cfg), opts.count


BROKEN_EVENTS = [
    b"not json at all",
    b'{"event_id": 5, "user_id": "u1", "ts": 1732680000, "type": "view", "item_id": "p1"}',
    b'{"event_id": "x", "user_id": "u1", "ts": "yesterday", "type": "view", "item_id": "p1"}',
    b'{"event_id": "y", "user_id": "u1", "ts": 1732680000, "type": "teleport"}',
    b'{"event_id": "z", "ts": 1732680000, "type": "view", "item_id": "p1"}',
]


def _live_timestamps(events):
    """Re-stamp events to now: the demo is live traffic, whatever the source's clock."""
    for ev in events:
        ev = dict(ev)
        ev["ts"] = time.time()
        yield ev


def run_demo(opts: DemoOptions, out=sys.stdout) -> dict:
    from connectors.replay import produce_events, produce_raw

    # Absolute: the broker and Redis run in directories of their own.
    workdir = (Path(opts.keep_dir).resolve() if opts.keep_dir
               else Path(tempfile.mkdtemp(prefix="streamrec-demo-")))
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    previous_sigterm = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stack = LocalStack(workdir, StackOptions(prefix=opts.prefix, processes=opts.processes,
                                             worker_env=dict(opts.extra_env)))
    summary: dict = {}
    try:
        print(f"starting the embedded broker and Redis (logs in {workdir}) ...", file=out)
        stack.start_services()
        events_topic, items_topic = stack.options.events_topic, stack.options.items_topic
        print(f"  kafka  {stack.bootstrap}\n  redis  {stack.redis_url}", file=out)
        events, catalog, count = _events_and_catalog(opts)
        if catalog:
            n = stack.send_catalog(catalog)
            print(f"catalog: {n} items sent to topic {items_topic!r}", file=out)
        print(f"worker: python -m bytewax.run dataflows.recommend ({opts.processes} process"
              f"{'es' if opts.processes > 1 else ''})", file=out)
        startup = stack.start_workers()
        workers, client, keys = stack.workers, stack.redis, stack.keys
        print(f"worker serving after {startup:.1f}s", file=out)
        for url in workers.metrics_urls:
            print(f"  metrics {url}/metrics  (readiness {url}/readyz)", file=out)
        gateway = stack.start_gateway(catalog)
        print(f"storefront: {gateway.storefront_url}  (click products; the panel updates live)",
              file=out)
        kafka_bootstrap, store_url = stack.bootstrap, stack.redis_url
        start_id = (client.xinfo_stream(keys.recs)["last-generated-id"]
                    if client.exists(keys.recs) else "0-0")
        if opts.bad_share:
            n_bad = max(1, int(count * opts.bad_share))
            produce_raw(kafka_bootstrap, events_topic,
                        [(b"broken", BROKEN_EVENTS[i % len(BROKEN_EVENTS)]) for i in range(n_bad)])
            print(f"sent {n_bad} broken events: they must land in the dead-letter stream",
                  file=out)
        recorder = LatencyRecorder()
        reader = threading.Thread(target=recorder.follow, args=(store_url, keys.recs, stop, start_id),
                                  daemon=True)
        reader.start()
        produced = {"n": 0}

        def produce() -> None:
            try:
                produced["n"] = produce_events(kafka_bootstrap, events_topic,
                                           _live_timestamps(events),
                                           rate=opts.rate, stop=stop,
                                           on_progress=lambda n: produced.__setitem__("n", n))
            except Exception as ex:  # surfaced by the watcher, not lost in a thread
                produced["error"] = ex

        producer = threading.Thread(target=produce, daemon=True)
        t0 = time.monotonic()
        producer.start()
        _watch(opts, out, stop, producer, workers, recorder, client, keys, produced, count)
        elapsed = time.monotonic() - t0
        dlq = client.xlen(keys.dlq) if client.exists(keys.dlq) else 0
        summary = {
            "events_in": produced["n"],
            "recs_out": recorder.count,
            "dlq": dlq,
            "seconds": round(elapsed, 1),
            "latency_ms": recorder.percentiles(),
            "users_with_latest": sum(1 for _ in client.scan_iter(f"{opts.prefix}:latest:*", count=1000)),
        }
        _print_summary(summary, out)
        if opts.json_out:
            Path(opts.json_out).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
        return summary
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, previous_sigterm)
        if stack.workers is not None and stack.workers.procs and not stack.workers.alive():
            print("worker exited early; its log:\n" + stack.workers.log_tail(), file=out)
        stack.stop()
        if not opts.keep_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _watch(opts, out, stop, producer, workers, recorder, client, keys, produced, count) -> None:
    from tqdm import tqdm

    bar = tqdm(total=count, unit="ev", desc="events → recs", file=sys.stderr, dynamic_ncols=True)
    last_sample = time.monotonic()
    idle_since = None
    try:
        while not stop.is_set():
            time.sleep(0.25)
            bar.n = produced["n"]
            bar.set_postfix(recs=recorder.count, p50=f"{recorder.p(50):.0f}ms",
                            p99=f"{recorder.p(99):.0f}ms", refresh=False)
            bar.refresh()
            if not workers.alive():
                raise StreamrecError("the worker process exited; see its log above")
            if time.monotonic() - last_sample > opts.sample_every and recorder.last_user:
                last_sample = time.monotonic()
                _print_sample(client, keys, recorder.last_user, bar)
            if "error" in produced:
                raise StreamrecError(f"producing events failed: {produced['error']}")
            if not producer.is_alive():
                # Done producing: wait until recommendations stop arriving.
                seen = recorder.count
                if idle_since is None or seen != idle_since[0]:
                    idle_since = (seen, time.monotonic())
                elif time.monotonic() - idle_since[1] > 2.0:
                    break
    except KeyboardInterrupt:
        bar.write("interrupted: stopping every process the demo started ...")
    finally:
        bar.close()


def _print_sample(client, keys, user_id: str, bar) -> None:
    raw = client.get(keys.latest(user_id))
    prof = client.get(keys.profile(user_id))
    if not raw:
        return
    latest = orjson.loads(raw)
    top = ", ".join(i["item_id"] for i in latest["items"][:5])
    cats = ""
    if prof:
        p = orjson.loads(prof)
        cats = ", ".join(c for c, _ in p.get("top_categories", [])[:3])
        recent = ", ".join(p.get("session_items", [])[-3:])
        bar.write(f"  user {user_id}: likes [{cats}] just saw [{recent}] -> recommended [{top}]"
                  f" ({latest['strategy']})")


def _print_summary(s: dict, out) -> None:
    lat = s["latency_ms"]
    print("\nsummary", file=out)
    print(f"  events in           {s['events_in']:>10,}", file=out)
    print(f"  recommendations out {s['recs_out']:>10,}", file=out)
    print(f"  dead letters        {s['dlq']:>10,}", file=out)
    print(f"  users with a list   {s['users_with_latest']:>10,}", file=out)
    print(f"  wall time           {s['seconds']:>10} s", file=out)
    print(f"  latency Kafka→Redis p50 {lat['p50']:.1f} ms  p95 {lat['p95']:.1f} ms  "
          f"p99 {lat['p99']:.1f} ms  max {lat['max']:.1f} ms", file=out)
