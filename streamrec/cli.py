"""The `streamrec` command: demo, tail, latest (and eval, bench, serve, datasets, rules).

Configuration comes from the same environment variables as the worker
(see ``streamrec.settings``); options override them where it makes sense.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time

import orjson

from streamrec.errors import StreamrecError
from streamrec.settings import Settings

__all__ = ["main"]


def _settings() -> Settings:
    return Settings.from_env()


def cmd_demo(args) -> int:
    from streamrec.demo import DemoOptions, run_demo

    opts = DemoOptions(events=args.events, catalog=args.catalog, count=args.count, rate=args.rate,
                       processes=args.processes, users=args.users, items=args.items,
                       seed=args.seed, keep_dir=args.keep_dir, json_out=args.json)
    run_demo(opts)
    return 0


def _client(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.redis_url)


def _format_entry(fields: dict) -> str:
    f = {k.decode(): v.decode() for k, v in fields.items()}
    items = [i["item_id"] for i in orjson.loads(f.get("items", "[]"))]
    lag = ""
    if f.get("ingested_at"):
        lag = f" {1000 * (float(f['emitted_at']) - float(f['ingested_at'])):.1f}ms"
    return (f"{f.get('user_id')} after {f.get('trigger_event_id')} [{f.get('strategy')}{lag}]: "
            + " ".join(items[:10]))


def cmd_tail(args) -> int:
    settings = _settings()
    client = _client(settings)
    stream = f"{settings.prefix}:recs"
    last = "$" if not args.from_start else "0-0"
    shown = 0
    try:
        while args.count is None or shown < args.count:
            resp = client.xread({stream: last}, count=100, block=1000)
            for _, entries in resp or ():
                for eid, fields in entries:
                    last = eid
                    if args.user and fields.get(b"user_id", b"").decode() != args.user:
                        continue
                    if args.json:
                        print(orjson.dumps({k.decode(): v.decode() for k, v in fields.items()}).decode())
                    else:
                        print(_format_entry(fields))
                    shown += 1
                    if args.count is not None and shown >= args.count:
                        return 0
    except KeyboardInterrupt:
        pass
    return 0


def cmd_latest(args) -> int:
    settings = _settings()
    client = _client(settings)
    raw = client.get(f"{settings.prefix}:latest:{args.user_id}")
    if raw is None:
        print(f"no recommendations for user {args.user_id!r} under prefix {settings.prefix!r}",
              file=sys.stderr)
        return 1
    data = orjson.loads(raw)
    if args.json:
        print(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return 0
    age = time.time() - data["emitted_at"]
    print(f"user {data['user_id']}: after event {data['trigger_event_id']}, {age:.1f}s ago, "
          f"strategy {data['strategy']}, model {data['model_version']}")
    for rank, item in enumerate(data["items"], 1):
        print(f"  {rank:>2}. {item['item_id']:<24} {item['score']:.4f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamrec", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the whole pipeline locally with embedded services")
    demo.add_argument("--events", help="a recorded JSONL event file (default: generated traffic)")
    demo.add_argument("--catalog", help="a catalog JSONL file to send to the items topic")
    demo.add_argument("--count", type=int, default=20_000, help="events to send (default 20000)")
    demo.add_argument("--rate", type=float, default=1000.0, help="events per second (default 1000)")
    demo.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    demo.add_argument("--users", type=int, default=2000, help="generated users")
    demo.add_argument("--items", type=int, default=3000, help="generated catalog size")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--keep-dir", help="keep logs and data in this folder")
    demo.add_argument("--json", help="also write the summary as JSON to this file")
    demo.set_defaults(func=cmd_demo)

    tail = sub.add_parser("tail", help="follow the recommendation stream")
    tail.add_argument("--user", help="only this user's updates")
    tail.add_argument("--from-start", action="store_true", help="start at the oldest entry")
    tail.add_argument("--count", type=int, help="stop after this many entries")
    tail.add_argument("--json", action="store_true", help="print raw entries as JSON lines")
    tail.set_defaults(func=cmd_tail)

    latest = sub.add_parser("latest", help="show a user's latest recommendation list")
    latest.add_argument("user_id")
    latest.add_argument("--json", action="store_true")
    latest.set_defaults(func=cmd_latest)

    from streamrec import eval_cli

    eval_cli.register(sub)
    from streamrec import bench_cli; bench_cli.register(sub)  # noqa: E702
    from streamrec import gateway_cli; gateway_cli.register(sub)  # noqa: E702
    from streamrec import fuzz_cli; fuzz_cli.register(sub)  # noqa: E702
    from streamrec import datasets_cli; datasets_cli.register(sub)  # noqa: E702
    from streamrec import rules_cli; rules_cli.register(sub)  # noqa: E702
    from streamrec import simulate_cli; simulate_cli.register(sub)  # noqa: E702
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except StreamrecError as ex:
        print(f"streamrec {args.command}: {ex}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
