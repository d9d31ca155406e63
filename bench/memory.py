"""Worker memory per catalog item and per active user (``VmRSS`` from ``/proc``).

One full-pipeline worker (1 process) on fresh topics: RSS once it serves and idles, again
after the catalog has been consumed (-> KiB per item), again after a stream of events of
many users has been answered (-> KiB per active user, where "active" means the user sent
at least one event). The per-user figure is everything those events made the worker keep:
profiles, rank-shard bookkeeping, and the co-visitation lists the items learned from them.
CPython rarely returns memory to the OS, so the numbers are what a long-running worker
holds, fragmentation included.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

import orjson
import redis

from bench.latency import wait_serving
from bench.process import rss_kib, wait_idle
from bench.throughput import verify_latest
from bench.workload import Workload, expected_full
from connectors.replay import produce_catalog, produce_raw
from connectors.worker import WorkerGroup

__all__ = ["run_memory"]


def run_memory(
    *,
    bootstrap: str,
    redis_url: str,
    env: Mapping[str, str],
    workload: Workload,
    n_events: int,
    log_dir: Path | None = None,
    progress: bool = True,
    idle_share: float = 0.3,
    timeout: float = 600.0,
) -> dict:
    """Memory figures; ``env`` names fresh events and items topics."""
    topic, items_topic = env["STREAMREC_EVENTS_TOPIC"], env["STREAMREC_ITEMS_TOPIC"]
    prefix = env["STREAMREC_PREFIX"]
    client = redis.Redis.from_url(redis_url)
    payloads = workload.payloads[:n_events]
    users = {key.decode() for key, _ in payloads}
    expected = expected_full(orjson.loads(value) for _, value in payloads)
    group = WorkerGroup(env, processes=1, log_dir=log_dir).start()
    pid = group.procs[0].pid

    def settle() -> int:
        wait_idle([pid], busy_share=idle_share, timeout=timeout, alive=group.alive)
        return rss_kib(pid)

    try:
        wait_serving(bootstrap, topic, client, prefix, group)
        base = settle()
        _say(progress, f"memory: worker serving, RSS {base / 1024:.1f} MiB; "
                       f"sending {len(workload.catalog):,} catalog items")
        produce_catalog(bootstrap, items_topic, workload.catalog)
        with_items = settle()
        _say(progress, f"memory: catalog in, RSS {with_items / 1024:.1f} MiB; "
                       f"sending {len(payloads):,} events of {len(users):,} users")
        produce_raw(bootstrap, topic, payloads)
        with_users = settle()
        behind, _ = verify_latest(client, prefix, expected)
    finally:
        group.stop()
        client.close()
    per_item = (with_items - base) / max(len(workload.catalog), 1)
    per_user = (with_users - with_items) / max(len(users), 1)
    return {
        "rss_serving_mib": round(base / 1024, 1),
        "rss_with_catalog_mib": round(with_items / 1024, 1),
        "rss_with_users_mib": round(with_users / 1024, 1),
        "catalog_items": len(workload.catalog),
        "events": len(payloads),
        "active_users": len(users),
        "users_answered": len(expected) - len(behind),
        "users_expected": len(expected),
        "kib_per_item": round(per_item, 3),
        "mib_per_100k_items": round(per_item * 100_000 / 1024, 1),
        "kib_per_user": round(per_user, 3),
        "mib_per_100k_users": round(per_user * 100_000 / 1024, 1),
    }


def _say(progress: bool, text: str) -> None:
    if progress:
        print(text, file=sys.stderr)
