"""`streamrec eval`: replay recorded events through the production dataflow, score it
with the protocol of docs/evaluation.md, and put the POP, SR and V-SKNN baselines beside it.

Beside the numbers on all targets, ``HR@20_new`` and ``MRR@20_new`` score only the
targets the user had not interacted with earlier in the same session (column ``new``
counts them; see ``evaluation.metrics``)."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

from streamrec.errors import ConfigError, StreamrecError

__all__ = ["register", "run_eval", "format_table"]

METRICS = ("HR@10", "MRR@10", "HR@20", "MRR@20", "NDCG@20", "coverage@20", "HR@20_new", "MRR@20_new")


def register(sub) -> None:
    p = sub.add_parser("eval", help="replay recorded events and score the recommendations")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--events", help="a JSONL file of input events in time order")
    src.add_argument("--dataset", choices=["yoochoose", "taobao", "movielens"])
    src.add_argument("--ope", metavar="POLICY",
                     help="off-policy evaluation instead of a replay: estimate the CTR of "
                          "POLICY (a variant, or shares like learned=0.7,popular=0.3) from "
                          "logged lists (--outcomes, default the {prefix}:outcomes stream)")
    p.add_argument("--outcomes", help="with --ope: a JSONL file of outcome rows")
    p.add_argument("--data-dir", help="the folder holding the dataset folders (default $STREAMREC_DATA_DIR)")
    p.add_argument("--catalog", help="a catalog JSONL file (with --events)")
    p.add_argument("--test-start", type=float,
                   help="unix seconds; earlier events only warm up (default: the dataset's split, "
                        "or the last 20%% of time for --events)")
    p.add_argument("--limit", type=int, help="use only the first N events (a quick slice)")
    p.add_argument("--processes", type=int, default=1, help="dataflow processes (default 1)")
    p.add_argument("--out", help="write every recommendation update here (JSONL)")
    p.add_argument("--json", help="write the results table here (JSON)")
    p.add_argument("--plot", help="write a bar chart comparing strategies here (PNG)")
    p.add_argument("--no-baselines", action="store_true", help="score only the dataflow")
    p.set_defaults(func=cmd_eval)


def _load(args):
    from connectors.dataset_sources import dataset_dir
    from connectors.datasets import load_dataset, read_events_jsonl

    if args.dataset:
        ds = load_dataset(args.dataset, dataset_dir(args.dataset, args.data_dir))
        events, items, test_start, name = ds.events, ds.items, ds.test_start, args.dataset
    else:
        path = Path(args.events)
        if not path.is_file():
            raise ConfigError(f"--events {args.events}: no such file")
        events = list(read_events_jsonl(path))
        items = list(read_events_jsonl(args.catalog)) if args.catalog else []
        test_start = None
        name = path.stem
    if args.limit:
        events = events[: args.limit]
    if not events:
        raise StreamrecError("no events to evaluate")
    if args.test_start is not None:
        test_start = args.test_start
    elif test_start is None or (args.limit and test_start > events[-1]["ts"]):
        first, last = events[0]["ts"], events[-1]["ts"]
        test_start = first + 0.8 * (last - first)
    return name, events, items, float(test_start)


def run_eval(name: str, events: list[dict], items: list[dict], test_start: float, *,
             processes: int = 1, out: str | None = None, baselines: bool = True,
             progress: bool = True, session_gap: float | None = None) -> dict:
    """Score the production dataflow (and the baselines) on ``events``; returns the report.

    ``session_gap`` splits sessions without a ``session_id`` for the new-item numbers;
    by default the worker's (``STREAMREC_SESSION_GAP``)."""
    from connectors.datasets import write_events_jsonl
    from evaluation.metrics import recs_by_trigger_from_records, score_stream
    from evaluation.replay import read_recs, replay
    from streamrec.settings import Settings

    if session_gap is None:
        session_gap = Settings.from_env().session_gap

    catalog_size = len({e["item_id"] for e in events if e.get("item_id")} |
                       {i["item_id"] for i in items})
    work = Path(tempfile.mkdtemp(prefix="streamrec-eval-"))
    try:
        events_path = work / "events.jsonl"
        write_events_jsonl(events_path, events)
        catalog_path = None
        if items:
            catalog_path = work / "catalog.jsonl"
            write_events_jsonl(catalog_path, items)
        seconds = replay(events_path, work / "recs", catalog_path=catalog_path,
                         processes=processes, total=len(events), progress=progress)
        records = read_recs(work / "recs")
        if out:
            with open(out, "wb") as f:
                for r in records:
                    f.write(orjson.dumps(r) + b"\n")
        scores = score_stream(events, recs_by_trigger_from_records(records), test_start,
                              catalog_size=catalog_size, session_gap=session_gap)
        results = {"streamrec": {**scores, "seconds": round(seconds, 2),
                                 "events_per_s": round(len(events) / seconds, 1)}}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if baselines:
        from evaluation.baseline_runs import run_baselines

        for bname, res in run_baselines(events, test_start, catalog_size=catalog_size,
                                        progress=progress, session_gap=session_gap).items():
            res["events_per_s"] = round(len(events) / res["seconds"], 1) if res.get("seconds") else None
            results[bname] = res
    return {
        "dataset": name,
        "events": len(events),
        "test_start": test_start,
        "processes": processes,
        "catalog_size": catalog_size,
        "session_gap": session_gap,
        "results": results,
        "date": time.strftime("%Y-%m-%d"),
    }


