"""Valid and hostile payloads through the real recommend flow (Bytewax run_main): the
worker never crashes and every payload is accounted for, as a list or an explicit
"no list" decision for each valid event, or a dead letter. The long run is
``streamrec fuzz --dataflow --payloads 100000``."""

from __future__ import annotations

from streamrec.fuzz_cli import fuzz_dataflow


def test_five_thousand_hostile_and_valid_payloads_are_all_accounted_for():
    summary = fuzz_dataflow(5_000, seed=7, progress=False)
    dead = sum(summary.dead.values())
    assert summary.payloads == 5_000 and summary.crashes == 0
    assert summary.valid + dead == 5_000, summary.as_dict()
    assert summary.valid >= 2_000 and dead >= 1_500  # both halves really went through
    assert summary.extra["outputs"]["RecUpdate"] > 0
    assert {"payload:not_json", "event:not_object", "ts:out_of_range"} <= set(summary.dead)
