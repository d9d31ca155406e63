"""A bounded, self-stopping load test of one gateway process on loopback.

    python -m bench.loadtest [--clients 1000] [--rate 500] [--seconds 20] [--json out.json]

Starts the embedded Redis and Kafka, runs ``streamrec serve`` as its own process (so its
RSS and CPU are the gateway's alone), connects ``--clients`` SSE clients (one user each,
each with its own token) from this process, then writes ``--rate`` recommendation updates
per second for ``--seconds`` seconds to ``{prefix}:recs`` exactly as the worker's Redis
sink writes them (stream entry + latest list; a new list each time, for random connected
users). Delivery latency is the time from the entry's ``emitted_at`` (just before XADD)
to its arrival at the client. Everything is on 127.0.0.1 and stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import orjson
import redis

from connectors.embedded import free_port
from connectors.local_stack import LocalStack, StackOptions
from gateway.tokens import sign_token

__all__ = ["main", "run"]

MAX_CLIENTS = 5000
MAX_SECONDS = 300
SECRET = "loadtest-secret-" + "x" * 16


def _rss_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1])
    return out


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Clients:
    """``n`` raw SSE connections; records (receive time - emitted_at) per message."""

    def __init__(self, port: int, n: int) -> None:
        self.port = port
        self.n = n
        self.latencies: list[float] = []
        self.received = 0
        self.connected = 0
        self.failed: list[str] = []
        self.stop = asyncio.Event()

    async def one(self, user: str) -> None:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 20)
        except OSError as ex:
            self.failed.append(f"connect: {ex}")
            return
        token = sign_token(user, SECRET, ttl=3600)
        writer.write(f"GET /v1/users/{user}/recommendations/stream?token={token} HTTP/1.1\r\n"
                     f"Host: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        status = await reader.readline()
        if b" 200 " not in status:
            self.failed.append(status.decode(errors="replace").strip())
            writer.close()
            return
        self.connected += 1
        try:
            while not self.stop.is_set():
                line = await reader.readline()
                if not line:
                    break
                # Chunked framing lines and SSE fields: only data lines matter here.
                if line.startswith(b"data: "):
                    now = time.time()
                    msg = orjson.loads(line[6:])
                    self.received += 1
                    self.latencies.append((now - msg["emitted_at"]) * 1000.0)
        finally:
            writer.close()

    async def run(self, connected: threading.Event, done: threading.Event) -> None:
        tasks = []
        for i in range(self.n):
            tasks.append(asyncio.ensure_future(self.one(f"load-{i}")))
            if i % 100 == 99:
                await asyncio.sleep(0.05)  # a ramp, not a SYN flood
        while self.connected + len(self.failed) < self.n:
            await asyncio.sleep(0.05)
        connected.set()
        while not done.is_set():
            await asyncio.sleep(0.05)
        self.stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _write_updates(url: str, prefix: str, users: int, rate: float, seconds: float) -> int:
    """Paced XADD + SET of new lists for random users, as the worker's sink writes them."""
    client = redis.Redis.from_url(url)
    rng = random.Random(5)
    seqs = [0] * users
    written, started = 0, time.perf_counter()
    tick = 0.01
    per_tick = max(1, int(rate * tick))
    while time.perf_counter() - started < seconds:
        pipe = client.pipeline(transaction=False)
        for _ in range(per_tick):
            u = rng.randrange(users)
            seqs[u] += 1
            items = [{"item_id": f"p{rng.randrange(5000)}", "score": round(1.0 / (k + 1), 4)} for k in range(20)]
            now = time.time()
            fields = {"user_id": f"load-{u}", "trigger_event_id": f"e-{u}-{seqs[u]}", "event_ts": repr(now),
                      "emitted_at": repr(now), "items": orjson.dumps(items), "strategy": "covis",
                      "model_version": "loadtest", "seq": str(seqs[u]), "ingested_at": repr(now)}
            pipe.xadd(f"{prefix}:recs", fields, maxlen=100_000, approximate=True)
            pipe.set(f"{prefix}:latest:load-{u}", orjson.dumps({**fields, "items": items, "seq": seqs[u]}))
        pipe.execute()
        written += per_tick
        ahead = started + written / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
    client.close()
    return written


