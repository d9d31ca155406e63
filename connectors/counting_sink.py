"""A sink that only counts what reaches it, by message type or by dead-letter reason.

For runs where the outputs themselves do not matter, only how many of each kind there
were (``streamrec fuzz --dataflow``): a list per output would hold every message.

>>> from collections import Counter
>>> counts = Counter()
>>> part = CountingSink(counts).build("out", 0, 1)
>>> part.write_batch([1, 2, "x"]); dict(counts)
{'int': 2, 'str': 1}
"""

from __future__ import annotations

import sys
from collections import Counter

from bytewax.outputs import DynamicSink, StatelessSinkPartition

__all__ = ["CountingSink"]


class _CountingPartition(StatelessSinkPartition):
    def __init__(self, counts: Counter, by_reason: bool, progress_every: int) -> None:
        self.counts = counts
        self.by_reason = by_reason
        self.progress_every = progress_every
        self.seen = 0

    def write_batch(self, items: list) -> None:
        for item in items:
            self.counts[item.reason if self.by_reason else type(item).__name__] += 1
        before, self.seen = self.seen, self.seen + len(items)
        if self.progress_every and before // self.progress_every != self.seen // self.progress_every:
            print(f"  {self.seen:,} outputs: {dict(self.counts)}", file=sys.stderr, flush=True)


class CountingSink(DynamicSink):
    """Counts into ``counts`` (shared: run it in one process, e.g. ``run_main``)."""

    def __init__(self, counts: Counter, *, by_reason: bool = False, progress_every: int = 0) -> None:
        self.counts = counts
        self.by_reason = by_reason
        self.progress_every = progress_every

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _CountingPartition:
        return _CountingPartition(self.counts, self.by_reason, self.progress_every)
