"""`streamrec fuzz`: hostile payloads through the event parser, or through the whole worker.

```bash
streamrec fuzz --payloads 1000000             # parser + catalog records, Hypothesis + mutations
streamrec fuzz --dataflow --payloads 100000   # valid and hostile events through the real flow
```

The parser run draws structured payloads from :mod:`streamrec.hostile` with Hypothesis and
adds seeded byte mutations of each (so a million payloads take minutes, not hours). Every
payload must become a valid event or a dead letter with a reason; anything else (an
exception, a malformed answer) is a crash, saved under ``--crash-dir`` for replay.

The dataflow run sends a mix of valid and hostile payloads through the recommend flow
(``dataflows.recommend.wire``, Bytewax ``run_main``, in-memory source) and checks that
every payload is accounted for: events answered by a list or an "unranked" decision plus
dead letters equal the payloads sent.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import orjson

__all__ = ["FuzzSummary", "fuzz_dataflow", "fuzz_parser", "register"]

_VARIANTS = 100  # byte mutations per generated payload
_SAVED_CRASHES = 20


@dataclass
class FuzzSummary:
    payloads: int = 0
    crashes: int = 0
    valid: int = 0
    dead: Counter = field(default_factory=Counter)
    catalog_ok: int = 0
    catalog_dead: Counter = field(default_factory=Counter)
    crash_kinds: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"payloads": self.payloads, "crashes": self.crashes, "valid": self.valid,
                "dead_lettered": sum(self.dead.values()), "dead_by_reason": dict(self.dead.most_common()),
                "catalog_records": {"ok": self.catalog_ok, "dead_by_reason": dict(self.catalog_dead)},
                "crash_kinds": dict(self.crash_kinds), "seconds": round(self.seconds, 1), **self.extra}

    def text(self) -> str:
        lines = [f"payloads        {self.payloads:,} in {self.seconds:.0f} s "
                 f"({self.payloads / max(self.seconds, 1e-9):,.0f}/s)",
                 f"crashes         {self.crashes:,}" + (f"  {dict(self.crash_kinds)}" if self.crashes else ""),
                 f"valid events    {self.valid:,}",
                 f"dead-lettered   {sum(self.dead.values()):,}"]
        lines += [f"  {reason:<34} {n:>10,}" for reason, n in self.dead.most_common()]
        if self.catalog_ok or self.catalog_dead:
            lines.append(f"catalog records {self.catalog_ok + sum(self.catalog_dead.values()):,}: "
                         f"{self.catalog_ok:,} kept, {sum(self.catalog_dead.values()):,} dead-lettered "
                         f"({', '.join(f'{r} {n:,}' for r, n in self.catalog_dead.most_common())})")
        lines += [f"{k:<15} {v}" for k, v in self.extra.items()]
        return "\n".join(lines)


class _Crashes:
    def __init__(self, folder: Path | None, summary: FuzzSummary) -> None:
        self.folder = folder
        self.summary = summary

    def record(self, payload, what: str) -> None:
        self.summary.crashes += 1
        self.summary.crash_kinds[what] += 1
        if self.folder is not None and self.summary.crashes <= _SAVED_CRASHES:
            self.folder.mkdir(parents=True, exist_ok=True)
            from operators.parse import raw_bytes

            (self.folder / f"crash-{self.summary.crashes:02d}.bin").write_bytes(raw_bytes(payload)[:200_000])


def fuzz_parser(payloads: int, seed: int = 0, crash_dir: Path | None = None,
                progress: bool = True) -> FuzzSummary:
    """Run ``payloads`` hostile payloads through EventParser (and catalog records through
    parse_catalog); never raises for a crash, counts it."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st
    from tqdm import tqdm

    from operators.messages import DeadLetter, Envelope
    from operators.parse import EventParser, parse_catalog
    from streamrec.hostile import catalog_payloads, event_dicts, event_payloads, mutate

    summary = FuzzSummary()
    crashes = _Crashes(crash_dir, summary)
    now = time.time()
    parser = EventParser(86_400.0, lambda: now)
    bar = tqdm(total=payloads, unit="payload", disable=not progress, mininterval=1.0)

    def check(payload) -> None:
        summary.payloads += 1
        try:
            result = parser(Envelope(payload, None))
        except Exception as ex:  # noqa: BLE001 - a crash is what we are looking for
            crashes.record(payload, f"{type(ex).__name__}")
            return
        if isinstance(result, DeadLetter) and result.reason and isinstance(result.payload, bytes):
            summary.dead[result.reason] += 1
        elif isinstance(result, tuple) and len(result) == 2:
            summary.valid += 1
        else:
            crashes.record(payload, "malformed_result")

    def check_catalog(payload) -> None:
        try:
            result = parse_catalog(Envelope(payload, None, "items"))
        except Exception as ex:  # noqa: BLE001
            crashes.record(payload, f"catalog:{type(ex).__name__}")
            return
        if isinstance(result, DeadLetter):
            summary.catalog_dead[result.reason] += 1
        else:
            summary.catalog_ok += 1

    def one(event, structured, record, rng) -> None:
        if summary.payloads >= payloads:
            return
        before = summary.payloads
        check(event)
        check_catalog(record)
        # Mutations start from an event-shaped payload: most stay JSON objects, so the
        # checks after decoding are reached too, not only the JSON decoder.
        try:
            raw = orjson.dumps(structured)
        except (TypeError, orjson.JSONEncodeError):
            raw = None
        if raw is not None:
            check(raw)
        for _ in range(_VARIANTS if raw is not None else 0):
            if summary.payloads >= payloads:
                break
            check(mutate(raw, rng))
        bar.update(summary.payloads - before)

    started = time.monotonic()
    round_seed = seed
    while summary.payloads < payloads:
        examples = math.ceil((payloads - summary.payloads) / (_VARIANTS // 2 + 2))
        run = settings(max_examples=examples, database=None, deadline=None, phases=[Phase.generate],
                       suppress_health_check=list(HealthCheck))(
            hypothesis_seed(round_seed)(
                given(event_payloads(), event_dicts, catalog_payloads(),
                      st.randoms(use_true_random=False))(one)))
        run()
        round_seed += 1
    bar.close()
    summary.seconds = time.monotonic() - started
    return summary


def _dataflow_payloads(count: int, seed: int) -> list:
    """Half valid events (unique ids), half hostile: mutated events and Hypothesis draws."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed

    from streamrec.hostile import event_payloads, mutate, valid_event

    rng = random.Random(seed)
    now = time.time()
    drawn: list = []

    @hypothesis_seed(seed)
    @settings(max_examples=max(1, min(2000, count // 10)), database=None, deadline=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(event_payloads())
    def draw(payload) -> None:
        drawn.append(payload)

    draw()
    out: list = []
    for n in range(count):
        kind = rng.random()
        if kind < 0.5:
            out.append(orjson.dumps(valid_event(n, rng, now=now)))
        elif kind < 0.6 and drawn:
            out.append(drawn[n % len(drawn)])
        else:
            event = valid_event(n, rng, now=now)
            event["event_id"] = f"h-{n}"
            raw = orjson.dumps(event)
            for _ in range(rng.randrange(1, 4)):
                raw = mutate(raw, rng)
            out.append(raw)
    return out


def fuzz_dataflow(payloads: int, seed: int = 0, progress: bool = True,
                  max_event_age: float = 7 * 86_400.0) -> FuzzSummary:
    """Send ``payloads`` valid and hostile payloads through the recommend flow; an exception
    in the flow propagates (it is a crash of the worker).

    The worker's flow with default settings (conflation on: a user's events ranked in
    one call share one list, and the observer notes the others as unranked), including
    the future-timestamp guard, plus
    ``STREAMREC_MAX_EVENT_AGE`` (``max_event_age``; 0 = off, the default setting): an event
    ~21 days (1,000 session half-lives) older than the user's latest event overflows the
    decay factor in ``models/compact.py`` and stops the worker, which ``max_event_age=0``
    shows."""
    import bytewax.operators as op
    from bytewax.dataflow import Dataflow
    from bytewax.testing import TestingSource, run_main

    from connectors.counting_sink import CountingSink
    from dataflows.recommend import wire
    from evaluation.observe import observer
    from operators.messages import Envelope
    from streamrec.settings import Settings

    summary = FuzzSummary()
    envelopes = [Envelope(p, time.time()) for p in _dataflow_payloads(payloads, seed)]
    started = time.monotonic()
    flow = Dataflow("fuzz")
    source = op.input("in", flow, TestingSource(envelopes, batch_size=500))
    settings = Settings(max_event_age=max_event_age)
    # The replays' observer notes every event that gets no list (a duplicate, an
    # erasure, one conflated into a later event of its user): every payload is answered.
    outputs, dead = wire(flow, source, None, settings, now=time.time, snapshots=False,
                         observe=observer(lambda _news: None, settings.rank_shards))
    counts: Counter = Counter()
    reasons: Counter = Counter()
    op.output("out", outputs, CountingSink(counts, progress_every=10_000 if progress else 0))
    op.output("dead", dead, CountingSink(reasons, by_reason=True))
    run_main(flow)
    summary.seconds = time.monotonic() - started
    summary.payloads = len(envelopes)
    summary.dead = reasons
    # Every valid event gets a list (RecUpdate) or an explicit "no list" (Unranked).
    summary.valid = counts["RecUpdate"] + counts["Unranked"]
    summary.extra = {"max_event_age": max_event_age, "answered": summary.valid, "outputs": dict(counts),
                     "accounted": summary.valid + sum(reasons.values()) == summary.payloads}
    return summary


def register(sub) -> None:
    p = sub.add_parser("fuzz", help="hostile payloads through the event parser or the whole worker flow")
    p.add_argument("--payloads", type=int,
                   help="how many (default 1,000,000; with --dataflow 100,000)")
    p.add_argument("--dataflow", action="store_true",
                   help="through the recommend dataflow (Bytewax run_main) instead of the parser alone")
    p.add_argument("--seed", type=int, default=0, help="same seed, same payloads (default 0)")
    p.add_argument("--max-event-age", type=float, default=7 * 86_400.0,
                   help="with --dataflow: STREAMREC_MAX_EVENT_AGE for the run (default 7 days; "
                        "0 = off, which lets weeks-old events reach the decay math)")
    p.add_argument("--crash-dir", default="fuzz-crashes",
                   help="where payloads that raised are saved (default ./fuzz-crashes)")
    p.add_argument("--json", help="also write the summary as JSON here")
    p.set_defaults(func=cmd_fuzz)


def cmd_fuzz(args) -> int:
    if args.dataflow:
        count = args.payloads or 100_000
        print(f"fuzz: {count:,} payloads (half valid, half hostile) through the recommend dataflow",
              file=sys.stderr)
        summary = fuzz_dataflow(count, args.seed, max_event_age=args.max_event_age)
        ok = summary.extra["accounted"]
    else:
        count = args.payloads or 1_000_000
        print(f"fuzz: {count:,} hostile payloads through the event parser and catalog parser",
              file=sys.stderr)
        summary = fuzz_parser(count, args.seed, Path(args.crash_dir))
        ok = summary.crashes == 0
        if not ok:
            print(f"crashing payloads saved in {args.crash_dir}/", file=sys.stderr)
    print(summary.text())
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(summary.as_dict(), option=orjson.OPT_INDENT_2))
    return 0 if ok else 1
