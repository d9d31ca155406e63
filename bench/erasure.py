"""How long an erasure takes: from the ``erase`` event entering Kafka to its receipt on
``{prefix}:erasures``, while the worker serves steady traffic of other users.

Embedded broker and Redis on loopback, one worker (``--processes 2`` for two). First a
warm-up gives every user to be erased a history (lists, a profile, recs entries); then
generated shop traffic is sent at ``--rate`` events/s for ``--seconds``, with one erase
event (``context.receipt``) every ``--erase-every`` seconds. Each erase is timed from
its produce call (librdkafka's create time, the moment it enters Kafka) to the id of its
receipt entry (Redis's clock at ``XADD``; same machine). Prints p50/p99/max and writes
JSON on request. Bounded: it stops by itself after the traffic and a 30 s drain.

    python -m bench.erasure --seconds 30 --rate 1000 --json out/erasure.json
    streamrec bench-erasure --seconds 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson
import redis
from confluent_kafka import Producer

from bench.latency import wait_serving
from connectors.embedded import EmbeddedKafka, EmbeddedRedis, ensure_topics
from connectors.replay import produce_catalog
from workloads.traffic import TrafficConfig, generate_catalog, generate_events
from connectors.worker import WorkerGroup

__all__ = ["run_erasure_bench", "run_from_args", "main"]

_DRAIN_S = 30.0


def _erase(user: str, receipt: str) -> dict:
    return {"event_id": f"erase-{receipt}", "ts": time.time(), "user_id": user, "type": "erase",
            "context": {"receipt": receipt}}


def _warm_up(user: str, n: int) -> list[dict]:
    """A short history for a user who will be erased: views of a few catalog items."""
    now = time.time()
    return [{"event_id": f"{user}-w{i}", "ts": now - 60 + i, "user_id": user, "type": "view",
             "item_id": f"i{i * 7}", "category": None} for i in range(n)]


def _list_latencies(client: redis.Redis, stream: str) -> np.ndarray:
    """Seconds from each list's event entering Kafka to its entry on the recs stream."""
    out = []
    for entry_id, fields in client.xrange(stream):
        ingested = fields.get(b"ingested_at")
        if ingested:
            out.append(int(entry_id.split(b"-")[0]) / 1000.0 - float(ingested))
    return np.array(out)


def _paced(producer: Producer, topic: str, traffic, rate: float, seconds: float,
           erase_every: float, doomed: list[str], sent_at: dict[str, float]) -> int:
    """Traffic at ``rate`` with an erase every ``erase_every`` s; returns events sent."""
    t0 = time.monotonic()
    next_erase, n, k = t0 + erase_every / 2, 0, 0
    total = int(rate * seconds)
    for event in traffic:
        if n >= total:
            break
        now = time.monotonic()
        if now >= next_erase and k < len(doomed):
            receipt = uuid.uuid4().hex[:16]
            sent_at[receipt] = time.time()
            producer.produce(topic, key=doomed[k].encode(), value=orjson.dumps(_erase(doomed[k], receipt)))
            k += 1
            next_erase += erase_every
        delay = t0 + n / rate - now
        if delay > 0:
            time.sleep(delay)
        producer.produce(topic, key=event["user_id"].encode(), value=orjson.dumps(event))
        producer.poll(0)
        n += 1
    producer.flush(30)
    return n


