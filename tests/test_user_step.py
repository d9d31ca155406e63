"""The user step under conflation: only a batch's last event of a user asks questions and
gets a rank request, and the messages are those of scattering every event in full and
merging them (the readable reference below)."""

from __future__ import annotations

import random

import pytest

from models.events import validate_event
from models.profile import UserProfile
from operators.messages import ItemQuery, RankRequest
from operators.user_step import UserLogic, UserStepConfig, _conflate, scatter
from workloads.traffic import TrafficConfig, generate_events


def _reference(values: list, cfg: UserStepConfig) -> list:
    """Every event scattered with its questions and request, then merged (no consent or
    erasure events in these batches)."""
    profile = UserProfile(values[0][0].user_id)
    batches = []
    for event, ingested_at in values:
        prev = profile.session_items
        n = profile.session_n
        if profile.apply(event, cfg.profile, ingested_at) != "applied":
            continue
        if profile.session_n != n:
            prev = []
        batches.append(scatter(profile, event, prev, cfg, ingested_at))
    if len(batches) > 1:
        batches = [_conflate(batches)]
    return [m for msgs in batches for m in msgs]


def _users_events(seed: int) -> dict[str, list]:
    cfg = TrafficConfig(n_users=30, n_items=200, seed=seed, start_ts=1_700_000_000.0)
    by_user: dict[str, list] = {}
    for raw in generate_events(cfg, 1_500):
        if raw["type"] in ("consent", "erase") or raw.get("consent") is not None:
            continue
        event = validate_event(raw)
        by_user.setdefault(event.user_id, []).append((event, event.ts))
    return by_user


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_conflated_batch_sends_what_scattering_every_event_and_merging_sends(seed):
    cfg = UserStepConfig(conflate=True, write_profiles=False, attribution=False)
    rng = random.Random(seed)
    compared = asked = 0
    for values in _users_events(seed).values():
        size = rng.randint(1, len(values))
        batch = values[:size]
        out, _ = UserLogic(cfg, None).on_batch(batch)
        out = list(out)
        assert out == _reference(batch, cfg)
        requests = [m for m in out if isinstance(m, RankRequest)]
        assert len(requests) <= 1
        if requests:
            asked += 1
            # The request answers the batch's last applied event, and as many questions
            # ask for answers as it waits for.
            assert requests[0].event_id == batch[-1][0].event_id or len(batch) > 1
            anchors = [m for m in out if isinstance(m, ItemQuery) and m.anchor_weight > 0]
            assert requests[0].expected == len(anchors)
        compared += size
    assert compared > 100 and asked > 10
