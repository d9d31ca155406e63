"""What recovery costs: throughput with ``-r DIR -s 10`` against the same run without.

The recovery store is created the way docs/guarantees.md tells operators to
(``python -m bytewax.recovery DIR 1``); the run is otherwise identical to the 1-process
throughput run, so the ratio is the price of snapshotting every piece of state (and the
Kafka offsets) every 10 seconds.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.throughput import RunResult
from connectors.worker import REPO_ROOT
from streamrec.errors import StreamrecError

__all__ = ["init_store", "recovery_cost"]


def init_store(path: Path, partitions: int = 1) -> None:
    """``python -m bytewax.recovery PATH N``: an empty store of ``partitions`` SQLite files."""
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([sys.executable, "-m", "bytewax.recovery", str(path), str(partitions)],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        msg = f"python -m bytewax.recovery {path} {partitions} failed:\n{done.stderr[-2000:]}"
        raise StreamrecError(msg)


def _size_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024**2


def recovery_cost(store: Path, without: RunResult, run: Callable[[Path], RunResult]) -> tuple[dict, RunResult]:
    """Run ``run(store)`` on a fresh store and compare it with ``without``."""
    init_store(store)
    with_recovery = run(store)
    summary = {
        "dataset": without.dataset,
        "without_events_per_s": without.events_per_s,
        "with_events_per_s": with_recovery.events_per_s,
        "ratio": round(with_recovery.events_per_s / without.events_per_s, 3)
        if without.events_per_s else None,
        "cpu_us_per_event_without": without.cpu_us_per_event,
        "cpu_us_per_event_with": with_recovery.cpu_us_per_event,
        "store_mib": round(_size_mib(store), 2),
        "snapshot_secs": 10,
        "complete": with_recovery.complete,
    }
    return summary, with_recovery
