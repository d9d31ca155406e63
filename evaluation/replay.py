"""Replay a recorded event file through the production dataflow (not a second
implementation) and collect every recommendation update.

One process runs in-process with ``run_main``; several processes run as
``python -m evaluation.replay`` children joined with ``cluster_main``, the way
``bytewax.run -i/-a`` joins workers.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import bytewax.operators as op
import orjson
from bytewax.connectors.files import FileSource
from bytewax.dataflow import Dataflow
from bytewax.testing import cluster_main, run_main

from connectors.embedded import free_port
from connectors.rec_file_sink import RecFileSink
from dataflows.recommend import wire
from evaluation.observe import Unranked, observer
from evaluation.pacing import PacedFileSource, ProgressBoard
from operators.messages import Envelope
from streamrec.gc_tuning import tune_gc
from streamrec.settings import SETTINGS_JSON_ENV, Settings

__all__ = ["child_settings", "replay_flow", "replay", "read_recs"]

REPO_ROOT = Path(__file__).resolve().parents[1]


def eval_settings(base: Settings | None = None) -> Settings:
    """Settings for replays: the production ones, without profile writes (a replay
    writes lists to files, and profiles are not part of what it measures).

    The lock-step source feeds one event at a time, so conflation never merges two
    events of a batch, and trend aggregators broadcast by event time (at most a second
    of it behind), as they do live.
    """
    base = base or Settings.from_env()
    return base.replace(write_profiles=False)


def eval_batch_size() -> int:
    """Events per lock-step batch (``STREAMREC_EVAL_BATCH``).

    The steps order each batch by event time, so a batch's later events do not leak into
    its earlier lists; bigger batches replay faster, with a little less exactness.
    """
    return max(1, int(os.environ.get("STREAMREC_EVAL_BATCH", str(DEFAULT_EVAL_BATCH))))


DEFAULT_EVAL_BATCH = 1


def replay_flow(events_path: str | Path, out_dir: str | Path, settings: Settings,
                catalog_path: str | Path | None = None, process: int = 0,
                on_write=None) -> Dataflow:
    """One process's replay flow. The caller (:func:`replay`) prepares the progress board
    first: with a catalog, its line count must be on the board as news in flight."""
    flow = Dataflow("streamrec_eval")
    board = ProgressBoard(Path(out_dir) / "progress.board")

    def written(n: int) -> None:
        board.add(process, n)
        if on_write is not None:
            on_write(n)

    # Lock-step: a batch is read only when every earlier event has left its record, so no
    # worker ranks an event with models that already learned from later ones.
    lines = op.input("events_file", flow,
                     PacedFileSource(events_path, board.path, batch_size=eval_batch_size()))
    envs = op.map("events_envelope", lines, lambda line: Envelope(line, None, "events"))
    catalog = None
    if catalog_path:
        # The whole catalog lands before the first event is read: its lines are counted
        # as news up front (see replay), and each one applied or dead-lettered counts
        # down. Without it the first events meet a half-loaded catalog, differently
        # for every worker count and run, and the online blend carries that on.
        items = op.input("catalog_file", flow, FileSource(catalog_path, batch_size=500))
        items = op.filter("catalog_lines", items, _is_line)
        catalog = op.map("catalog_envelope", items, lambda line: Envelope(line, None, "items"))
    outputs, dead = wire(flow, envs, catalog, settings, now=None, snapshots=False,
                         observe=observer(lambda n: board.add_news(process, n), settings.rank_shards))
    # Only events' dead letters stand for a source line (bad catalog lines are not events).
    def dead_letter_done(_step: str, letter) -> None:
        if letter.source == "events":
            board.add(process, 1)
        else:  # a bad catalog line: it will not land
            board.add_news(process, -1)

    op.inspect("dead_letters_done", dead, dead_letter_done)
    op.output("recs_file", outputs, RecFileSink(out_dir, process, written, notes=(Unranked,)))
    return flow


def _is_line(line: str) -> bool:
    return bool(line.strip())


def _catalog_lines(path: str | Path) -> int:
    with open(path, encoding="utf-8") as f:
        return sum(1 for line in f if _is_line(line))


def read_recs(out_dir: str | Path) -> list[dict]:
    records = []
    for path in sorted(Path(out_dir).glob("recs-*.jsonl")):
        with open(path, "rb") as f:
            records.extend(orjson.loads(line) for line in f if line.strip())
    return records


def _count_lines(out_dir: Path) -> int:
    total = 0
    for path in out_dir.glob("recs-*.jsonl"):
        with open(path, "rb") as f:
            total += sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    return total


def replay(events_path: str | Path, out_dir: str | Path, *, settings: Settings | None = None,
           catalog_path: str | Path | None = None, processes: int = 1, total: int | None = None,
           progress: bool = True) -> float:
    """Run the replay; return its wall time in seconds. Records land in ``out_dir``."""
    from tqdm import tqdm

    settings = eval_settings(settings)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in [*out_dir.glob("recs-*.jsonl"), *out_dir.glob("settings-*.sha256"), out_dir / "progress.board"]:
        old.unlink(missing_ok=True)
    board = ProgressBoard(out_dir / "progress.board")  # before any worker opens it
    if catalog_path:
        board.add_news(0, _catalog_lines(catalog_path))
    board.close()
    bar = tqdm(total=total, unit="rec", desc=f"dataflow ({processes} proc)", file=sys.stderr,
               disable=not progress, mininterval=0.5)
    started = time.perf_counter()
    if processes == 1:
        flow = replay_flow(events_path, out_dir, settings, catalog_path, 0, bar.update)
        run_main(flow)
    else:
        addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
        # Every field travels as it is (no field can be forgotten by a rebuilt environment).
        env = {**os.environ, SETTINGS_JSON_ENV: settings.to_json()}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        procs = [
            subprocess.Popen([sys.executable, "-m", "evaluation.replay", str(events_path),
                              str(out_dir), "--process", str(i), "--addresses", addresses]
                             + (["--catalog", str(catalog_path)] if catalog_path else []),
                             env=env, cwd=REPO_ROOT)
            for i in range(processes)
        ]
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(1.0):
                bar.n = _count_lines(out_dir)
                bar.refresh()

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        codes = [p.wait() for p in procs]
        stop.set()
        if any(codes):
            raise RuntimeError(f"replay worker processes failed with exit codes {codes}")
        bar.n = _count_lines(out_dir)
    bar.close()
    return time.perf_counter() - started


def child_settings(env: dict[str, str] | None = None) -> Settings:
    """The parent's Settings, passed whole (:data:`SETTINGS_JSON_ENV`), else from the env."""
    env = os.environ if env is None else env
    text = env.get(SETTINGS_JSON_ENV)
    return Settings.from_json(text) if text else eval_settings()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="one process of a multi-process replay")
    parser.add_argument("events")
    parser.add_argument("out_dir")
    parser.add_argument("--process", type=int, required=True)
    parser.add_argument("--addresses", required=True)
    parser.add_argument("--catalog")
    args = parser.parse_args(argv)
    settings = child_settings()
    # What this process runs with, for a check against the parent's (a digest: no secrets).
    (Path(args.out_dir) / f"settings-{args.process}.sha256").write_text(settings.fingerprint())
    flow = replay_flow(args.events, args.out_dir, settings, args.catalog, args.process)
    tune_gc(settings.gc_threshold)  # as a production worker does
    cluster_main(flow, args.addresses.split(";"), args.process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