def format_table(report: dict) -> str:
    header = f"| {report['dataset']} | " + " | ".join(METRICS) + " | scored | new | events/s |"
    lines = [header, "|" + "---|" * (len(METRICS) + 4)]
    for strategy, r in report["results"].items():
        cells = " | ".join(f"{r.get(m, float('nan')):.4f}" for m in METRICS)
        lines.append(f"| {strategy} | {cells} | {r.get('scored', 0)} | {r.get('scored_new', '-')} "
                     f"| {r.get('events_per_s') or '-'} |")
    return "\n".join(lines)


def plot(report: dict, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no PNG: `pip install matplotlib` for the chart)", file=sys.stderr)
        return False
    names = list(report["results"])
    metrics = ["HR@10", "MRR@10", "HR@20", "MRR@20", "NDCG@20", "HR@20_new", "MRR@20_new"]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(names)
    for n, name in enumerate(names):
        values = [report["results"][name].get(m, 0.0) for m in metrics]
        ax.bar([i + n * width for i in range(len(metrics))], values, width, label=name)
    labels = [m.replace("_new", "\nnew items") for m in metrics]
    ax.set_xticks([i + width * (len(names) - 1) / 2 for i in range(len(metrics))], labels)
    ax.set_title(f"{report['dataset']}: {report['events']:,} events, test after "
                 f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(report['test_start']))} UTC")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def cmd_ope(args) -> int:
    """``--ope``: IPS and SNIPS estimates of a policy's CTR from logged lists."""
    from models.offpolicy import estimate, parse_policy, samples_from_outcomes

    try:
        policy = parse_policy(args.ope)
    except ValueError as ex:
        raise ConfigError(f"--ope: {ex}") from ex
    if args.outcomes:
        path = Path(args.outcomes)
        if not path.is_file():
            raise ConfigError(f"--outcomes {args.outcomes}: no such file")
        with path.open("rb") as f:
            rows = [orjson.loads(line) for line in f if line.strip()]
        where = str(path)
    else:
        import redis

        from streamrec.settings import Settings, redact_url

        settings = Settings.from_env()
        client = redis.Redis.from_url(settings.redis_url)
        stream = f"{settings.prefix}:outcomes"
        rows = [{k.decode(): v.decode() for k, v in fields.items()}
                for _, fields in client.xrange(stream)]
        where = f"{stream} on {redact_url(settings.redis_url)}"
    samples = samples_from_outcomes(rows)
    if not samples:
        raise StreamrecError(f"no seen lists (impression outcomes) in {where}")
    est = estimate(samples, policy)
    shares = ", ".join(f"{k} {v:.0%}" for k, v in policy.items())
    print(f"{est['lists']:,} seen lists from {where}; logged CTR {est['logged_ctr']:.4f}")
    print(f"policy ({shares}), {est['level']:.0%} bootstrap intervals, "
          f"effective lists {est['effective_lists']:,.0f}:")
    print(f"  IPS   {est['ips']:.4f}  [{est['ips_ci'][0]:.4f}, {est['ips_ci'][1]:.4f}]")
    print(f"  SNIPS {est['snips']:.4f}  [{est['snips_ci'][0]:.4f}, {est['snips_ci'][1]:.4f}]")
    if est["unlogged_variants"]:
        print(f"  not in the log (no estimate possible for their share): "
              f"{', '.join(est['unlogged_variants'])}", file=sys.stderr)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(est, option=orjson.OPT_INDENT_2))
    return 0


def cmd_eval(args) -> int:
    if args.ope:
        return cmd_ope(args)
    name, events, items, test_start = _load(args)
    report = run_eval(name, events, items, test_start, processes=args.processes, out=args.out,
                      baselines=not args.no_baselines)
    print(format_table(report))
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    if args.plot:
        plot(report, args.plot)
    return 0
