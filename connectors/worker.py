"""Start and stop recommend workers as subprocesses, the way an operator would:
``python -m bytewax.run dataflows.recommend`` with environment variables.

Used by ``streamrec demo``, the integration tests and the benchmarks.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Mapping

import atexit

from connectors.service_process import RESERVED_PORTS, _parent_death_signal, free_port

__all__ = ["WorkerGroup", "free_port_run"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def _worker_preexec():
    """A preexec_fn for worker processes: SIGINT back to its default, then the parent-death
    signal. A program started in the background by a non-interactive shell (a CI job,
    ``make`` under ``cmd &``) inherits SIGINT ignored, and Python then never turns it into
    KeyboardInterrupt: :meth:`WorkerGroup.stop` would wait out its timeout and SIGKILL."""
    death = _parent_death_signal()
    ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    if not ignored:
        return death

    def preexec() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if death is not None:
            death()

    return preexec


def free_port_run(n: int, host: str = "127.0.0.1") -> int:
    """A port p such that p .. p+n-1 are all free now (one per worker process)."""
    for _ in range(50):
        base = free_port(host)
        if base + n - 1 <= 65535 and all(_port_free(host, base + i) for i in range(1, n)):
            return base
    msg = f"no run of {n} free ports on {host} after 50 tries"
    raise OSError(msg)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return port not in RESERVED_PORTS


class WorkerGroup:
    """``processes`` bytewax processes (``-i/-a`` when more than one), each ``workers`` threads."""

    def __init__(
        self,
        env: Mapping[str, str],
        *,
        processes: int = 1,
        workers: int = 1,
        recovery_dir: str | Path | None = None,
        snapshot_secs: int = 10,
        backup_secs: int = 0,
        log_dir: str | Path | None = None,
        module: str = "dataflows.recommend",
    ) -> None:
        self.env = dict(env)
        self.processes = processes
        self.workers = workers
        self.recovery_dir = Path(recovery_dir) if recovery_dir else None
        self.snapshot_secs = snapshot_secs
        self.backup_secs = backup_secs
        self.log_dir = Path(log_dir) if log_dir else None
        self.module = module
        self.procs: list[subprocess.Popen] = []
        self._logs: list = []
        self.metrics_port: int | None = None

    def command(self, index: int, addresses: str | None) -> list[str]:
        cmd = [sys.executable, "-m", "bytewax.run", self.module]
        if self.workers > 1:
            cmd += ["-w", str(self.workers)]
        if addresses:
            cmd += ["-i", str(index), "-a", addresses]
        if self.recovery_dir:
            # -b: how long old snapshots are kept for a backup/restore of the recovery
            # dir; 0 is fine when the directory itself is not backed up separately.
            cmd += ["-r", str(self.recovery_dir), "-s", str(self.snapshot_secs),
                    "-b", str(self.backup_secs)]
        return cmd

    def start(self) -> "WorkerGroup":
        env = {**os.environ, **self.env}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        # The metrics endpoint listens on loopback at free ports (base + process id),
        # unless the caller chose: a fixed default port would collide between groups.
        env.setdefault("STREAMREC_METRICS_HOST", "127.0.0.1")
        if "STREAMREC_METRICS_PORT" not in self.env:
            env["STREAMREC_METRICS_PORT"] = str(free_port_run(self.processes))
        self.metrics_port = int(env["STREAMREC_METRICS_PORT"])
        addresses = None
        if self.processes > 1:
            addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(self.processes))
        for i in range(self.processes):
            out = subprocess.DEVNULL
            if self.log_dir:
                self.log_dir.mkdir(parents=True, exist_ok=True)
                out = open(self.log_dir / f"worker-{i}.log", "ab")
                self._logs.append(out)
            self.procs.append(
                subprocess.Popen(self.command(i, addresses), env=env, cwd=REPO_ROOT, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True,
                                 # no orphaned workers if the caller dies or is killed
                                 preexec_fn=_worker_preexec())  # noqa: PLW1509
            )
        atexit.register(self.kill)
        return self

    @property
    def metrics_urls(self) -> list[str]:
        """``http://host:port`` of each process's /metrics, /healthz and /readyz (none when off)."""
        if not self.metrics_port:
            return []
        host = {**os.environ, **self.env}.get("STREAMREC_METRICS_HOST", "127.0.0.1")
        host = "127.0.0.1" if host == "0.0.0.0" else host
        return [f"http://{host}:{self.metrics_port + i}" for i in range(self.processes)]

    def alive(self) -> bool:
        return bool(self.procs) and all(p.poll() is None for p in self.procs)

    def returncodes(self) -> list[int | None]:
        return [p.poll() for p in self.procs]

    def log_tail(self, lines: int = 30) -> str:
        if not self.log_dir:
            return "(no log dir)"
        chunks = []
        for path in sorted(self.log_dir.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()[-lines:]
            chunks.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(chunks)

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for p in self.procs:
            p.wait()
        self._close_logs()
        self.procs = []

    def stop(self, timeout: float = 10.0) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self._close_logs()
        self.procs = []

    def _close_logs(self) -> None:
        for f in self._logs:
            f.close()
        self._logs = []

    def __enter__(self) -> "WorkerGroup":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
