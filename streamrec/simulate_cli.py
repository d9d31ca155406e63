"""`streamrec simulate`: a closed loop of simulated shoppers and the real pipeline.

Each seed starts its own broker, Redis and worker (``connectors.local_stack``), sends a
generated catalog and some organic warm-up browsing, then runs shoppers
(``workloads.closed_loop``) in rounds: every active shopper's last events go to Kafka,
the runner waits until each one's latest list in Redis reflects them, and each shopper
reacts to the list they were given (clicks, carts, purchases, or browsing on, or
leaving). The experiment of the worker splits shoppers by a hash of their id into
``personal`` (the learned blend), ``popular`` (the same candidates ranked by trending
only) and ``random`` (uniformly random catalog items, shown by the simulator: the
no-model baseline). Reported per arm, as the mean over seeds with a 95% t-interval:
CTR (clicks per list seen), conversion (purchases per list seen) and revenue per
session; and the pipeline's own attribution of the same traffic (its outcomes stream).
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import orjson

from streamrec.errors import StreamrecError

__all__ = ["register", "simulate", "EXPERIMENT"]

ARMS = ("personal", "popular", "random")
EXPERIMENT = {"name": "simulate", "variants": [
    {"name": "personal", "share": 1.0},
    {"name": "popular", "share": 1.0, "signals": ["trending"]},
    # Its lists are replaced by random items in the simulator (no ranking strategy).
    {"name": "random", "share": 1.0, "signals": ["trending"]},
]}
# t quantiles (0.975) by degrees of freedom, for the intervals over seeds.
_T975 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26}


def register(sub) -> None:
    p = sub.add_parser("simulate", help="simulated shoppers against the real pipeline: "
                                        "CTR, conversion and revenue per strategy")
    p.add_argument("--seeds", type=int, default=5, help="independent runs (default 5)")
    p.add_argument("--users", type=int, default=400, help="shoppers per run (default 400)")
    p.add_argument("--sessions", type=int, default=2, help="sessions per shopper (default 2)")
    p.add_argument("--warm-events", type=int, default=3000,
                   help="organic browsing events sent before the shoppers start (default 3000)")
    p.add_argument("--json", help="write the results here (JSON)")
    p.add_argument("--plot", help="write a chart here (PNG; needs the eval extra)")
    p.add_argument("--work-dir", help="keep the services' files here (default: a temporary folder)")
    p.set_defaults(func=cmd_simulate)


def _warm_up(world, n: int, rng: np.random.Generator) -> list[dict]:
    """Organic browsing by background visitors of the same tastes: two or three views in
    a row, so that popularity and co-visitation exist when the shoppers arrive."""
    import dataclasses

    from workloads.closed_loop import World

    events, t0 = [], time.time() - 1800.0
    backdrop = World(dataclasses.replace(world.cfg, seed=world.cfg.seed + 10_000))
    # The same shop: the backdrop's visitors browse this world's catalog.
    for name in ("item_cat", "item_style", "quality", "price", "items", "index", "catalog"):
        setattr(backdrop, name, getattr(world, name))
    while len(events) < n:
        u = int(rng.integers(0, backdrop.cfg.n_users))
        e = backdrop.first_view(u)
        for k in range(int(rng.integers(2, 4))):
            e = dict(e)
            if k:
                e.update(backdrop._event(u, "view", backdrop._browse(u)))
            e["user_id"] = f"visitor-{world.cfg.seed}-{u}"
            e["ts"] = t0 + len(events) * (1700.0 / n)
            events.append(e)
    return events


def run_seed(seed: int, users: int, sessions: int, warm_events: int, work_dir: Path,
             progress=None) -> dict:
    """One closed-loop run; per arm: lists seen, clicks, carts, purchases, revenue,
    sessions, and the pipeline's own attributed impressions and clicks."""
    from connectors.local_stack import LocalStack, StackOptions
    from workloads.closed_loop import SimConfig, World

    world = World(SimConfig(n_users=users, seed=seed))
    run = f"sim{seed}-{int(time.time())}"
    options = StackOptions(events_topic=f"{run}-events", items_topic=f"{run}-items", prefix=run,
                           worker_env={"STREAMREC_EXPERIMENT": orjson.dumps(EXPERIMENT).decode(),
                                       "STREAMREC_METRICS_LATENESS": "5"})
    stats = {arm: dict.fromkeys(("lists", "clicks", "carts", "purchases", "revenue", "sessions"), 0)
             for arm in ARMS}
    with LocalStack(work_dir / f"seed{seed}", options) as stack:
        stack.start_services()
        stack.send_catalog(world.catalog)
        stack.send_events(_warm_up(world, warm_events, np.random.default_rng(seed)),
                          stamp_produce_time=False)
        stack.start_workers()
        client, keys = stack.redis, stack.keys
        left = {u: sessions for u in range(users)}
        step = dict.fromkeys(range(users), 0)
        outbox = {u: [world.first_view(u)] for u in range(users)}
        arm_of: dict[int, str] = {}
        rounds = 0
        finals: list[dict] = []  # events of shoppers who left: sent, not waited for
        while outbox:
            rounds += 1
            stack.send_events(finals + [e for evs in outbox.values() for e in evs],
                              stamp_produce_time=True)
            finals = []
            waiting = {u: evs[-1]["event_id"] for u, evs in outbox.items()}
            lists: dict[int, dict] = {}
            deadline = time.monotonic() + 60.0
            while waiting and time.monotonic() < deadline:
                order = list(waiting)
                raws = client.mget([keys.latest(world.users[u]) for u in order])
                for u, raw in zip(order, raws):
                    if raw is not None:
                        rec = orjson.loads(raw)
                        if rec["trigger_event_id"] == waiting[u]:
                            lists[u] = rec
                            del waiting[u]
                if waiting:
                    if not stack.workers.alive():
                        raise StreamrecError("the worker exited:\n" + stack.workers.log_tail())
                    time.sleep(0.02)
            if waiting:
                raise StreamrecError(f"{len(waiting)} shoppers got no list within 60 s:\n"
                                     + stack.workers.log_tail())
            outbox = {}
            for u, rec in lists.items():
                arm = arm_of.setdefault(u, rec.get("variant", "personal"))
                s = stats[arm]
                if step[u] == 0:
                    s["sessions"] += 1
                if arm == "random":
                    items, rec_id = world.random_list(world.cfg.visible), None
                else:
                    items, rec_id = [i["item_id"] for i in rec["items"]], rec.get("rec_id")
                got = world.react(u, items, rec_id, step[u])
                s["lists"] += bool(got.events and got.events[0]["type"] == "impression")
                s["clicks"] += got.clicked is not None
                s["carts"] += got.carted
                s["purchases"] += got.bought > 0
                s["revenue"] += got.bought
                step[u] += 1
                events = got.events
                if got.ended:
                    left[u] -= 1
                    step[u] = 0
                    if left[u] > 0:
                        events = events + [world.first_view(u)]
                    else:
                        finals += events
                        events = []
                if events:
                    outbox[u] = events
            if progress:
                progress(seed, rounds, len(outbox))
        if finals:
            stack.send_events(finals, stamp_produce_time=True)
        # The pipeline's own attribution of the same traffic.
        time.sleep(1.0)
        seen_lists: dict[str, str] = {}
        clicked: set[str] = set()
        for _, f in client.xrange(keys.outcomes):
            kind, rid, variant = f[b"kind"].decode(), f[b"rec_id"].decode(), f[b"variant"].decode()
            if kind == "impression":
                seen_lists[rid] = variant
            elif kind == "click":
                clicked.add(rid)
        for arm in ARMS:
            mine = [r for r, v in seen_lists.items() if v == arm]
            stats[arm]["attributed_lists"] = len(mine)
            stats[arm]["attributed_clicks"] = sum(r in clicked for r in mine)
    return {"seed": seed, "rounds": rounds, "arms": stats}


