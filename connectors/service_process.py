"""Child server processes for local runs and tests: free ports, spawning, probing,
reaping (the machinery under :mod:`connectors.embedded` and the other embedded servers).

A service runs as a child in its own session on a free loopback port, logs to a file,
and is only "started" once it answers a real protocol request *and* proves it is the
process we spawned; it is stopped when its parent exits (atexit), and, from the main
thread on Linux, when the parent is killed (parent-death signal).
"""

from __future__ import annotations

import atexit
import collections
import ctypes
import ctypes.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Self

from streamrec.errors import EmbeddedServiceError

__all__ = ["RESERVED_PORTS", "free_port"]

#: Ports of system services on shared machines; never hand these out.
RESERVED_PORTS = frozenset({1883, 3306, 4222, 5432, 5672, 6379, 9092})


_START_TIMEOUT_S = 30.0
_STOP_GRACE_S = 5.0


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nobody listens on right now.

    >>> 1024 <= free_port() <= 65535
    True
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port
    raise EmbeddedServiceError(f"free_port: no free port on {host} after 50 tries")


def _executable(path: str | Path) -> bool:
    return os.path.isfile(path) and os.access(path, os.X_OK)


def _port_is_free(host: str, port: int) -> bool:
    # SO_REUSEADDR so a port in TIME_WAIT counts as free, as it is for the servers.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# -- process supervision ------------------------------------------------------

_RUNNING: set[_EmbeddedService] = set()
_RUNNING_LOCK = threading.Lock()


@atexit.register
def _stop_all() -> None:
    with _RUNNING_LOCK:
        services = list(_RUNNING)
    for service in services:
        # A forked child exiting must not take down its parent's services.
        if service._owner_pid == os.getpid():
            service.stop()


def _parent_death_signal() -> object | None:
    """A preexec_fn asking Linux to SIGTERM the child when its parent dies.

    This covers what atexit cannot: the parent killed by a signal. Linux ties the
    signal to the *thread* that forked, so it is only used from the main thread.
    """
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    parent = os.getpid()
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


class _EmbeddedService:
    """Spawn, probe and reap one server binary; subclasses say how."""

    kind = "service"

    def __init__(
        self,
        port: int | None = None,
        host: str = "127.0.0.1",
        log_dir: str | Path | None = None,
        *,
        binary: str | Path | None = None,
    ) -> None:
        self.port = port if port is not None else free_port(host)
        self.host = host
        self.log_dir = log_dir
        self.binary = binary
        self._auto_port = port is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._log_path: Path | None = None
        self._owner_pid = os.getpid()

    # -- what subclasses provide
    def _command(self, binary: str) -> list[str]:
        raise NotImplementedError

    def _default_binary(self) -> str:
        raise NotImplementedError

    def _env(self) -> dict[str, str]:
        return dict(os.environ)

    def _probe(self, timeout: float) -> None:
        """Raise unless our own process answers a real request."""
        raise NotImplementedError

    # -- lifecycle
    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> Self:
        """Spawn the server and return once it answers; idempotent."""
        if self.running:
            return self
        binary = str(self.binary) if self.binary is not None else self._default_binary()
        if not _executable(binary):
            msg = f"{self.kind}: binary {binary!r} does not exist or is not executable"
            raise EmbeddedServiceError(msg)
        self._prepare_workdir()
        # Only a port we picked ourselves may be swapped when someone grabs it first.
        attempts = 3 if self._auto_port else 1
        for attempt in range(attempts):
            if not _port_is_free(self.host, self.port):
                if attempt + 1 < attempts:
                    self.port = free_port(self.host)
                    continue
                msg = (f"{self.kind}: port {self.host}:{self.port} is already in use; "
                       "pass another port or port=None to pick a free one")
                raise EmbeddedServiceError(msg)
            try:
                self._spawn_and_wait(binary)
                return self
            except EmbeddedServiceError:
                self.stop(cleanup=False)
                if attempt + 1 >= attempts or "in use" not in self._log_tail():
                    self._cleanup_workdir()
                    raise
                self.port = free_port(self.host)
        raise AssertionError("unreachable")

    def _prepare_workdir(self) -> None:
        if self._workdir is not None:
            return
        if self.log_dir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix=f"streamrec-{self.kind}-"))
            self._owns_workdir = True
        else:
            self._workdir = Path(self.log_dir)
            self._workdir.mkdir(parents=True, exist_ok=True)

    def _spawn_and_wait(self, binary: str) -> None:
        assert self._workdir is not None
        self._log_path = self._workdir / f"{self.kind}-{self.port}.log"
        command = self._command(binary)
        with open(self._log_path, "wb") as log:
            try:
                self._proc = subprocess.Popen(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=self._workdir, env=self._env(), start_new_session=True,
                    preexec_fn=_parent_death_signal(),  # noqa: PLW1509 (see its docstring)
                )
            except OSError as ex:
                msg = f"{self.kind}: could not run {command[0]!r}: {ex}"
                raise EmbeddedServiceError(msg) from ex
        with _RUNNING_LOCK:
            _RUNNING.add(self)
        deadline = time.monotonic() + _START_TIMEOUT_S
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                msg = f"{self.kind}: {command[0]} exited with code {self._proc.returncode} during start"
                raise EmbeddedServiceError(self._with_log(msg))
            if _accepts(self.host, self.port):
                try:
                    self._probe(timeout=min(5.0, max(0.1, deadline - time.monotonic())))
                    return
                except Exception as ex:  # not ready yet, or a stranger on the port
                    last_error = ex
            time.sleep(0.01)
        msg = (f"{self.kind}: not ready on {self.host}:{self.port} after {_START_TIMEOUT_S:.0f}s"
               f" (last probe error: {last_error!r})")
        raise EmbeddedServiceError(self._with_log(msg))

    def stop(self, *, cleanup: bool = True) -> None:
        """SIGTERM the process group, SIGKILL after a grace period; idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with _RUNNING_LOCK:
                _RUNNING.discard(self)
            if proc.poll() is None:
                _signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=_STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    _signal_group(proc, signal.SIGKILL)
                    proc.wait()
        if cleanup:
            self._cleanup_workdir()

    def _cleanup_workdir(self) -> None:
        if self._owns_workdir and self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
            self._owns_workdir = False

    def _log_tail(self, lines: int = 20) -> str:
        if self._log_path is None or not self._log_path.exists():
            return ""
        with open(self._log_path, errors="replace") as log:
            return "".join(collections.deque(log, maxlen=lines))

    def _with_log(self, msg: str) -> str:
        tail = self._log_tail()
        return f"{msg}\n--- last lines of its log ---\n{tail}" if tail else f"{msg} (its log is empty)"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"{type(self).__name__}({self.host}:{self.port}, {state})"


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the pgid is the pid
    except (ProcessLookupError, PermissionError):
        pass
