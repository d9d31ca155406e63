"""Benchmark workloads: events encoded once for Kafka, a catalog, and the answer key.

The answer key is each user's last event that must be reflected in their latest list when
the flow has caught up. The full pipeline skips control events (``consent``, ``erase``) and
everything a user sends while their consent is withdrawn, and a withdrawal or erasure
deletes the list; the ceiling flow answers every event.

>>> events = [
...     {"event_id": "a", "user_id": "u1", "type": "view", "item_id": "p"},
...     {"event_id": "b", "user_id": "u1", "type": "consent", "value": 1.0, "consent": True},
...     {"event_id": "c", "user_id": "u2", "type": "view", "item_id": "p"},
...     {"event_id": "d", "user_id": "u2", "type": "consent", "value": 0.0, "consent": False},
...     {"event_id": "e", "user_id": "u2", "type": "view", "item_id": "q"},
... ]
>>> expected_full(events), expected_ceiling(events)
({'u1': 'a'}, {'u1': 'b', 'u2': 'e'})
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson

__all__ = [
    "Workload", "expected_ceiling", "expected_full", "generated_workload", "taobao_workload",
]


@dataclass
class Workload:
    """Events ready for ``produce_raw`` plus what the flows must end with."""

    name: str
    payloads: list[tuple[bytes, bytes]]  # (key = user id, value = JSON event)
    catalog: list[dict]
    ts: np.ndarray  # event times in Kafka order (for progress by event time)
    full: dict[str, str]  # user -> event id the full pipeline's latest list must show
    ceiling: dict[str, str]  # user -> event id the ceiling flow's latest list must show
    users: int = 0  # distinct users with events
    meta: dict = field(default_factory=dict)

    @property
    def events(self) -> int:
        return len(self.payloads)


def expected_full(events: Iterable[dict]) -> dict[str, str]:
    """User -> the last event the full pipeline answers (mirrors the user step's rules)."""
    last: dict[str, str | None] = {}
    refused: set[str] = set()
    for ev in events:
        user, etype = ev["user_id"], ev["type"]
        if etype == "erase":
            last[user] = None
            refused.discard(user)
            continue
        if etype == "consent" or ev.get("consent") is not None:
            granted = ev.get("value") == 1.0 if etype == "consent" else bool(ev["consent"])
            if not granted:
                last[user] = None
                refused.add(user)
                continue
            refused.discard(user)
            if etype == "consent":
                continue
        if user not in refused:
            last[user] = ev["event_id"]
    return {u: e for u, e in last.items() if e is not None}


def expected_ceiling(events: Iterable[dict]) -> dict[str, str]:
    """User -> their last event (the ceiling flow answers every event)."""
    return {ev["user_id"]: ev["event_id"] for ev in events}


def _build(name: str, events: list[dict], catalog: list[dict], meta: dict) -> Workload:
    dumps = orjson.dumps
    payloads = [(ev["user_id"].encode(), dumps(ev)) for ev in events]
    ts = np.fromiter((float(ev["ts"]) for ev in events), float, len(events))
    users = len({ev["user_id"] for ev in events})
    return Workload(name, payloads, catalog, ts, expected_full(events), expected_ceiling(events),
                    users, meta)


def generated_workload(n_events: int, n_users: int, n_items: int, seed: int = 7) -> Workload:
    """Synthetic shop traffic (``workloads.traffic``) that ends before now."""
    from workloads.traffic import TrafficConfig, generate_catalog, generate_events

    # The flow refuses events from the future; a start 30 days back leaves room for
    # ~1M events of 100k users (about 1.4 simulated days). The start is whole weeks since
    # the epoch (30 to 37 days back), so that runs within a week get the same events at the same times of
    # day and week (the lists depend on the daypart): an A/B of two builds compares the
    # same lists.
    week = 7 * 86_400
    cfg = TrafficConfig(n_users=n_users, n_items=n_items, seed=seed,
                        start_ts=(time.time() - 30 * 86_400) // week * week)
    events = list(generate_events(cfg, n_events))
    meta = {"n_users": n_users, "n_items": n_items, "seed": seed,
            "event_days": round((events[-1]["ts"] - events[0]["ts"]) / 86_400, 2) if events else 0}
    return _build("generated", events, generate_catalog(cfg), meta)


def taobao_workload(limit: int | None = None, data_dir: str | Path | None = None) -> Workload:
    """The Taobao 2h slice (real arrival order), optionally its first ``limit`` events."""
    from connectors.datasets import load_dataset

    from connectors.dataset_sources import dataset_dir

    ds = load_dataset("taobao", dataset_dir("taobao", data_dir))
    events = ds.events[:limit] if limit else ds.events
    items = ds.items
    if limit:
        used = {ev["item_id"] for ev in events}
        items = [item for item in items if item["item_id"] in used]
    return _build("taobao", events, items, {"file_events": len(ds.events)})