def _rates(arm: dict) -> dict:
    lists = max(arm["lists"], 1)
    return {"ctr": arm["clicks"] / lists, "conversion": arm["purchases"] / lists,
            "revenue_per_session": arm["revenue"] / max(arm["sessions"], 1)}


def summarise(runs: list[dict]) -> dict:
    """Mean and 95% t-interval over seeds of each arm's rates, and the lifts of
    ``personal`` over the others (ratio of the means)."""
    out = {}
    for arm in ARMS:
        per_seed = [_rates(r["arms"][arm]) for r in runs]
        out[arm] = {}
        for metric in ("ctr", "conversion", "revenue_per_session"):
            xs = np.array([p[metric] for p in per_seed])
            half = (_T975.get(len(xs) - 1, 1.96) * xs.std(ddof=1) / math.sqrt(len(xs))
                    if len(xs) > 1 else float("nan"))
            out[arm][metric] = {"mean": float(xs.mean()), "ci95": float(half)}
        out[arm]["lists"] = sum(r["arms"][arm]["lists"] for r in runs)
        out[arm]["sessions"] = sum(r["arms"][arm]["sessions"] for r in runs)
    lifts = {}
    for other in ("popular", "random"):
        lifts[other] = {m: (out["personal"][m]["mean"] / out[other][m]["mean"] - 1.0
                            if out[other][m]["mean"] else None)
                        for m in ("ctr", "conversion", "revenue_per_session")}
    return {"arms": out, "lift_of_personal_over": lifts}


