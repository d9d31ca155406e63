"""The closed-loop simulator: its shoppers behave as documented, and a short run through
the real pipeline is attributed exactly by the pipeline itself."""

from __future__ import annotations

import numpy as np
import pytest

from streamrec.simulate_cli import ARMS, format_table, run_seed, summarise
from workloads.closed_loop import SimConfig, World


def test_shoppers_click_what_appeals_to_them_and_mostly_near_the_top():
    world = World(SimConfig(n_users=50, n_items=300, seed=2, leave_rate=0.0))
    positions, good, bad = [], 0, 0
    for u in range(50):
        order = np.argsort(-world.appeal(u, np.arange(300)))
        best, worst = [world.items[i] for i in order[:10]], [world.items[i] for i in order[-10:]]
        for step in range(40):
            got = world.react(u, best, "r", 0)
            good += got.clicked is not None
            if got.clicked:
                positions.append(got.position)
            bad += world.react(u, worst, "r", 0).clicked is not None
    assert good > 5 * max(bad, 1)  # appeal drives clicks
    counts = np.bincount(positions, minlength=11)[1:]
    assert counts[0] > counts[4] > counts[9]  # position bias
    # A click carries the list's id; carts and purchases follow it in the funnel.
    step = next(s for s in (world.react(u, best, "r9", 0) for _ in range(500)) if s.bought)
    kinds = [e["type"] for e in step.events]
    assert kinds == ["impression", "click", "add_to_cart", "purchase"]
    assert all(e.get("context", {}).get("rec_id") == "r9" for e in step.events)
    assert step.events[-1]["value"] == step.bought > 0


@pytest.mark.integration
def test_a_short_closed_loop_run_is_attributed_exactly_by_the_pipeline(tmp_path):
    run = run_seed(0, users=36, sessions=1, warm_events=400, work_dir=tmp_path)
    arms = run["arms"]
    assert run["rounds"] >= 2
    for arm in ARMS:
        assert arms[arm]["lists"] > 0 and arms[arm]["sessions"] > 0, arms
    for arm in ("personal", "popular"):
        # Every list a shopper saw and every click on it, as the pipeline counted them.
        assert arms[arm]["attributed_lists"] == arms[arm]["lists"], arms
        assert arms[arm]["attributed_clicks"] == arms[arm]["clicks"], arms
    assert arms["random"]["attributed_lists"] == 0  # shown by the simulator, not the pipeline
    summary = summarise([run, run])
    assert set(summary["arms"]) == set(ARMS) and "personal vs popular" in format_table(summary, 2)
