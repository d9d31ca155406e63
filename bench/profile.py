"""Sampling profiles of running workers with py-spy, summarised as hot functions.

``Profiler`` attaches ``py-spy record --format raw`` to every worker process of a run
(``pip install py-spy``); py-spy writes collapsed stacks when the worker exits.
:func:`summarise` turns them into the top functions by own samples ("self") and by
samples anywhere on the stack ("total"), plus the share of samples per project module
(the deepest frame in the repository's own code).

>>> stacks = "main (a.py:1);step (operators/x.py:5);dumps (orjson:0) 3\\nmain (a.py:1) 1\\n"
>>> s = summarise_text(stacks, top=2)
>>> s["samples"], s["self"][0]
(4, {'function': 'dumps (orjson)', 'percent': 75.0})
>>> s["by_module"][0]
{'module': 'operators/x.py', 'percent': 75.0}
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

__all__ = ["Profiler", "summarise", "summarise_text"]

_PROJECT_DIRS = ("operators/", "models/", "connectors/", "dataflows/", "bench/", "streamrec/")
# py-spy runs with --full-filenames (else bytewax's connectors/ looks like ours); for
# reading, paths are cut back to the repository or site-packages.
_PATH_PREFIX = re.compile(r"\((?:[^()]*/site-packages/|[^()]*/lib/python3\.\d+/)")


class Profiler:
    """Attach py-spy to a WorkerGroup's processes; ``finish()`` waits for the files."""

    def __init__(self, out_dir: Path, label: str, rate: int = 100, native: bool = False) -> None:
        self.out_dir = Path(out_dir)
        self.label = label
        self.rate = rate
        self.native = native
        self.procs: list[tuple[subprocess.Popen, Path]] = []

    @staticmethod
    def executable() -> str | None:
        """py-spy on PATH, or beside this interpreter (a venv that is not activated)."""
        return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))

    @staticmethod
    def available() -> bool:
        return Profiler.executable() is not None

    def attach(self, group) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        time.sleep(1.0)  # let the interpreter come up before py-spy looks for it
        for i, proc in enumerate(group.procs):
            path = self.out_dir / f"{self.label}-p{i}.txt"
            cmd = [self.executable() or "py-spy", "record", "--pid", str(proc.pid), "--format", "raw", "-o", str(path),
                   "--rate", str(self.rate), "--nonblocking", "--full-filenames"]
            if self.native:
                cmd.append("--native")
            log = open(self.out_dir / f"{self.label}-p{i}.log", "wb")
            self.procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), path))
            log.close()

    def finish(self, timeout: float = 60.0) -> list[Path]:
        """Wait for py-spy to write its files (the workers must have stopped)."""
        paths = []
        deadline = time.monotonic() + timeout
        for proc, path in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
                proc.wait(10)
            if path.exists():
                paths.append(path)
        return paths


def _function(frame: str) -> str:
    # "name (path/file.py:123)" -> "name (path/file.py)"; line numbers split one function.
    head, sep, tail = frame.rpartition(":")
    if sep and tail.rstrip(")").isdigit():
        return head + ")"
    return frame


def _module(frame: str) -> str | None:
    start = frame.rfind("(")
    path = frame[start + 1 :].split(":")[0] if start >= 0 else ""
    if "site-packages/" in path or "/lib/python3" in path:
        return None
    for d in _PROJECT_DIRS:
        at = path.find(d)
        if at >= 0 and (at == 0 or path[at - 1] == "/"):
            return path[at:]
    return None


def _short(frame: str, root: str) -> str:
    return _PATH_PREFIX.sub("(", frame.replace(f"({root}/", "(")) if root else _PATH_PREFIX.sub("(", frame)


def summarise_text(text: str, top: int = 15, root: str = "") -> dict:
    own: Counter = Counter()
    total: Counter = Counter()
    modules: Counter = Counter()
    samples = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        samples += n
        own[_short(_function(frames[-1]), root)] += n
        for fn in {_short(_function(f), root) for f in frames}:
            total[fn] += n
        owner = next((m for m in map(_module, reversed(frames)) if m),
                     "(no project frame: bytewax runtime, Kafka poll, ...)")
        modules[owner] += n

    def table(counter: Counter, key: str) -> list[dict]:
        return [{key: name, "percent": round(100.0 * n / samples, 1)}
                for name, n in counter.most_common(top)]

    if not samples:
        return {"samples": 0, "self": [], "total": [], "project_total": [], "by_module": []}
    # Names are already cut back to the repository, so project frames read "(operators/...".
    ours = Counter({fn: n for fn, n in total.items() if any(f"({d}" in fn for d in _PROJECT_DIRS)})
    return {"samples": samples, "self": table(own, "function"), "total": table(total, "function"),
            "project_total": table(ours, "function"), "by_module": table(modules, "module")}


def summarise(paths: list[Path], top: int = 15) -> dict:
    """One summary over the raw py-spy files of all processes of a run."""
    from connectors.worker import REPO_ROOT

    text = "\n".join(p.read_text(errors="replace") for p in paths)
    return summarise_text(text, top, str(REPO_ROOT))
