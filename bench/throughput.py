"""One throughput run: pre-loaded topic, start the workers, stop the clock when every user's
latest list reflects their last event.

The clock starts just before the worker processes are spawned (so start-up counts) and
stops at the newest ``emitted_at`` among the verified latest lists (the moment the last
user's final list was written). Verifying is a pipelined ``GET`` per user, so it runs only
when the recs stream has stopped growing for a moment, and then only for the users still
behind.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import orjson
import redis

from bench.process import cpu_seconds, rss_kib
from bench.workload import Workload
from connectors.worker import WorkerGroup
from streamrec.errors import StreamrecError

__all__ = ["RunResult", "run_flow", "verify_latest", "delete_prefix"]

_POLL_S = 0.2
_SETTLE_S = 1.0  # the stream stayed this long without a new entry: time to verify
_CHUNK = 5000


@dataclass
class RunResult:
    flow: str  # "full" | "ceiling"
    dataset: str
    processes: int
    events: int
    users: int  # users whose final list was checked
    matched: int  # of those, how many showed their last event
    seconds: float  # worker start -> last user's final list written
    events_per_s: float
    startup_s: float | None  # worker start -> first stream entry
    steady_events_per_s: float | None  # events / (last list - first stream entry)
    cpu_s: float  # CPU seconds of the worker processes (all threads)
    cpu_us_per_event: float
    rss_mib: float  # summed worker RSS at the end
    recs_added: int  # stream entries written (full pipeline: conflated per batch)
    recovery: bool = False
    complete: bool = True

    def as_dict(self) -> dict:
        return asdict(self)


def verify_latest(client: redis.Redis, prefix: str, expected: Mapping[str, str]) -> tuple[dict[str, str], float]:
    """Users whose latest list does not show their expected event, and the newest
    ``emitted_at`` among those that do."""
    behind: dict[str, str] = {}
    newest = 0.0
    users = list(expected)
    loads = orjson.loads
    for start in range(0, len(users), _CHUNK):
        chunk = users[start : start + _CHUNK]
        pipe = client.pipeline(transaction=False)
        for user in chunk:
            pipe.get(f"{prefix}:latest:{user}")
        for user, raw in zip(chunk, pipe.execute()):
            want = expected[user]
            if raw is None:
                behind[user] = want
                continue
            latest = loads(raw)
            if latest.get("trigger_event_id") != want:
                behind[user] = want
            else:
                newest = max(newest, float(latest.get("emitted_at") or 0.0))
    return behind, newest


def delete_prefix(client: redis.Redis, prefix: str) -> int:
    """UNLINK every key under ``prefix:`` (keeps a shared Redis tidy between runs)."""
    n = 0
    pipe = client.pipeline(transaction=False)
    for key in client.scan_iter(f"{prefix}:*", count=10_000):
        pipe.unlink(key)
        n += 1
        if n % 10_000 == 0:
            pipe.execute()
    pipe.execute()
    return n


def _stream_state(client: redis.Redis, stream: str) -> tuple[int, float | None, float | None]:
    """(entries ever added, time of the first entry kept, event_ts of the newest entry)."""
    try:
        info = client.xinfo_stream(stream)
    except redis.ResponseError:  # no stream yet
        return 0, None, None
    first = info.get("first-entry")
    first_s = int(first[0].split(b"-")[0]) / 1000.0 if first else None
    last = info.get("last-entry")
    event_ts = None
    if last and last[1].get(b"event_ts"):
        event_ts = float(last[1][b"event_ts"])
    return int(info.get("entries-added", info.get("length", 0))), first_s, event_ts


def run_flow(
    flow: str,
    workload: Workload,
    env: Mapping[str, str],
    client: redis.Redis,
    *,
    processes: int = 1,
    recovery_dir: Path | None = None,
    log_dir: Path | None = None,
    timeout: float = 600.0,
    progress: bool = True,
    on_start: Callable[[WorkerGroup], None] | None = None,
) -> RunResult:
    """Run ``flow`` ("full" or "ceiling") over the pre-loaded topic named in ``env``."""
    module = {"full": "dataflows.recommend", "ceiling": "bench.ceiling"}[flow]
    prefix = env["STREAMREC_PREFIX"]
    expected = workload.full if flow == "full" else workload.ceiling
    stream = f"{prefix}:recs"
    bar = _bar(f"{flow} {workload.name} {processes}p", workload.events) if progress else None
    group = WorkerGroup(env, processes=processes, module=module, recovery_dir=recovery_dir,
                        snapshot_secs=10, log_dir=log_dir)
    t0 = time.time()
    group.start()
    try:
        if on_start is not None:
            on_start(group)
        behind, newest, first_s = dict(expected), 0.0, None
        added, changed = 0, time.monotonic()
        deadline = time.monotonic() + timeout
        while behind:
            if time.monotonic() > deadline:
                break
            time.sleep(_POLL_S)
            if not group.alive():
                raise StreamrecError(f"the {flow} worker exited early:\n{group.log_tail()}")
            now_added, first, event_ts = _stream_state(client, stream)
            first_s = first_s or first
            if now_added != added:
                added, changed = now_added, time.monotonic()
            if bar is not None and event_ts is not None:
                bar.n = int(np.searchsorted(workload.ts, event_ts, side="right"))
                bar.set_postfix(recs=added, behind=len(behind), refresh=False)
                bar.refresh()
            if added and time.monotonic() - changed >= _SETTLE_S:
                still, seen = verify_latest(client, prefix, behind)
                newest = max(newest, seen)
                behind = still
                changed = time.monotonic()  # next check after another quiet second
        pids = [p.pid for p in group.procs]
        cpu = sum(cpu_seconds(p) for p in pids)
        rss = sum(rss_kib(p) for p in pids) / 1024.0
        added = _stream_state(client, stream)[0]
    finally:
        group.stop()
        if bar is not None:
            bar.close()
    seconds = max(newest - t0, 1e-9) if newest else time.time() - t0
    steady = workload.events / (newest - first_s) if newest and first_s and newest > first_s else None
    return RunResult(
        flow=flow, dataset=workload.name, processes=processes, events=workload.events,
        users=len(expected), matched=len(expected) - len(behind), seconds=round(seconds, 3),
        events_per_s=round(workload.events / seconds, 1),
        startup_s=round(first_s - t0, 3) if first_s else None,
        steady_events_per_s=round(steady, 1) if steady else None,
        cpu_s=round(cpu, 2), cpu_us_per_event=round(1e6 * cpu / max(workload.events, 1), 1),
        rss_mib=round(rss, 1), recs_added=added, recovery=recovery_dir is not None,
        complete=not behind,
    )


def _bar(desc: str, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="ev", file=sys.stderr, dynamic_ncols=True,
                mininterval=0.5)
