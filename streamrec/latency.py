"""Following the recs stream like a consumer and measuring end-to-end latency."""

from __future__ import annotations

import threading
import time

import numpy as np
import redis

__all__ = ["LatencyRecorder"]


class LatencyRecorder:
    """Reads ``{prefix}:recs`` with XREAD BLOCK; latency = read time - Kafka ingest time."""

    def __init__(self, max_samples: int = 1_000_000) -> None:
        self.samples: list[float] = []
        self.count = 0
        self.last_user: str | None = None
        self.max_samples = max_samples
        self._lock = threading.Lock()

    def follow(self, url: str, stream: str, stop: threading.Event, start_id: str = "0-0") -> None:
        client = redis.Redis.from_url(url)
        last = start_id
        while not stop.is_set():
            try:
                resp = client.xread({stream: last}, count=1000, block=200)
            except redis.ConnectionError:
                if stop.is_set():
                    return
                time.sleep(0.2)
                continue
            now = time.time()
            for _, entries in resp or ():
                for eid, fields in entries:
                    last = eid
                    self.record(fields, now)

    def record(self, fields: dict, now: float) -> None:
        ingested = fields.get(b"ingested_at")
        with self._lock:
            self.count += 1
            self.last_user = fields.get(b"user_id", b"").decode() or self.last_user
            if ingested and len(self.samples) < self.max_samples:
                self.samples.append((now - float(ingested)) * 1000.0)

    def p(self, q: float) -> float:
        with self._lock:
            if not self.samples:
                return float("nan")
            return float(np.percentile(self.samples[-5000:], q))

    def percentiles(self) -> dict:
        with self._lock:
            data = np.array(self.samples) if self.samples else np.array([float("nan")])
        return {
            "p50": float(np.percentile(data, 50)),
            "p95": float(np.percentile(data, 95)),
            "p99": float(np.percentile(data, 99)),
            "max": float(np.max(data)),
            "samples": int(len(self.samples)),
        }
