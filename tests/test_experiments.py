"""Experiments and attribution: variant assignment, propensities in the output, and
impressions and clicks counted per variant through the real pipeline (embedded broker,
Redis and a worker), read back from Redis and from the worker's metrics endpoint."""

from __future__ import annotations

import time
import uuid

import numpy as np
import orjson
import pytest

from connectors.embedded import ensure_topics
from connectors.worker import WorkerGroup
from models.attribution import Attribution
from models.experiments import DEFAULT, InvalidExperiment, parse_experiment
from models.offpolicy import estimate, parse_policy, samples_from_outcomes
from models.ranking import FEATURES
from operators.metrics_step import summarise
from tests.livekit import produce, wait_for, worker_env
from tests.test_ops_endpoint import by_label, scrape

EXPERIMENT = {"name": "lift", "variants": [
    {"name": "learned", "share": 0.5},
    {"name": "popular", "share": 0.5, "signals": ["trending", "category"]}]}


def test_assignment_is_stable_and_follows_the_shares():
    exp = parse_experiment({"name": "e", "variants": [
        {"name": "a", "share": 7}, {"name": "b", "share": 2}, {"name": "c", "share": 1},
        {"name": "off", "share": 0}]})
    users = [f"user-{i}" for i in range(20_000)]
    got = [exp.assign(u) for u in users]
    assert got == [exp.assign(u) for u in users]  # the same user, the same variant
    counts = np.bincount([v for v, _ in got], minlength=4) / len(users)
    assert counts == pytest.approx([0.7, 0.2, 0.1, 0.0], abs=0.015)
    assert {p for _, p in got} == {0.7, 0.2, 0.1}
    assert all(p == exp.propensities[v] for v, p in got)
    # Another experiment name reshuffles users (independent experiments).
    other = parse_experiment({"name": "e2", "variants": [{"name": "a", "share": 7},
                                                         {"name": "b", "share": 3}]})
    same = np.mean([exp.assign(u)[0] == other.assign(u)[0] for u in users[:5000]])
    assert 0.5 < same < 0.65  # 0.7*0.7 + 0.2*0.3 ~ 0.55 when independent


def test_variant_weight_rows_mask_or_replace_the_learned_blend():
    exp = parse_experiment({"name": "e", "variants": [
        {"name": "learned"}, {"name": "pop", "signals": ["trending"]},
        {"name": "fixed", "weights": {"covis": 2.0, "session": 0.5}}]})
    learned = np.arange(1, 1 + 3 * len(FEATURES), dtype=float).reshape(3, len(FEATURES))
    rows = exp.weight_rows(learned)
    assert rows.shape == (9, len(FEATURES))
    assert (rows[:3] == learned).all()
    t = FEATURES.index("trending")
    assert (rows[3:6, t] == learned[:, t]).all() and np.count_nonzero(rows[3:6]) == 3
    fixed = np.zeros(len(FEATURES))
    fixed[FEATURES.index("covis")], fixed[FEATURES.index("session")] = 2.0, 0.5
    assert (rows[6:9] == fixed).all()
    assert parse_experiment("") is DEFAULT and DEFAULT.assign("x") == (0, 1.0)


@pytest.mark.parametrize("raw, says", [
    ("{", "not JSON"),
    ({"name": "e"}, "'variants'"),
    ({"name": "e", "variants": [{"name": "a", "share": 0}]}, "share above 0"),
    ({"name": "e", "variants": [{"name": "a"}, {"name": "a"}]}, "must differ"),
    ({"name": "e", "variants": [{"name": "a", "signals": ["magic"]}]}, "unknown feature"),
    ({"name": "e", "variants": [{"name": "a", "signals": ["mf"], "weights": {"mf": 1}}]}, "not both"),
    ({"name": "e", "variants": [{"name": "a", "share": -1}]}, "share must be"),
    ({"name": "a|b", "variants": [{"name": "a"}]}, "without '|'"),
    ({"name": "e", "variants": [{"name": "a", "colour": 1}]}, "unknown key"),
])
def test_invalid_experiments_say_what_to_fix(raw, says):
    with pytest.raises(InvalidExperiment, match=says.replace("|", r"\|").replace("(", r"\(")):
        parse_experiment(raw)


