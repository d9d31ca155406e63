"""Settings travel whole: JSON of every field, and into each process of a replay."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from connectors.datasets import write_events_jsonl
from workloads.traffic import TrafficConfig, generate_events
from evaluation.replay import child_settings, eval_settings, read_recs, replay
from streamrec.errors import ConfigError
from streamrec.settings import SETTINGS_JSON_ENV, Settings

_TEXT = {"kafka_bootstrap_servers": "127.0.0.1:1", "redis_url": "redis://:s3cret@127.0.0.1:1/3",
         "repeat_policy": "demote", "log_format": "json", "metrics_host": "127.0.0.2",
         "user_id_key": "a-key-of-more-than-sixteen-characters", "source": "rabbitmq",
         "rabbitmq_url": "amqp://guest:s3cret@127.0.0.1:1/",
         "experiment": '{"name": "e", "variants": [{"name": "a", "share": 0.7}, '
                       '{"name": "b", "share": 0.3, "signals": ["trending"]}]}'}


def _every_field_changed() -> Settings:
    """Valid settings in which no field keeps its default."""
    base, changes = Settings(), {}
    for f in dataclasses.fields(Settings):
        value = getattr(base, f.name)
        if isinstance(value, bool):
            changes[f.name] = not value
        elif isinstance(value, int):
            changes[f.name] = value + 3
        elif isinstance(value, float):
            changes[f.name] = value * 0.9 + 0.02
        elif value is None:
            changes[f.name] = "/nowhere/catalog.jsonl"
        elif isinstance(value, str):
            changes[f.name] = _TEXT.get(f.name, value + "-x")
        elif isinstance(value, tuple) and value and all(isinstance(v, int) for v in value):
            changes[f.name] = tuple(v + 1 for v in value)
        elif isinstance(value, Mapping) and value:
            changes[f.name] = {k: v + 0.5 for k, v in value.items()}
        else:
            changes[f.name] = {"sasl.password": "s3cret", "security.protocol": "SASL_SSL"}
    changed = Settings(**changes)
    changed.validate()
    assert [f.name for f in dataclasses.fields(Settings) if getattr(changed, f.name) == getattr(base, f.name)] == []
    return changed


def test_json_round_trip_keeps_every_field():
    changed = _every_field_changed()
    assert Settings.from_json(changed.to_json()) == changed
    assert Settings.from_json(changed.to_json()).fingerprint() == changed.fingerprint() != Settings().fingerprint()
    assert "s3cret" not in changed.fingerprint()


def test_from_json_rejects_what_to_json_did_not_write():
    with pytest.raises(ConfigError, match="unknown settings colour"):
        Settings.from_json('{"colour": "red"}')
    with pytest.raises(ConfigError, match="not JSON"):
        Settings.from_json("top_k=3")
    with pytest.raises(ConfigError, match="REPEAT_POLICY"):
        Settings.from_json('{"repeat_policy": "sometimes"}')


def test_child_settings_prefer_the_parents_object():
    changed = _every_field_changed()
    assert child_settings({SETTINGS_JSON_ENV: changed.to_json(), "STREAMREC_TOP_K": "5"}) == changed


def test_every_field_reaches_both_processes_of_a_replay(tmp_path):
    cfg = TrafficConfig(n_users=20, n_items=100, n_categories=4, start_ts=1_732_680_000.0)
    events = [e for e in generate_events(cfg, 300) if e["type"] not in ("erase", "consent")]
    events_path = tmp_path / "events.jsonl"
    write_events_jsonl(events_path, events)
    changed = _every_field_changed()
    replay(events_path, tmp_path / "out", settings=changed, processes=2, progress=False)
    expected = eval_settings(changed).fingerprint()
    seen = sorted((tmp_path / "out").glob("settings-*.sha256"))
    assert [p.name for p in seen] == ["settings-0.sha256", "settings-1.sha256"]
    assert [p.read_text() for p in seen] == [expected, expected]
    records = read_recs(tmp_path / "out")
    assert records and {r["model_version"] for r in records} == {changed.model_version}
    assert max(len(r["items"]) for r in records) <= changed.top_k


def test_controls_and_new_item_settings_come_from_the_environment():
    s = Settings.from_env({"STREAMREC_CONTROLS_TOPIC": "shop-rules", "STREAMREC_CONSUME_CONTROLS": "0",
                           "STREAMREC_NEW_ITEM_SLOTS": "2", "STREAMREC_NEW_ITEM_WINDOW": "3600"})
    assert (s.controls_topic, s.consume_controls, s.new_item_slots, s.new_item_window) == (
        "shop-rules", False, 2, 3600.0)
    with pytest.raises(ConfigError, match="STREAMREC_NEW_ITEM_SLOTS"):
        Settings.from_env({"STREAMREC_NEW_ITEM_SLOTS": "-1"})


def test_gc_threshold_comes_from_the_environment_and_is_applied():
    import gc

    from streamrec.gc_tuning import tune_gc

    assert Settings.from_env({}).gc_threshold == (10_000, 10, 100)
    assert Settings.from_env({"STREAMREC_GC_THRESHOLD": "python"}).gc_threshold is None
    assert Settings.from_env({"STREAMREC_GC_THRESHOLD": "9000,5,2"}).gc_threshold == (9000, 5, 2)
    for bad in ("0,1,1", "1,2", "a,b,c"):
        with pytest.raises(ConfigError, match="STREAMREC_GC_THRESHOLD"):
            Settings.from_env({"STREAMREC_GC_THRESHOLD": bad})
    before = gc.get_threshold()
    try:
        gc.unfreeze()
        tune_gc(None)  # "python": nothing changes
        assert gc.get_threshold() == before and gc.get_freeze_count() == 0
        tune_gc((12_345, 20, 10))
        assert gc.get_threshold() == (12_345, 20, 10)
        assert gc.get_freeze_count() > 0  # what was alive left the collector's walks
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
