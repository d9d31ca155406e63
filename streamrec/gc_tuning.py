"""Garbage-collector settings for a worker process.

CPython's cyclic collector runs a young-generation pass every 700 net allocations and,
once the heap has grown by a quarter, a full pass over every object. A worker keeps
state for many users (a few dozen container objects each) and allocates thousands of
short-lived objects per batch, none of them in reference cycles. Measured with the flow
in one process on the first Taobao events (no broker, no Redis): over 30,000 events the
collector took 4.0 of 20.8 s and found nothing to collect; over 20,000 its 14 full passes
took 118 ms (median) to 371 ms, each a pause of the whole worker.

The default here, young 10,000 / middle 10 / old 100, over the same 20,000 events: young
passes of about 3 ms, middle ones of about 30 ms (38 at most), no full pass, 0.8 s in
all. A young threshold of 50,000 spent about as much but paused 20 ms per young pass and
243 ms per middle one. :func:`tune_gc` also moves everything alive once the flow is built
(modules, settings, the flow itself) out of the collector's sight (``gc.freeze``).
"""

from __future__ import annotations

import gc

__all__ = ["DEFAULT_GC_THRESHOLD", "parse_gc_threshold", "tune_gc"]

DEFAULT_GC_THRESHOLD = (10_000, 10, 100)


def parse_gc_threshold(raw: str) -> tuple[int, int, int] | None:
    """``"10000,10,100"`` -> the three thresholds; ``"python"`` -> None (leave CPython's).

    >>> parse_gc_threshold("10000, 10, 100"), parse_gc_threshold("python")
    ((10000, 10, 100), None)
    """
    if raw.strip().lower() == "python":
        return None
    parts = [p.strip() for p in raw.split(",")]
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or values[0] < 1 or min(values) < 0:
        msg = (f"STREAMREC_GC_THRESHOLD={raw!r} must be three integers like 10000,10,100 "
               "(young, middle, old; the first at least 1) or 'python' for CPython's defaults")
        raise ValueError(msg)
    return values  # type: ignore[return-value]


def tune_gc(threshold: tuple[int, int, int] | None) -> None:
    """Freeze what is alive now and set the collector's thresholds; None: leave the
    collector as CPython set it up (no freeze either)."""
    if threshold is None:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)
