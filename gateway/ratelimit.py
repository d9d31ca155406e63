"""Per-client rate limit for the collector: one token bucket per client address.

Buckets live in an LRU of bounded size, so a flood of distinct addresses costs memory
up to ``max_clients`` buckets and no more (the oldest idle ones are forgotten: a
forgotten client starts again with a full bucket, which errs on the side of serving).

>>> clock = [0.0]
>>> limit = RateLimiter(rate=2.0, burst=3.0, now=lambda: clock[0])
>>> [limit.allow("1.2.3.4") for _ in range(4)]
[0.0, 0.0, 0.0, 0.5]
>>> clock[0] = 0.5; limit.allow("1.2.3.4"), limit.allow("5.6.7.8")
(0.0, 0.0)
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable

__all__ = ["RateLimiter"]


class RateLimiter:
    """``allow(client)`` returns 0.0 when the request may go on, else seconds to wait."""

    def __init__(self, rate: float, burst: float, *, max_clients: int = 100_000,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.max_clients = max_clients
        self.now = now
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at

    def allow(self, client: str, cost: float = 1.0) -> float:
        now = self.now()
        tokens, at = self._buckets.pop(client, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= cost:
            tokens -= cost
        else:
            wait = (cost - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait

    def __len__(self) -> int:
        return len(self._buckets)
