"""Shared helpers for dataflow tests: build the recommend flow over in-memory input."""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow
from bytewax.testing import TestingSink, TestingSource

from dataflows.recommend import wire
from operators.messages import Envelope
from streamrec.settings import Settings


def build_test_flow(payloads: list, settings: Settings | None = None, catalog: list | None = None,
                    flow_id: str = "test", snapshots: bool = True):
    """(flow, outputs list, dead letters list) over ``payloads`` (dicts, bytes or sentinels)."""
    settings = settings or Settings(conflate=False)
    flow = Dataflow(flow_id)
    envs = [p if isinstance(p, (TestingSource.ABORT, TestingSource.EOF)) else Envelope(p, None)
            for p in payloads]
    src = op.input("in", flow, TestingSource(envs, batch_size=50))
    cat = None
    if catalog is not None:
        cat = op.input("catalog", flow, TestingSource([Envelope(c, None, "items") for c in catalog]))
    outputs, dead = wire(flow, src, cat, settings, snapshots=snapshots)
    out: list = []
    dl: list = []
    op.output("out", outputs, TestingSink(out))
    op.output("dead", dead, TestingSink(dl))
    return flow, out, dl
