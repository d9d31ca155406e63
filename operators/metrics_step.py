"""List metrics in event-time windows: impressions, clicks, carts, purchases and revenue
per variant, strategy and segment, over tumbling 5-minute and 1-hour windows.

The attributed outcomes (``models.attribution``) of every rank shard are folded under
one key per window length with Bytewax's windowing (an event clock: a window closes once
events ``lateness`` seconds past its end have arrived, or that much system time passed
after the last one); each closed window becomes one :class:`MetricsWrite` for the sink,
which keeps it in Redis as ``{prefix}:metrics:{5m|1h}:{start}`` (``docs/experiments.md``).

>>> rows = summarise({"learned|covis|-": [10, 2, 1, 1, 25.0]})
>>> rows["learned|*|*"]["ctr"], rows["learned|*|*"]["conversion"]
(0.2, 0.1)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import bytewax.operators as op
from bytewax.dataflow import Stream
from bytewax.operators.windowing import EventClock, TumblingWindower, fold_window

from models.attribution import KINDS, Outcome
from operators.messages import MetricsWrite

__all__ = ["WINDOWS", "metrics_windows", "summarise"]

WINDOWS = (("5m", 300.0), ("1h", 3600.0))
_ALIGN = datetime(2020, 1, 1, tzinfo=timezone.utc)
_ALIGN_TS = _ALIGN.timestamp()
_COLUMNS = ("impressions", "clicks", "carts", "purchases", "revenue")
_COLUMN = {kind: i for i, kind in enumerate(KINDS)}  # revenue: column 4


def _event_time(o: Outcome) -> datetime:
    return datetime.fromtimestamp(o.ts, tz=timezone.utc)


def _row_key(o: Outcome) -> str:
    return f"{o.variant}|{o.strategy}|{o.segment or '-'}"


def _fold(state: dict, o: Outcome) -> dict:
    row = state.get(_row_key(o))
    if row is None:
        row = state[_row_key(o)] = [0, 0, 0, 0, 0.0]
    row[_COLUMN[o.kind]] += 1
    row[4] += o.value
    if "" not in state or o.ts < state[""]:
        state[""] = o.ts  # the earliest event time: names the window
    return state


def _merge(a: dict, b: dict) -> dict:
    for key, row in b.items():
        if key == "":
            a[""] = min(a.get("", row), row)
            continue
        mine = a.setdefault(key, [0, 0, 0, 0, 0.0])
        for i, v in enumerate(row):
            mine[i] += v
    return a


def _ratio(n: float, d: float) -> float:
    return round(n / d, 6) if d else 0.0


def summarise(state: dict) -> dict[str, dict]:
    """Rows of counts with CTR (clicks per impression) and conversion (purchases per
    impression), plus a roll-up per variant under ``"{variant}|*|*"``."""
    rows: dict[str, list] = {k: list(v) for k, v in state.items() if k != ""}
    for key, row in list(rows.items()):
        total = rows.setdefault(f"{key.split('|', 1)[0]}|*|*", [0, 0, 0, 0, 0.0])
        for i, v in enumerate(row):
            total[i] += v
    out = {}
    for key, row in rows.items():
        rec = dict(zip(_COLUMNS, row))
        rec["revenue"] = round(rec["revenue"], 6)
        rec["ctr"] = _ratio(rec["clicks"], rec["impressions"])
        rec["conversion"] = _ratio(rec["purchases"], rec["impressions"])
        out[key] = rec
    return out


def metrics_windows(outcomes: Stream, lateness: float = 30.0) -> Stream:
    """:class:`MetricsWrite` messages of the closed 5-minute and 1-hour windows."""
    keyed = op.key_on("metrics_key", outcomes, lambda _: "metrics")
    writes = []
    for name, length in WINDOWS:
        clock = EventClock(_event_time, wait_for_system_duration=timedelta(seconds=lateness))
        windower = TumblingWindower(length=timedelta(seconds=length), align_to=_ALIGN)
        out = fold_window(f"metrics_{name}", keyed, clock, windower, dict, _fold, _merge)

        def closed(pair, name=name, length=length) -> MetricsWrite:
            _, (_, state) = pair
            start = _ALIGN_TS + ((state[""] - _ALIGN_TS) // length) * length
            return MetricsWrite(name, start, summarise(state))

        writes.append(op.map(f"metrics_{name}_write", out.down, closed))
    return op.merge("metrics_writes", *writes)