def test_attribution_counts_only_own_lists_once_and_within_the_window():
    a = Attribution(window=600.0)
    a.listed("r1", "u1", 0.0, ("p1", "p2", "p3"), "learned", 0.5, "covis", "f-20")
    a.listed("r2", "u2", 0.0, ("p1", "p9"), "popular", 0.5, "trending", None)
    assert a.impression("u2", "r1", ["p1"], 1.0) == []  # another user's list
    assert a.action("u2", "click", "p1", "r1", 1.0, None) == []
    assert [o.kind for o in a.impression("u1", "r1", ["p1", "p2"], 1.0)] == ["impression"]
    assert a.impression("u1", "r1", ["p3"], 2.0) == []  # the same list, more of it on screen
    (click,) = a.action("u1", "click", "p3", "r1", 3.0, None)
    assert (click.kind, click.position, click.segment, click.propensity) == ("click", 3, "f-20", 0.5)
    assert a.action("u1", "click", "p3", "r1", 4.0, None) == []  # one click per list and item
    assert a.action("u1", "click", "p7", "r1", 4.0, None) == []  # not in the list
    (buy,) = a.action("u1", "purchase", "p2", None, 300.0, 19.5)  # no rec_id: the list seen
    assert (buy.rec_id, buy.value, buy.position) == ("r1", 19.5, 2)
    assert a.action("u1", "purchase", "p2", None, 700.0, 19.5) == []  # past the window
    # A click without an impression: the click proves the list was seen.
    kinds = [o.kind for o in a.action("u2", "click", "p9", "r2", 5.0, None)]
    assert kinds == ["impression", "click"]
    a.forget("u1")
    assert "u1" not in a.seen and all(s.user != "u1" for s in a.lists.values())
    assert a.action("u1", "purchase", "p2", "r1", 301.0, 5.0) == []


def test_a_seen_list_earns_its_sale_for_the_whole_window_however_many_lists_follow():
    """Written lists wait for their impression in a small table; once seen, a list stays
    with its user for the attribution window even when thousands of lists follow."""
    a = Attribution(window=3600.0, max_lists=100)
    a.listed("mine", "u1", 0.0, ("p1", "p2"), "learned", 0.5, "covis", None)
    assert a.impression("u1", "mine", None, 1.0)
    for n in range(5000):  # other users' lists push it out of the written-lists table
        a.listed(f"r{n}", f"other{n}", 2.0, ("p1",), "learned", 0.5, "covis", None)
    assert "mine" not in a.lists and len(a.lists) == 100
    (click,) = a.action("u1", "click", "p2", "mine", 10.0, None)
    (buy,) = a.action("u1", "purchase", "p2", None, 3000.0, 42.0)
    assert (click.rec_id, buy.rec_id, buy.value) == ("mine", "mine", 42.0)
    assert a.fatigue("u1", 3000.0) == {"p1": 1}
    assert a.impression("u1", "r7", None, 11.0) == []  # an evicted unseen list: unknown


def test_items_seen_and_not_clicked_sink_in_the_next_list():
    """Exposure is evidence: the items of a list the user saw twice without clicking
    fall (a factor per list), the rest keep their order; without impressions nothing moves."""
    import dataclasses
    import random

    from models.batch_ranking import ItemCodes, RankModels, rank_batch
    from models.ranking import RankConfig
    from tests.test_batch_ranking import T0, _request, _world

    rng = random.Random(4)
    items, category, trending, vectors, mf, unavailable = _world(rng)
    inp = _request(rng, items, vectors, T0)
    models = RankModels(trending, category, unavailable, vectors, None, ItemCodes(5000))
    cfg = RankConfig(k=10, diversity=0.0, new_item_slots=0, fatigue=0.5)
    before = [i for i, _ in rank_batch([inp], models, cfg)[0].items]
    tired = dataclasses.replace(inp, fatigue={before[0]: 2, before[1]: 2, "unknown-item": 5})
    after = [i for i, _ in rank_batch([inp, tired], models, cfg)[1].items]
    assert after != before and after.index(before[2]) < 2  # the third came up
    assert [i for i in after if i in before[2:]] == [i for i in before[2:] if i in after]
    assert [i for i, _ in rank_batch([inp], models, dataclasses.replace(cfg, fatigue=1.0))[0].items] == before


def test_summary_rows_roll_up_per_variant():
    rows = summarise({"": 10.0, "a|covis|-": [4, 1, 0, 1, 10.0], "a|trending|f": [6, 2, 1, 0, 0.0],
                      "b|covis|-": [5, 0, 0, 0, 0.0]})
    assert rows["a|*|*"] == {"impressions": 10, "clicks": 3, "carts": 1, "purchases": 1,
                             "revenue": 10.0, "ctr": 0.3, "conversion": 0.1}
    assert rows["b|*|*"]["ctr"] == 0.0 and "" not in rows


