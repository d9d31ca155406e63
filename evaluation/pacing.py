"""Lock-step replay: the file source waits until the dataflow has finished the previous
batch of events before it reads the next one.

A live system never sees the future: each event's list is ranked before the next
events happen. A file source, though, can read far ahead of the workers, and with
several processes a slower worker then ranks old events with models already trained on
later ones (measured: MovieLens HR@20 0.17 with one process, 0.26 with two). Pacing the
replay on the dataflow's own progress gives one process and N processes the same view
of time, at the cost of some parallelism (the steps still run on every worker).

Progress crosses processes through a small shared file of counters (one slot per
process), written by the sinks of every process and read by the source. A second row of
slots counts "news in flight" (model updates that get no answer, see
``dataflows.recommend.wire``): the source also waits for it to come back to zero, or a
request could be ranked before the trending news of the previous event reached its
shard (one hop more than the answers, often across processes).
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import time
from pathlib import Path
from typing import Iterator

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition

__all__ = ["ProgressBoard", "PacedFileSource"]

log = logging.getLogger(__name__)

_SLOTS = 64
_SIZE = 2 * _SLOTS * 8


class ProgressBoard:
    """Counters in a shared file: each process adds to its slot, anyone reads the sum.

    Two rows: events done (records written) and news in flight."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists() or self.path.stat().st_size < _SIZE:
            with open(self.path, "wb") as f:
                f.write(b"\0" * _SIZE)
        self._file = open(self.path, "r+b")
        self._map = mmap.mmap(self._file.fileno(), _SIZE)

    def _add(self, offset: int, n: int) -> None:
        (value,) = struct.unpack_from("<q", self._map, offset)
        struct.pack_into("<q", self._map, offset, value + n)

    def add(self, slot: int, n: int) -> None:
        """``n`` more events of process ``slot`` left their record."""
        self._add((slot % _SLOTS) * 8, n)

    def add_news(self, slot: int, n: int) -> None:
        """News in flight changed by ``n`` in process ``slot`` (sent: +, applied: -)."""
        if n:
            self._add((_SLOTS + slot % _SLOTS) * 8, n)

    def total(self) -> int:
        return sum(struct.unpack_from(f"<{_SLOTS}q", self._map, 0))

    def news(self) -> int:
        """News in flight, all processes (a read racing a send and its landing in two
        processes can be off by that message, either way: treat non-zero as in flight)."""
        return sum(struct.unpack_from(f"<{_SLOTS}q", self._map, _SLOTS * 8))

    def close(self) -> None:
        self._map.close()
        self._file.close()


class _PacedPartition(StatefulSourcePartition[str, int]):
    def __init__(self, path: Path, board: ProgressBoard, batch_size: int, stall: float,
                 resume: int | None) -> None:
        self._lines = _read_lines(path, resume or 0)
        self._offset = resume or 0
        self._board = board
        self._batch_size = batch_size
        self._stall = stall
        self._emitted = board.total()  # what was done before a resume counts as emitted
        self._last_mark: tuple[int, int] | None = None
        self._last_change = 0.0
        self.skipped = 0  # events that left no record (dead letters count as records)
        self.news_stalls = 0  # times news in flight did not land within the stall time
        self._news_lost = 0  # news given up on (so one lost message costs one stall)

    def next_batch(self) -> list[str]:
        done = self._board.total() + self.skipped
        news = self._board.news()
        if news < self._news_lost:  # news given up on landed after all
            self._news_lost = max(news, 0)
        news -= self._news_lost
        if done < self._emitted or news:
            now = time.monotonic()
            if (done, news) != self._last_mark:
                self._last_mark, self._last_change = (done, news), now
                return []
            if now - self._last_change < self._stall:
                return []
            # Nothing moved for a while: the rest of the batch left no record (a
            # duplicate, say), or news was lost. Move on; a slow record arriving later
            # would let the source run ahead by as much, so every skip is reported.
            if done < self._emitted:
                self.skipped += self._emitted - done
            else:
                self.news_stalls += 1
                self._news_lost += news
        batch = []
        for line in self._lines:
            if line.strip():
                batch.append(line)
            self._offset += 1
            if len(batch) >= self._batch_size:
                break
        if not batch:
            raise StopIteration
        self._emitted += len(batch)
        self._last_mark, self._last_change = None, time.monotonic()
        return batch

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        if self.skipped:
            log.warning("lock-step replay: %d events left no record within %.1f s and were "
                        "passed over; if records came late, the source ran ahead by as much",
                        self.skipped, self._stall)
        if self.news_stalls:
            log.warning("lock-step replay: %d times model updates in flight did not land "
                        "within %.1f s (the board never came back to zero); the replay "
                        "went on without them", self.news_stalls, self._stall)
        self._board.close()


def _read_lines(path: Path, skip: int) -> Iterator[str]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f):
            if n >= skip:
                yield line.rstrip("\n")


class PacedFileSource(FixedPartitionedSource[str, int]):
    """Lines of ``path``, ``batch_size`` at a time, each batch only after every earlier
    line left a record on the ``board`` (a recommendation update or a dead letter)."""

    def __init__(self, path: str | Path, board_path: str | Path, batch_size: int = 1,
                 stall: float = 10.0) -> None:
        # Every event leaves a record (a list, a dead letter or an "unranked" note), so
        # the stall is a safety net only; 2 s was too short on a crowded machine (six
        # replays on two cores passed over 5 slow events, and the lists moved).
        self.path = Path(path)
        self.board_path = Path(board_path)
        self.batch_size = batch_size
        self.stall = stall

    def list_parts(self) -> list[str]:
        return [self.path.name]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PacedPartition:
        return _PacedPartition(self.path, ProgressBoard(self.board_path), self.batch_size,
                               self.stall, resume_state)
