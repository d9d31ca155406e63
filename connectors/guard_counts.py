"""Guard counts on their way to Redis: what the guards kept from learning in this process
(``streamrec_guarded_events_total``), added to the hash ``{prefix}:guarded`` by the sink,
once each, and logged at most once a minute."""

from __future__ import annotations

import logging
import threading
import time

from streamrec.metrics import GUARDED

__all__ = ["GuardCounts", "GUARD_COUNTS"]

log = logging.getLogger("connectors.redis_sink")


class GuardCounts:
    """This process's guard counts not yet added to ``{prefix}:guarded`` (shared by its
    sink partitions: each count goes to Redis once), and a log line a minute at most."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent: dict[str, int] = {}
        self.logged_at = 0.0
        self.unlogged: dict[str, int] = {}

    def take(self) -> dict[str, int]:
        with self.lock:
            totals = GUARDED.totals()
            delta = {r: n - self.sent.get(r, 0) for r, n in totals.items()
                     if n > self.sent.get(r, 0)}
            self.sent = totals
            for r, n in delta.items():
                self.unlogged[r] = self.unlogged.get(r, 0) + n
            now = time.monotonic()
            if self.unlogged and now - self.logged_at >= 60.0:
                log.info("guards kept %d events from learning since the last report: %s",
                         sum(self.unlogged.values()),
                         ", ".join(f"{r} {n}" for r, n in sorted(self.unlogged.items())))
                self.unlogged, self.logged_at = {}, now
        return delta


GUARD_COUNTS = GuardCounts()