def _simulated_log(n: int, shares: dict, ctr: dict, seed: int) -> list[dict]:
    """Outcome rows of ``n`` seen lists: variant by ``shares``, clicked with ``ctr``."""
    rng = np.random.default_rng(seed)
    names = list(shares)
    picks = rng.choice(len(names), size=n, p=[shares[v] for v in names])
    rows = []
    for i, k in enumerate(picks.tolist()):
        v = names[k]
        rows.append({"kind": "impression", "rec_id": f"r{i}", "variant": v, "propensity": shares[v]})
        if rng.random() < ctr[v]:
            rows.append({"kind": "click", "rec_id": f"r{i}", "variant": v, "propensity": shares[v]})
    return rows


@pytest.mark.parametrize("target, truth", [("b", 0.12), ("a", 0.05), ("a=0.5,b=0.5", 0.085)])
def test_off_policy_estimates_recover_a_known_policy(target, truth):
    """Logged with 80% a / 20% b; the estimates of another policy's CTR centre on the
    truth and their 95% intervals hold it about 95% of the time (20 logs)."""
    held = {"ips": 0, "snips": 0}
    means = []
    for seed in range(20):
        rows = _simulated_log(10_000, {"a": 0.8, "b": 0.2}, {"a": 0.05, "b": 0.12}, seed=seed)
        samples = samples_from_outcomes(rows)
        assert len(samples) == 10_000
        est = estimate(samples, parse_policy(target), resamples=400, seed=seed)
        for name in held:
            lo, hi = est[f"{name}_ci"]
            held[name] += lo <= truth <= hi
            assert hi - lo < 0.04  # informative
        means.append(est["snips"])
    assert min(held.values()) >= 16, held
    assert np.mean(means) == pytest.approx(truth, abs=0.004)


def test_off_policy_command_reads_a_log_and_says_what_it_cannot_estimate(tmp_path, capsys):
    from streamrec.cli import main

    rows = _simulated_log(4_000, {"a": 0.5, "b": 0.5}, {"a": 0.02, "b": 0.2}, seed=9)
    log = tmp_path / "outcomes.jsonl"
    log.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    assert main(["eval", "--ope", "b", "--outcomes", str(log), "--json", str(tmp_path / "o.json")]) == 0
    out = capsys.readouterr().out
    assert "4,000 seen lists" in out and "SNIPS" in out
    est = orjson.loads((tmp_path / "o.json").read_bytes())
    assert est == estimate(samples_from_outcomes(rows), {"b": 1.0})
    assert est["ips"] == pytest.approx(0.2, abs=0.03)
    assert main(["eval", "--ope", "b=0.5,c=0.5", "--outcomes", str(log)]) == 0
    assert "not in the log" in capsys.readouterr().err
    assert main(["eval", "--ope", "b=lots", "--outcomes", str(log)]) == 2
    assert "variant=share" in capsys.readouterr().err


