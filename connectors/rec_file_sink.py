"""Recommendation updates to JSONL files (one per worker), in the output contract.

Used by ``streamrec eval`` so a replay through the production dataflow leaves the same
records a consumer of the Redis stream would see.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition

from operators.messages import RecUpdate

__all__ = ["RecFileSink", "rec_record", "list_items"]


def list_items(rec: RecUpdate) -> list[dict]:
    """A list's items in the output contract: ``{"item_id", "score", "reason"}`` each
    (``reason`` when the ranker gave one)."""
    if rec.reasons:
        return [{"item_id": i, "score": s, "reason": r}
                for (i, s), r in zip(rec.items, rec.reasons)]
    return [{"item_id": i, "score": s} for i, s in rec.items]


def rec_record(rec: RecUpdate, emitted_at: float, items=None) -> dict:
    """The output-contract record of a list; ``items``: its items when the caller has
    them already (encoded, say), else :func:`list_items`."""
    return {
        "user_id": rec.user_id,
        "trigger_event_id": rec.trigger_event_id,
        "event_ts": rec.event_ts,
        "emitted_at": emitted_at,
        "items": list_items(rec) if items is None else items,
        "strategy": rec.strategy,
        "model_version": rec.model_version,
        "rec_id": rec.rec_id,
        "variant": rec.variant,
        "propensity": rec.propensity,
    }


class _FilePartition(StatelessSinkPartition):
    def __init__(self, path: Path, on_write: Callable[[int], None] | None,
                 notes: tuple[type, ...]) -> None:
        self.file = open(path, "ab")
        self.on_write = on_write
        self.notes = notes

    def write_batch(self, items: list) -> None:
        now = time.time()
        lines = [orjson.dumps(rec_record(r, now)) for r in items if isinstance(r, RecUpdate)]
        if lines:
            self.file.write(b"\n".join(lines) + b"\n")
        if self.on_write is not None:
            # Events that will get no list count as done too (lock-step replays).
            notes = self.notes
            self.on_write(len(lines) + (sum(1 for r in items if isinstance(r, notes))
                                        if notes else 0))

    def close(self) -> None:
        self.file.close()


class RecFileSink(DynamicSink):
    """Writes ``{out_dir}/recs-{process}-{worker}.jsonl``; ignores other messages (one of
    the ``notes`` types only tells ``on_write`` that its event is done)."""

    def __init__(self, out_dir: str | Path, process: int = 0,
                 on_write: Callable[[int], None] | None = None,
                 notes: tuple[type, ...] = ()) -> None:
        self.out_dir = Path(out_dir)
        self.process = process
        self.on_write = on_write
        self.notes = notes

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _FilePartition:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        return _FilePartition(self.out_dir / f"recs-{self.process}-{worker_index}.jsonl",
                              self.on_write, self.notes)
