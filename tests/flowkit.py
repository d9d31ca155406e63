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
    """(flow, outputs list, dead letters list) over ``payloads`` (dicts, bytes or sentinels).

    ``payloads`` may hold Envelopes of source ``"items"`` (catalog records) and
    ``"controls"`` (rule records) among the events: each goes to its own input of the
    flow, in its place in the stream (so a test can change the catalog or the rules
    between two events).
    """
    settings = settings or Settings(conflate=False)
    flow = Dataflow(flow_id)
    envs = [p if isinstance(p, (TestingSource.ABORT, TestingSource.EOF, Envelope))
            else Envelope(p, None) for p in payloads]
    src = op.input("in", flow, TestingSource(envs, batch_size=50))
    sources = {e.source for e in envs if isinstance(e, Envelope)}
    cat = controls = None
    if sources & {"items", "controls"}:
        split = op.branch("by_source", src, lambda e: e.source == "events")
        src = split.trues
        if "items" in sources:
            cat = op.filter("mixed_items", split.falses, lambda e: e.source == "items")
        if "controls" in sources:
            controls = op.filter("mixed_controls", split.falses, lambda e: e.source == "controls")
    if catalog is not None:
        listed = op.input("catalog", flow, TestingSource([Envelope(c, None, "items") for c in catalog]))
        cat = listed if cat is None else op.merge("catalogs", cat, listed)
    outputs, dead = wire(flow, src, cat, settings, snapshots=snapshots, controls=controls)
    out: list = []
    dl: list = []
    op.output("out", outputs, TestingSink(out))
    op.output("dead", dead, TestingSink(dl))
    return flow, out, dl
