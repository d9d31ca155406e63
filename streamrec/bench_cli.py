"""`streamrec bench`: throughput against a bare ceiling flow, latency, memory, recovery cost.

See :mod:`bench.harness` for the phases; results go to stdout as a markdown table and,
on request, to JSON and markdown files.
"""

from __future__ import annotations

import sys

__all__ = ["register", "cmd_bench", "cmd_bench_erasure", "cmd_bench_steps", "erasure_arguments"]


def register(sub) -> None:
    from bench import PHASES

    p = sub.add_parser("bench", help="benchmark the worker (throughput, latency, memory, recovery)")
    p.add_argument("--quick", action="store_true",
                   help="small sizes (20k generated events, 3 s per latency rate) for a first look")
    p.add_argument("--events", type=int,
                   help="generated events (default 1,000,000; users = N/10, items = N/20); "
                        "also caps the taobao file")
    p.add_argument("--json", help="write the report as JSON here")
    p.add_argument("--markdown", help="write the report as markdown here")
    p.add_argument("--skip", default="",
                   help=f"comma-separated phases to leave out: {','.join(PHASES)}")
    p.add_argument("--latency-seconds", type=float, help="seconds of traffic per rate (default 20)")
    p.add_argument("--memory-events", type=int, help="events for the memory phase (default min(N, 300k))")
    p.add_argument("--data-dir", help="the folder holding taobao_2h/ (default $STREAMREC_DATA_DIR)")
    p.add_argument("--profile", metavar="DIR",
                   help="also run the full pipeline under py-spy (1 and 2 processes), raw stacks here")
    p.add_argument("--profile-seconds", type=float, default=90.0,
                   help="cut each profiled run off after this long (default 90)")
    p.add_argument("--keep-dir", help="keep worker and service logs in this folder")
    p.add_argument("--run-timeout", type=float, help="seconds one throughput run may take")
    p.set_defaults(func=cmd_bench)

    s = sub.add_parser("bench-steps",
                       help="the flow's CPU per event in one process, no broker or Redis "
                            "(A/B of code changes: same lists, less CPU?)")
    s.add_argument("--dataset", choices=("taobao", "generated"), default="taobao",
                   help="taobao (the 2 h slice, needs --data-dir) or generated (default taobao)")
    s.add_argument("--events", type=int,
                   help="first N events (default: all of taobao, 30,000 generated)")
    s.add_argument("--batch-sizes", default="20,1000",
                   help="source batch sizes, comma-separated (default 20,1000: a live stream "
                        "and a backlog)")
    s.add_argument("--repeat", type=int, default=3, help="runs per batch size (default 3; the median is shown)")
    s.add_argument("--data-dir", help="the folder holding taobao_2h/ (default $STREAMREC_DATA_DIR)")
    s.add_argument("--json", help="also write the figures as JSON here")
    s.set_defaults(func=cmd_bench_steps)

    e = sub.add_parser("bench-erasure",
                       help="time erasures (erase event -> receipt) under steady traffic")
    erasure_arguments(e)
    e.set_defaults(func=cmd_bench_erasure)


def erasure_arguments(p) -> None:
    """Options of ``streamrec bench-erasure`` (also ``python -m bench.erasure``)."""
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of traffic (default 30)")
    p.add_argument("--rate", type=float, default=1000.0,
                   help="events/s of other users (default 1000)")
    p.add_argument("--erase-every", type=float, default=1.0,
                   help="seconds between erasures (default 1)")
    p.add_argument("--processes", type=int, default=1, help="worker processes (default 1)")
    p.add_argument("--keep-dir", help="keep worker and service logs here")
    p.add_argument("--json", help="also write the result as JSON here")


def cmd_bench_steps(args) -> int:
    from bench.steps import main

    return main(args)


def cmd_bench_erasure(args) -> int:
    from bench.erasure import run_from_args

    return run_from_args(args)


def cmd_bench(args) -> int:
    from bench.harness import BenchOptions, run_bench
    from bench.report import to_markdown

    skip = frozenset(s.strip() for s in args.skip.split(",") if s.strip())
    opts = BenchOptions(quick=args.quick, events=args.events, skip=skip, json_path=args.json,
                        markdown_path=args.markdown, latency_seconds=args.latency_seconds,
                        memory_events=args.memory_events, taobao_dir=args.data_dir,
                        profile_dir=args.profile, profile_seconds=args.profile_seconds,
                        keep_dir=args.keep_dir,
                        run_timeout=args.run_timeout)
    report = run_bench(opts)
    print(to_markdown(report))
    incomplete = [r for r in report.get("throughput", []) if not r["complete"]]
    if incomplete:
        print(f"warning: {len(incomplete)} run(s) timed out before every user was answered",
              file=sys.stderr)
    return 0