def run_erasure_bench(seconds: float = 30.0, rate: float = 1000.0, erase_every: float = 1.0,
                      processes: int = 1, keep_dir: str | None = None) -> dict:
    workdir = Path(keep_dir or tempfile.mkdtemp(prefix="streamrec-erasure-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = TrafficConfig(n_users=5000, n_items=3000, seed=11, start_ts=time.time() - 3600,
                        event_rate=rate)
    catalog = generate_catalog(cfg)
    n_erasures = int(seconds / erase_every) + 1
    doomed = [f"erase-me-{i}" for i in range(n_erasures)]
    with EmbeddedKafka(log_dir=workdir) as kafka, EmbeddedRedis(log_dir=workdir) as store:
        topic, prefix = "events", "bench"
        ensure_topics(kafka.bootstrap, {topic: 2, f"{topic}-items": 1, f"{topic}.dlq": 1})
        produce_catalog(kafka.bootstrap, f"{topic}-items", catalog)
        env = {"KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap, "REDIS_URL": store.url,
               "STREAMREC_EVENTS_TOPIC": topic, "STREAMREC_ITEMS_TOPIC": f"{topic}-items",
               "STREAMREC_PREFIX": prefix}
        client = redis.Redis.from_url(store.url)
        group = WorkerGroup(env, processes=processes, log_dir=workdir / "logs").start()
        try:
            wait_serving(kafka.bootstrap, topic, client, prefix, group)
            producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5})
            for user in doomed:
                for e in _warm_up(user, 5):
                    producer.produce(topic, key=user.encode(), value=orjson.dumps(e))
            producer.flush(30)
            sent_at: dict[str, float] = {}
            print(f"traffic: {rate:.0f} events/s for {seconds:.0f} s, one erasure every "
                  f"{erase_every:g} s, {processes} process(es)", file=sys.stderr)
            started = time.monotonic()
            sent = _paced(producer, topic, generate_events(cfg, int(rate * seconds) + 1), rate,
                          seconds, erase_every, doomed, sent_at)
            elapsed = time.monotonic() - started
            done: dict[str, float] = {}
            deadline = time.monotonic() + _DRAIN_S
            while len(done) < len(sent_at) and time.monotonic() < deadline:
                for entry_id, fields in client.xrange(f"{prefix}:erasures"):
                    ms = int(entry_id.split(b"-")[0])
                    done.setdefault(fields[b"receipt"].decode(), ms / 1000.0)
                time.sleep(0.2)
            alive = group.alive()
            lists = _list_latencies(client, f"{prefix}:recs")
            del producer  # before the broker stops: no reconnect noise on stderr
        finally:
            group.stop()
            client.close()
    waits = np.array([done[r] - t for r, t in sent_at.items() if r in done])
    result = {
        "seconds": seconds, "rate": rate, "events_sent": sent,
        "achieved_rate": round(sent / elapsed, 1) if elapsed else None,
        "processes": processes, "erasures": len(sent_at), "confirmed": len(done),
        "worker_alive": alive,
    }
    if len(lists):  # the same clock for the lists, as a reference: is the worker behind?
        result.update({f"list_p{q}_ms": round(float(np.percentile(lists, q)) * 1000, 1)
                       for q in (50, 99)})
    if len(waits):
        result.update({f"p{q}_ms": round(float(np.percentile(waits, q)) * 1000, 1) for q in (50, 99)})
        result["max_ms"] = round(float(waits.max()) * 1000, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    from streamrec.bench_cli import erasure_arguments

    p = argparse.ArgumentParser(prog="python -m bench.erasure", description=__doc__.splitlines()[0])
    erasure_arguments(p)
    return run_from_args(p.parse_args(argv))


def run_from_args(args) -> int:
    if not (0 < args.seconds <= 600 and 0 < args.rate <= 20_000 and args.erase_every > 0):
        print("bench.erasure: --seconds must be in (0, 600], --rate in (0, 20000], "
              "--erase-every > 0", file=sys.stderr)
        return 2
    result = run_erasure_bench(args.seconds, args.rate, args.erase_every, args.processes,
                               args.keep_dir)
    print(f"erasures confirmed: {result['confirmed']}/{result['erasures']}; "
          f"traffic {result['events_sent']:,} events at {result['achieved_rate']} events/s")
    if "list_p50_ms" in result:
        print(f"event -> list (all traffic, for reference): p50 {result['list_p50_ms']} ms, "
              f"p99 {result['list_p99_ms']} ms")
    if "p50_ms" in result:
        print(f"erase event -> receipt: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, "
              f"max {result['max_ms']} ms")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return 0 if result["confirmed"] == result["erasures"] and result["worker_alive"] else 1


if __name__ == "__main__":
    sys.exit(main())
