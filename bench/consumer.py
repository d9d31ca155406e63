"""The latency probe: a separate process that reads the recs stream like a web back end.

    python -m bench.consumer --url redis://127.0.0.1:PORT/0 --stream PREFIX:recs --start-id ID

It prints ``ready`` once connected, follows the stream with ``XREAD BLOCK`` from
``--start-id`` and records, per entry, (time the entry was read - ``ingested_at``), where
``ingested_at`` is the producer's ``produced_at`` stamp the worker copied. It stops when
its stdin closes (or after ``--max-seconds``) and prints one JSON line: p50/p95/p99/max in
ms, the entry count and the samples behind the percentiles.

A process of its own so that reading the stream competes for the CPU like a real consumer
and never shares a GIL with the producer.
"""

from __future__ import annotations

import argparse
import sys
import threading

import orjson
import redis

from streamrec.latency import LatencyRecorder

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.consumer", description=__doc__.splitlines()[0])
    p.add_argument("--url", required=True)
    p.add_argument("--stream", required=True)
    p.add_argument("--start-id", default="0-0")
    p.add_argument("--max-seconds", type=float, default=600.0)
    args = p.parse_args(argv)

    redis.Redis.from_url(args.url).ping()
    stop = threading.Event()

    def wait_for_eof() -> None:
        sys.stdin.read()
        stop.set()

    threading.Thread(target=wait_for_eof, daemon=True).start()
    timer = threading.Timer(args.max_seconds, stop.set)
    timer.daemon = True
    timer.start()
    recorder = LatencyRecorder()
    print("ready", flush=True)
    recorder.follow(args.url, args.stream, stop, args.start_id)
    result = {"entries": recorder.count, **recorder.percentiles()}
    sys.stdout.write(orjson.dumps(result).decode() + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
