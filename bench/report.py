"""The benchmark report: machine facts, derived ratios, targets, and a markdown rendering.

>>> r = {"throughput": [
...     {"dataset": "d", "flow": "full", "processes": 1, "events_per_s": 50.0},
...     {"dataset": "d", "flow": "ceiling", "processes": 1, "events_per_s": 100.0}]}
>>> ratios(r)["d"]["full_over_ceiling_1p"]
0.5
"""

from __future__ import annotations

import os
import platform
import time
from importlib import metadata

__all__ = ["machine", "ratios", "targets", "to_markdown"]


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(next(ln.split()[1] for ln in f if ln.startswith("MemTotal:")))
    except (OSError, StopIteration):
        pass

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    return {
        "nproc": os.cpu_count(), "cpu_model": model, "ram_gib": round(mem_kib / 1024**2, 1),
        "load_avg": [round(x, 2) for x in os.getloadavg()], "python": platform.python_version(),
        "bytewax": version("bytewax"), "kernel": platform.release(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def _rate(report: dict, dataset: str, flow: str, processes: int, recovery: bool = False):
    for r in report.get("throughput", []):
        if (r["dataset"], r["flow"], r["processes"], r.get("recovery", False)) == (
                dataset, flow, processes, recovery):
            return r["events_per_s"]
    return None


def _div(a, b):
    return round(a / b, 3) if a and b else None


def ratios(report: dict) -> dict:
    out = {}
    for dataset in dict.fromkeys(r["dataset"] for r in report.get("throughput", [])):
        f1, f2 = _rate(report, dataset, "full", 1), _rate(report, dataset, "full", 2)
        c1, c2 = _rate(report, dataset, "ceiling", 1), _rate(report, dataset, "ceiling", 2)
        out[dataset] = {"full_over_ceiling_1p": _div(f1, c1), "full_over_ceiling_2p": _div(f2, c2),
                        "full_speedup_1_to_2": _div(f2, f1), "ceiling_speedup_1_to_2": _div(c2, c1)}
    return out


def targets(report: dict) -> list[dict]:
    """The speed targets against what was measured (None: not measured)."""
    rows = []
    for dataset, r in report.get("ratios", {}).items():
        v = r["full_over_ceiling_1p"]
        rows.append({"target": f"{dataset}: full >= 30% of ceiling, 1 process",
                     "measured": f"{100 * v:.0f}%" if v else "-", "met": None if v is None else v >= 0.3})
        fs, cs = r["full_speedup_1_to_2"], r["ceiling_speedup_1_to_2"]
        rows.append({"target": f"{dataset}: 1->2 process speed-up >= ceiling's",
                     "measured": f"{fs}x vs {cs}x" if fs and cs else "-",
                     "met": None if not (fs and cs) else fs >= cs})
    limits = {"1000/s": 50.0, "3000/s": 100.0}
    for lat in report.get("latency", []):
        limit = limits.get(lat["label"])
        if limit is not None:
            p99 = lat.get("p99")
            ok = p99 is not None and p99 == p99 and p99 <= limit
            rows.append({"target": f"p99 <= {limit:.0f} ms at {lat['label']}",
                         "measured": f"{p99:.1f} ms" if p99 == p99 and p99 is not None else "-",
                         "met": ok})
    mem = report.get("memory")
    if mem:
        rows.append({"target": "<= 2 KiB RSS per active user",
                     "measured": f"{mem['kib_per_user']:.2f} KiB", "met": mem["kib_per_user"] <= 2.0})
    return rows


def _cell(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "**no**"
    if isinstance(v, float):
        return f"{v:,.1f}" if abs(v) >= 10 else f"{v:.3g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines + [""]


def to_markdown(report: dict) -> str:
    m = report["machine"]
    out = [f"## streamrec bench, {m['date']}", "",
           f"Machine: {m['nproc']} CPUs ({m['cpu_model']}), {m['ram_gib']} GiB RAM, Python "
           f"{m['python']}, bytewax {m['bytewax']}; load average at start {m['load_avg']}, at end "
           f"{report.get('load_avg_end')}. Options: {report.get('options')}.", ""]
    if report.get("error"):
        out += [f"**Stopped early**: {report['error']}", ""]
    if report.get("throughput"):
        out += ["### Throughput (events pre-loaded; worker start -> every user's last event answered)", ""]
        out += _table(
            ["dataset", "flow", "proc", "recovery", "events", "users", "seconds", "events/s",
             "steady events/s", "start-up s", "CPU us/event", "RSS MiB", "complete"],
            [[r["dataset"], r["flow"], r["processes"], "-r -s 10" if r.get("recovery") else "", r["events"],
              r["users"], r["seconds"], r["events_per_s"], r["steady_events_per_s"], r["startup_s"],
              r["cpu_us_per_event"], r["rss_mib"], r["complete"]] for r in report["throughput"]])
    if report.get("ratios"):
        out += ["### Full pipeline against the ceiling", ""]
        out += _table(["dataset", "full/ceiling 1p", "full/ceiling 2p", "full 1->2", "ceiling 1->2"],
                      [[d, r["full_over_ceiling_1p"], r["full_over_ceiling_2p"],
                        r["full_speedup_1_to_2"], r["ceiling_speedup_1_to_2"]]
                       for d, r in report["ratios"].items()])
    if report.get("latency"):
        out += ["### Latency (produce -> read by a separate XREAD BLOCK consumer), ms; CPU per "
                "event and time until every user was answered, per rate", ""]
        out += _table(["rate", "target/s", "achieved/s", "entries", "p50", "p95", "p99", "max",
                       "CPU us/event", "sent+answered s"],
                      [[r["label"], r["target_rate"], r["achieved_rate"], r.get("entries"),
                        r.get("p50"), r.get("p95"), r.get("p99"), r.get("max"),
                        r.get("cpu_us_per_event"), r.get("drained_s")]
                       for r in report["latency"]])
    mem = report.get("memory")
    if mem:
        out += ["### Memory (worker VmRSS)", ""]
        out += _table(["catalog items", "MiB per 100k items", "KiB/item", "active users",
                       "MiB per 100k users", "KiB/user", "RSS serving/catalog/users MiB"],
                      [[mem["catalog_items"], mem["mib_per_100k_items"], mem["kib_per_item"],
                        mem["active_users"], mem["mib_per_100k_users"], mem["kib_per_user"],
                        f"{mem['rss_serving_mib']} / {mem['rss_with_catalog_mib']} / "
                        f"{mem['rss_with_users_mib']}"]])
    rec = report.get("recovery")
    if rec:
        out += ["### Recovery cost (-r DIR -s 10, 1 process)", ""]
        out += _table(["dataset", "without events/s", "with events/s", "with/without", "store MiB"],
                      [[rec["dataset"], rec["without_events_per_s"], rec["with_events_per_s"],
                        rec["ratio"], rec["store_mib"]]])
    if report.get("targets"):
        out += ["### Targets", ""]
        out += _table(["target", "measured", "met"],
                      [[t["target"], t["measured"], t["met"]] for t in report["targets"]])
    for label, prof in (report.get("profile") or {}).items():
        out += [f"### Profile: {label} ({prof['samples']:,} samples)", ""]
        out += _table(["function (self)", "%"], [[r["function"], r["percent"]] for r in prof["self"][:12]])
        out += _table(["project function (anywhere on the stack)", "%"],
                      [[r["function"], r["percent"]] for r in prof.get("project_total", [])[:12]])
        out += _table(["project module (deepest frame)", "%"],
                      [[r["module"], r["percent"]] for r in prof["by_module"][:10]])
    return "\n".join(out)
