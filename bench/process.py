"""What a worker process costs, read from ``/proc``: resident memory and CPU time.

Linux only (the benchmark's machine); both read the whole process, all threads.

>>> import os
>>> rss_kib(os.getpid()) > 0 and cpu_seconds(os.getpid()) >= 0.0
True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

__all__ = ["cpu_seconds", "rss_kib", "wait_idle"]

_TICKS = os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    """``VmRSS`` of ``pid`` in KiB (0 once the process is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by every thread of ``pid``."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            raw = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # The command name may hold spaces and parentheses: split after the last ")".
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def wait_idle(
    pids: Sequence[int],
    *,
    busy_share: float,
    window: float = 1.0,
    calm_windows: int = 2,
    timeout: float = 120.0,
    alive: Callable[[], bool] = lambda: True,
) -> float:
    """Wait until ``pids`` use at most ``busy_share`` of a core for ``calm_windows`` windows.

    A tailing Bytewax worker never reaches 0% (it polls Kafka), so ``busy_share`` should sit
    a little above the worker's measured idle level. Returns the seconds waited.
    """
    started = time.monotonic()
    calm = 0
    before = sum(cpu_seconds(p) for p in pids)
    while time.monotonic() - started < timeout:
        time.sleep(window)
        if not alive():
            break
        now = sum(cpu_seconds(p) for p in pids)
        calm = calm + 1 if (now - before) / window <= busy_share else 0
        before = now
        if calm >= calm_windows:
            break
    return time.monotonic() - started