def run(clients: int = 1000, rate: float = 500.0, seconds: float = 20.0, out=sys.stdout) -> dict:
    if not 1 <= clients <= MAX_CLIENTS or not 0 < seconds <= MAX_SECONDS or rate <= 0:
        raise SystemExit(f"--clients 1..{MAX_CLIENTS}, --seconds up to {MAX_SECONDS}, --rate > 0")
    workdir = Path(tempfile.mkdtemp(prefix="streamrec-loadtest-"))
    prefix = "load"
    with LocalStack(workdir, StackOptions(prefix=prefix, processes=0)).start_services() as stack:
        port = free_port()
        env = {**os.environ, "REDIS_URL": stack.redis_url, "KAFKA_BOOTSTRAP_SERVERS": stack.bootstrap,
               "STREAMREC_PREFIX": prefix, "STREAMREC_GATEWAY_SECRET": SECRET,
               "STREAMREC_GATEWAY_MAX_CLIENTS": str(clients + 100)}
        log = open(workdir / "gateway.log", "wb")
        gateway = subprocess.Popen([sys.executable, "-m", "streamrec.cli", "serve", "--port", str(port),
                                    "--log-level", "warning"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            import httpx

            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if gateway.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the gateway did not start: " + (workdir / "gateway.log").read_text())
                time.sleep(0.1)
            rss_idle = _rss_kib(gateway.pid)
            load = Clients(port, clients)
            connected, done = threading.Event(), threading.Event()
            loop_thread = threading.Thread(target=lambda: asyncio.run(load.run(connected, done)), daemon=True)
            t0 = time.monotonic()
            loop_thread.start()
            if not connected.wait(60):
                raise SystemExit(f"only {load.connected} of {clients} clients connected in 60 s")
            connect_s = time.monotonic() - t0
            rss_connected = _rss_kib(gateway.pid)
            print(f"{load.connected} SSE clients connected in {connect_s:.1f}s ({len(load.failed)} failed); "
                  f"gateway RSS {rss_connected['VmRSS'] / 1024:.0f} MiB; writing {rate:.0f} updates/s "
                  f"for {seconds:.0f}s ...", file=out)
            cpu0, w0 = _cpu_seconds(gateway.pid), time.monotonic()
            written = _write_updates(stack.redis_url, prefix, clients, rate, seconds)
            time.sleep(1.0)  # let the last ones arrive
            cpu = (_cpu_seconds(gateway.pid) - cpu0) / (time.monotonic() - w0)
            rss_end = _rss_kib(gateway.pid)
            done.set()
            loop_thread.join(10)
        finally:
            os.killpg(gateway.pid, signal.SIGTERM)
            try:
                gateway.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(gateway.pid, signal.SIGKILL)
                gateway.wait()
            log.close()
    lat = np.array(load.latencies) if load.latencies else np.array([float("nan")])
    report = {
        "clients": clients, "connected": load.connected, "connect_failures": len(load.failed),
        "connect_seconds": round(connect_s, 2), "updates_written": written,
        "messages_received": load.received, "rate_per_s": rate, "seconds": seconds,
        "delivery_ms": {q: round(float(np.percentile(lat, int(q[1:]))), 2) for q in ("p50", "p95", "p99")}
        | {"max": round(float(lat.max()), 2)},
        "gateway_rss_mib": {"idle": round(rss_idle["VmRSS"] / 1024, 1),
                            "with_clients": round(rss_connected["VmRSS"] / 1024, 1),
                            "end": round(rss_end["VmRSS"] / 1024, 1),
                            "peak": round(rss_end["VmHWM"] / 1024, 1)},
        "gateway_cpu_share": round(cpu, 3),
        "date": time.strftime("%Y-%m-%d"),
    }
    d = report["delivery_ms"]
    print(f"delivered {load.received}/{written} updates; delivery latency p50 {d['p50']} ms  "
          f"p95 {d['p95']} ms  p99 {d['p99']} ms  max {d['max']} ms; gateway RSS "
          f"{report['gateway_rss_mib']['idle']} MiB idle, {report['gateway_rss_mib']['with_clients']} MiB "
          f"with clients, peak {report['gateway_rss_mib']['peak']} MiB; gateway CPU {cpu:.0%} of a core",
          file=out)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadtest", description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=500.0, help="recommendation updates per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--json", help="also write the report here")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.clients + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, args.clients + 1000), hard))
    report = run(args.clients, args.rate, args.seconds)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