def format_table(summary: dict, seeds: int) -> str:
    rows = [f"{'arm':<10} {'lists':>7} {'CTR':>18} {'conversion':>18} {'revenue/session':>20}"]
    for arm in ARMS:
        a = summary["arms"][arm]
        cell = lambda m, f: f"{a[m]['mean']:{f}} ± {a[m]['ci95']:{f}}"  # noqa: E731
        rows.append(f"{arm:<10} {a['lists']:>7,} {cell('ctr', '.4f'):>18} "
                    f"{cell('conversion', '.4f'):>18} {cell('revenue_per_session', '.2f'):>20}")
    for other, lift in summary["lift_of_personal_over"].items():
        parts = ", ".join(f"{m} {v:+.0%}" if v is not None else f"{m} n/a" for m, v in lift.items())
        rows.append(f"personal vs {other}: {parts}")
    rows.append(f"(mean over {seeds} seeds, ± half-width of the 95% t-interval)")
    return "\n".join(rows)


def plot(summary: dict, path: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as ex:
        raise StreamrecError("--plot needs matplotlib: pip install 'streamrec[eval]'") from ex
    metrics = (("ctr", "CTR"), ("conversion", "conversion"), ("revenue_per_session", "revenue / session"))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.4))
    for ax, (m, title) in zip(axes, metrics):
        means = [summary["arms"][a][m]["mean"] for a in ARMS]
        errs = [summary["arms"][a][m]["ci95"] for a in ARMS]
        ax.bar(ARMS, means, yerr=errs, capsize=4, color=["#2b6cb0", "#a0aec0", "#e2e8f0"],
               edgecolor="#2d3748")
        ax.set_title(title)
    fig.suptitle("streamrec simulate: simulated shoppers, real pipeline (95% intervals over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def simulate(seeds: int = 4, users: int = 240, sessions: int = 2, warm_events: int = 3000,
             work_dir: str | None = None, progress: bool = True) -> dict:
    base = Path(work_dir or tempfile.mkdtemp(prefix="streamrec-simulate-"))

    def say(seed, rounds, active):
        print(f"\rseed {seed}: round {rounds}, {active} shoppers active   ", end="", file=sys.stderr)

    runs = []
    started = time.monotonic()
    for seed in range(seeds):
        runs.append(run_seed(seed, users, sessions, warm_events, base, say if progress else None))
        if progress:
            print(file=sys.stderr)
    summary = summarise(runs)
    summary.update({"seeds": seeds, "users": users, "sessions": sessions,
                    "warm_events": warm_events, "runs": runs,
                    "seconds": round(time.monotonic() - started, 1)})
    return summary


def cmd_simulate(args) -> int:
    if args.seeds < 2:
        raise StreamrecError("--seeds must be at least 2 (the intervals are over seeds)")
    summary = simulate(args.seeds, args.users, args.sessions, args.warm_events, args.work_dir)
    print(format_table(summary, args.seeds))
    attributed = {arm: sum(r["arms"][arm]["attributed_clicks"] for r in summary["runs"])
                  for arm in ("personal", "popular")}
    truth = {arm: sum(r["arms"][arm]["clicks"] for r in summary["runs"]) for arm in attributed}
    print(f"clicks attributed by the pipeline / clicked by shoppers: "
          + ", ".join(f"{a} {attributed[a]}/{truth[a]}" for a in attributed)
          + f"; {summary['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    if args.plot:
        plot(summary, args.plot)
    return 0
