"""End-to-end latency at fixed event rates, measured by a separate consumer process.

One full-pipeline worker (1 process) runs over a fresh events topic and the generated
catalog. For each rate, a ``bench.consumer`` process follows the recs stream from its
current end, the producer sends ``rate * seconds`` generated events paced at ``rate``
(each stamped with ``produced_at``, copied by the worker to ``ingested_at``), and once every
user of that traffic has a latest list showing their last event (so the next rate never
starts behind a backlog) the consumer reports p50/p95/p99/max of (read time - ingested_at),
beside the worker's CPU time per event at that rate.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import orjson
import redis

from bench.process import cpu_seconds, wait_idle
from bench.throughput import verify_latest
from bench.workload import expected_full
from connectors.replay import produce_events
from connectors.worker import REPO_ROOT, WorkerGroup
from streamrec.errors import StreamrecError

__all__ = ["run_latency", "wait_answered", "wait_serving", "wait_quiet"]

PROBE_USER = "bench-probe"


def wait_serving(bootstrap: str, topic: str, client: redis.Redis, prefix: str,
                 group: WorkerGroup, timeout: float = 90.0) -> float:
    """Send one probe event and wait for its list: the worker is up and consuming."""
    event_id = f"probe-{time.time_ns()}"
    probe = {"event_id": event_id, "ts": time.time(), "user_id": PROBE_USER, "type": "search",
             "context": {"query": "warm-up"}}
    t0 = time.monotonic()
    produce_events(bootstrap, topic, [probe])
    key = f"{prefix}:latest:{PROBE_USER}"
    while time.monotonic() - t0 < timeout:
        raw = client.get(key)
        if raw and orjson.loads(raw).get("trigger_event_id") == event_id:
            return time.monotonic() - t0
        if not group.alive():
            raise StreamrecError("the worker exited during start-up:\n" + group.log_tail())
        time.sleep(0.05)
    raise StreamrecError(f"the worker did not answer within {timeout:.0f}s:\n" + group.log_tail())


def wait_quiet(client: redis.Redis, stream: str, quiet: float = 1.0, timeout: float = 60.0) -> None:
    """Return once ``stream`` got no new entry for ``quiet`` seconds (or after ``timeout``)."""
    t0 = last_change = time.monotonic()
    last = None
    while time.monotonic() - t0 < timeout:
        current = _last_id(client, stream)
        if current != last:
            last, last_change = current, time.monotonic()
        elif time.monotonic() - last_change >= quiet:
            return
        time.sleep(0.1)


def wait_answered(client: redis.Redis, prefix: str, expected: dict[str, str],
                  timeout: float) -> int:
    """Wait until every user's latest list shows their last event; returns how many do not.

    A quiet stream alone is no proof: a slow batch can keep the sink silent for a second
    while a backlog waits in Kafka, and the next rate would then start behind.
    """
    deadline = time.monotonic() + timeout
    behind = dict(expected)
    while behind and time.monotonic() < deadline:
        behind, _ = verify_latest(client, prefix, behind)
        if behind:
            time.sleep(0.25)
    return len(behind)


def _last_id(client: redis.Redis, stream: str) -> str:
    try:
        return client.xinfo_stream(stream)["last-generated-id"].decode()
    except redis.ResponseError:
        return "0-0"


def _start_consumer(url: str, stream: str, start_id: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.consumer", "--url", url, "--stream", stream,
         "--start-id", start_id, "--max-seconds", "900"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=REPO_ROOT, env=env,
    )
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout=30.0) or proc.stdout.readline().strip() != b"ready":
            proc.kill()
            proc.wait()
            raise StreamrecError("the latency consumer did not start within 30 s")
    return proc


def run_latency(
    *,
    bootstrap: str,
    redis_url: str,
    env: Mapping[str, str],
    rates: list[tuple[str, float]],
    seconds: float,
    n_users: int,
    n_items: int,
    log_dir: Path | None = None,
    progress: bool = True,
    idle_share: float = 0.3,
) -> list[dict]:
    """Latency percentiles per ``(label, rate)``; ``env`` names a fresh 1-partition topic."""
    from workloads.traffic import TrafficConfig, generate_events

    topic, prefix = env["STREAMREC_EVENTS_TOPIC"], env["STREAMREC_PREFIX"]
    stream = f"{prefix}:recs"
    client = redis.Redis.from_url(redis_url)
    results = []
    history: list[dict] = []  # consent withdrawn in one rate still holds in the next
    group = WorkerGroup(env, processes=1, log_dir=log_dir).start()
    try:
        wait_serving(bootstrap, topic, client, prefix, group)
        # Let the worker finish the catalog before the clock matters.
        wait_idle([p.pid for p in group.procs], busy_share=idle_share, timeout=120, alive=group.alive)
        for n, (label, rate) in enumerate(rates):
            count = max(1, int(rate * seconds))
            cfg = TrafficConfig(n_users=n_users, n_items=n_items, seed=101 + n, event_rate=rate,
                                start_ts=time.time())
            events = list(generate_events(cfg, count))
            consumer = _start_consumer(redis_url, stream, _last_id(client, stream))
            try:
                if progress:
                    print(f"latency {label}: {count:,} events at {rate:,.0f}/s", file=sys.stderr)
                cpu0, t0 = cpu_seconds(group.procs[0].pid), time.monotonic()
                sent = produce_events(bootstrap, topic, events, rate=rate, progress=progress)
                produce_s = time.monotonic() - t0
                history.extend(events)
                users = {ev["user_id"] for ev in events}
                expected = {u: e for u, e in expected_full(history).items() if u in users}
                unanswered = wait_answered(client, prefix, expected, timeout=max(60.0, seconds * 6))
                drained_s = time.monotonic() - t0
                cpu = cpu_seconds(group.procs[0].pid) - cpu0
                wait_quiet(client, stream, quiet=0.5, timeout=10.0)  # stragglers of stale updates
                out, _ = consumer.communicate(input=b"", timeout=60)
            finally:
                if consumer.poll() is None:
                    consumer.kill()
                    consumer.wait()
            if not group.alive():
                raise StreamrecError("the worker exited during the latency run:\n" + group.log_tail())
            lines = out.decode().strip().splitlines()
            measured = orjson.loads(lines[-1]) if lines else {}
            results.append({"label": label, "target_rate": round(rate, 1), "events": sent,
                            "achieved_rate": round(sent / produce_s, 1) if produce_s else None,
                            # Worker CPU per event at this rate (batches are small when live)
                            # and how long the worker needed to answer everything sent.
                            "cpu_us_per_event": round(1e6 * cpu / max(sent, 1), 1),
                            "drained_s": round(drained_s, 1),
                            "unanswered_users": unanswered,
                            **{k: (round(v, 2) if isinstance(v, float) else v)
                               for k, v in measured.items()}})
    finally:
        group.stop()
        client.close()
    return results