@pytest.mark.integration
def test_impressions_and_clicks_reach_redis_and_metrics_per_variant(
        kafka, redis_server, redis_client, unique_topic, tmp_path):
    topic, prefix = unique_topic, f"ex{uuid.uuid4().hex[:6]}"
    ensure_topics(kafka.bootstrap, {topic: 2, f"{topic}-items": 1, f"{topic}.dlq": 1})
    exp = parse_experiment(EXPERIMENT)
    hour = (int(time.time()) // 3600 - 3) * 3600  # a closed hour, three hours ago
    t0 = hour + 60.0
    users = [f"shopper{i}" for i in range(24)]
    views = [{"event_id": f"v{i}-{u}", "ts": t0 + i, "user_id": u, "type": "view",
              "item_id": f"p{(j * 5 + i) % 30}", "category": f"c{(j + i) % 3}"}
             for j, u in enumerate(users) for i in range(3)]
    env = worker_env(kafka.bootstrap, redis_server.url, topic, prefix,
                     STREAMREC_EXPERIMENT=orjson.dumps(EXPERIMENT).decode(),
                     STREAMREC_METRICS_LATENESS="5")
    group = WorkerGroup(env, log_dir=tmp_path / "logs").start()
    (url,) = group.metrics_urls
    try:
        produce(kafka.bootstrap, topic, views)
        last = {u: f"v2-{u}" for u in users}

        def lists() -> dict:
            raws = redis_client.mget([f"{prefix}:latest:{u}" for u in users])
            got = {u: orjson.loads(r) for u, r in zip(users, raws) if r is not None}
            return got if all(got.get(u, {}).get("trigger_event_id") == last[u] for u in users) else {}

        wait_for(lambda: bool(lists()), group, timeout=90, what="every shopper's list")
        shown = lists()
        for u, rec in shown.items():
            v, p = exp.assign(u)
            assert (rec["variant"], rec["propensity"]) == (exp.variants[v].name, p) and p == 0.5
            assert len(rec["rec_id"]) == 16 and rec["items"]
        # The stream entries carry the same ids, variants and propensities.
        entries = {f[b"rec_id"].decode(): f for _, f in redis_client.xrange(f"{prefix}:recs")}
        for rec in shown.values():
            fields = entries[rec["rec_id"]]
            assert fields[b"variant"].decode() == rec["variant"] and float(fields[b"propensity"]) == 0.5

        # Every shopper sees their list; every third clicks its second item, twice (one
        # click counts); a forged impression of another shopper's list counts nothing.
        feedback, clicked = [], {"learned": 0, "popular": 0}
        for j, u in enumerate(users):
            rec = shown[u]
            items = [i["item_id"] for i in rec["items"]]
            feedback.append({"event_id": f"imp-{u}", "ts": t0 + 10, "user_id": u, "type": "impression",
                             "context": {"rec_id": rec["rec_id"], "items": items[:4]}})
            if j % 3 == 0 and len(items) > 1:
                clicked[rec["variant"]] += 1
                for n in range(2):
                    feedback.append({"event_id": f"clk{n}-{u}", "ts": t0 + 11 + n, "user_id": u,
                                     "type": "click", "item_id": items[1],
                                     "context": {"rec_id": rec["rec_id"]}})
        feedback.append({"event_id": "forged", "ts": t0 + 12, "user_id": users[1], "type": "impression",
                         "context": {"rec_id": shown[users[0]]["rec_id"], "items": []}})
        produce(kafka.bootstrap, topic, feedback)
        seen = {"learned": 0, "popular": 0}
        for rec in shown.values():
            seen[rec["variant"]] += 1
        assert min(seen.values()) > 0 and min(clicked.values()) > 0  # both variants in play

        # Prometheus counters, live.
        def counted() -> bool:
            samples = scrape(url).get("streamrec_attributed_total", [])
            got = {(lab["kind"], lab["variant"]): 0.0 for lab, _ in samples}
            for lab, value in samples:
                got[(lab["kind"], lab["variant"])] += value
            return all(got.get(("impression", v), 0) == seen[v] and got.get(("click", v), 0) == clicked[v]
                       for v in seen)

        wait_for(counted, group, timeout=60, what="attributed impressions and clicks on /metrics")

        # A shopper an hour later closes the windows (event time past their end).
        closer = "late-shopper"
        produce(kafka.bootstrap, topic, [{"event_id": "late-v", "ts": hour + 3700.0, "user_id": closer,
                                          "type": "view", "item_id": "p1", "category": "c1"}])
        wait_for(lambda: redis_client.get(f"{prefix}:latest:{closer}") is not None, group,
                 timeout=60, what="the late shopper's list")
        late = orjson.loads(redis_client.get(f"{prefix}:latest:{closer}"))
        produce(kafka.bootstrap, topic, [{"event_id": "late-i", "ts": hour + 3710.0, "user_id": closer,
                                          "type": "impression", "context": {"rec_id": late["rec_id"]}}])
        keys = {w: f"{prefix}:metrics:{w}:{hour}" for w in ("5m", "1h")}
        wait_for(lambda: all(redis_client.exists(k) for k in keys.values()), group, timeout=60,
                 what="the closed metrics windows in Redis")
        for window, key in keys.items():
            rows = {k.decode(): orjson.loads(v) for k, v in redis_client.hgetall(key).items()}
            for variant in ("learned", "popular"):
                row = rows[f"{variant}|*|*"]
                assert (row["impressions"], row["clicks"]) == (seen[variant], clicked[variant]), window
                assert row["ctr"] == pytest.approx(clicked[variant] / seen[variant], abs=1e-6)
            assert sum(r["impressions"] for k, r in rows.items() if not k.endswith("|*|*")) == len(users)
        assert redis_client.ttl(keys["5m"]) > 0
        # Every outcome is also on the outcomes stream (no user ids), for off-policy evaluation.
        rows = [{k.decode(): v.decode() for k, v in f.items()}
                for _, f in redis_client.xrange(f"{prefix}:outcomes")]
        assert not any(u in str(rows) for u in users)
        samples = samples_from_outcomes(rows)
        assert len(samples) == len(users) + 1
        assert sum(r for _, _, r in samples) == sum(clicked.values())
        assert {p for _, p, _ in samples} == {0.5}
    finally:
        group.stop()
