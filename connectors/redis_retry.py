"""Redis outages: what the sink does when Redis is slow, gone or restarted.

Two layers, both with redis-py's own ``Retry`` and ``ExponentialBackoff``:

1. The client retries one command or pipeline on ``ConnectionError``/``TimeoutError``
   a few times (``STREAMREC_REDIS_RETRIES``, backoff 50 ms doubling to 1 s): a dropped
   connection or a failover blip costs milliseconds and nobody hears of it.
2. :class:`OutageGuard` retries the whole write of a batch for up to
   ``STREAMREC_REDIS_RETRY_BUDGET`` seconds (backoff 100 ms doubling to 5 s). The sink
   holds that one batch meanwhile: the Bytewax worker blocks, stops reading Kafka and
   memory stays bounded (backpressure; nothing is buffered beyond the batch in hand and
   librdkafka's bounded prefetch queue). When Redis answers again the worker catches up
   from Kafka. When the budget is spent the worker stops with
   :class:`~streamrec.errors.RedisUnavailableError`, so an orchestrator restarts it.

Each outage is logged twice, once when it starts and once when it ends (with its
duration and retry count), never once per attempt. Retries and errors are counted in
``streamrec_redis_retries_total`` and ``streamrec_redis_errors_total``.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

import redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import NoPermissionError, ReadOnlyError
from redis.retry import Retry

from streamrec.errors import ConfigError, RedisUnavailableError
from streamrec.metrics import HEALTH, REDIS_ERRORS, REDIS_RETRIES, REDIS_UP
from streamrec.settings import redact_url

__all__ = ["CountingBackoff", "OutageGuard", "RetryTally", "sink_client"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Retried by the guard: the server is unreachable, slow, loading its data after a
# restart (BusyLoadingError is a ConnectionError), or a replica after a failover.
_TRANSIENT = (redis.ConnectionError, redis.TimeoutError, ReadOnlyError)

# The minimal command set of the sink, for the NOPERM message (docs/operations.md).
ACL_COMMANDS = ("+xadd +set +get +del +hset +hget +hdel +hgetall +hincrby +expire +eval +evalsha "
                "+script|load +xrange +xrevrange +xdel +ping")


class RetryTally:
    """How many times a client's commands were retried, shared by all its connections
    (redis-py gives each connection a deep copy of the client's ``Retry``: this object
    stays one). A retried pipeline may have been applied twice, once without a reply:
    the sink reads this around each write (``connectors.recs_index``)."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def __deepcopy__(self, memo) -> "RetryTally":
        return self


class CountingBackoff(ExponentialBackoff):
    """redis-py's exponential backoff that counts each retry it is asked to wait for."""

    def __init__(self, cap: float, base: float, tally: RetryTally | None = None) -> None:
        super().__init__(cap=cap, base=base)
        self.tally = tally

    def compute(self, failures: int) -> float:
        REDIS_RETRIES.inc()
        if self.tally is not None:
            self.tally.count += 1
        return super().compute(failures)


def sink_client(url: str, timeout: float, retries: int,
                tally: RetryTally | None = None) -> redis.Redis:
    """The sink's client: timeouts (a hung Redis must surface as an error, not a hang)
    and client-level retries with exponential backoff (counted in ``tally``)."""
    return redis.Redis.from_url(
        url, socket_keepalive=True, health_check_interval=30, socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(CountingBackoff(cap=1.0, base=0.05, tally=tally), retries),
    )


class OutageGuard:
    """Runs a write until it succeeds or ``budget`` seconds of failures have passed."""

    def __init__(self, url: str, budget: float, *, client: redis.Redis | None = None,
                 backoff: ExponentialBackoff | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.budget = budget
        self.client = client
        self.backoff = backoff or ExponentialBackoff(cap=5.0, base=0.1)
        self.sleep = sleep
        self.clock = clock
        self.outage_since: float | None = None
        self.outage_retries = 0

    def run(self, write: Callable[[], T]) -> T:
        attempt = 0
        while True:
            try:
                result = write()
            except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as ex:
                REDIS_ERRORS.labels(kind="auth").inc()
                msg = (f"Redis at {redact_url(self.url)} refused the credentials of REDIS_URL "
                       f"({ex}); check the user name and password in REDIS_URL")
                raise ConfigError(msg) from ex
            except NoPermissionError as ex:
                REDIS_ERRORS.labels(kind="noperm").inc()
                msg = (f"the Redis user of REDIS_URL lacks a permission ({ex}); it needs the "
                       f"commands {ACL_COMMANDS} on the keys of STREAMREC_PREFIX "
                       "(see docs/operations.md, Redis ACL)")
                raise ConfigError(msg) from ex
            except _TRANSIENT as ex:
                attempt += 1
                self._failed(ex)
                REDIS_RETRIES.inc()
                self.outage_retries += 1
                if isinstance(ex, ReadOnlyError) and self.client is not None:
                    self.client.connection_pool.disconnect()  # reconnect: maybe to the new primary
                self.sleep(self.backoff.compute(attempt))
                continue
            except redis.ResponseError:
                REDIS_ERRORS.labels(kind="response").inc()
                raise
            self._recovered()
            return result

    def _failed(self, ex: Exception) -> None:
        REDIS_ERRORS.labels(kind="timeout" if isinstance(ex, redis.TimeoutError) else "connection").inc()
        REDIS_UP.set(0)
        now = self.clock()
        if self.outage_since is None:
            self.outage_since = now
            self.outage_retries = 0
            HEALTH.redis_outage_since = now
            log.warning("Redis at %s is unreachable (%s: %s); holding the current batch and "
                        "retrying for up to %.0fs (STREAMREC_REDIS_RETRY_BUDGET); the worker "
                        "reads no more events meanwhile", redact_url(self.url),
                        type(ex).__name__, ex, self.budget)
        elapsed = now - self.outage_since
        if elapsed > self.budget:
            msg = (f"Redis at {redact_url(self.url)} has been unreachable for {elapsed:.0f}s "
                   f"({self.outage_retries} retries, last error {type(ex).__name__}: {ex}); "
                   "the worker stops so that it can be restarted. Check Redis, or raise "
                   "STREAMREC_REDIS_RETRY_BUDGET to wait longer")
            raise RedisUnavailableError(msg) from ex

    def _recovered(self) -> None:
        if self.outage_since is None:
            return
        took = self.clock() - self.outage_since
        log.warning("Redis at %s is back after %.1fs (%d retries); the worker catches up",
                    redact_url(self.url), took, self.outage_retries)
        self.outage_since = None
        HEALTH.redis_outage_since = None
        REDIS_UP.set(1)
