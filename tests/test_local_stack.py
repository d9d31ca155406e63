"""The local stack: `streamrec demo` end to end on its own services, and a stack on given
services stops what it started and nothing else."""

from __future__ import annotations

import io

import pytest
import redis

from connectors.local_stack import LocalStack, StackOptions
from streamrec.demo import DemoOptions, run_demo

pytestmark = pytest.mark.integration


def test_demo_runs_the_whole_pipeline_and_stops_it(tmp_path):
    out = io.StringIO()
    summary = run_demo(DemoOptions(count=400, rate=2000.0, users=60, items=150, keep_dir=str(tmp_path),
                                   sample_every=3600.0), out=out)
    text = out.getvalue()
    assert summary["events_in"] == 400
    assert summary["recs_out"] > 0 and summary["users_with_latest"] > 0
    assert summary["dlq"] >= 2  # the broken events sent on purpose
    assert "storefront: http://127.0.0.1:" in text and "summary" in text
    assert (tmp_path / "worker-0.log").is_file()


def test_stack_on_given_services_leaves_them_running(kafka, redis_server, tmp_path):
    options = StackOptions(events_topic="stack-events", items_topic="stack-items", prefix="stack",
                           start_timeout=60.0)
    with LocalStack(tmp_path, options, bootstrap=kafka.bootstrap, redis_url=redis_server.url) as stack:
        stack.start_services()
        assert stack.env["STREAMREC_PREFIX"] == "stack" and stack.env["REDIS_URL"] == redis_server.url
        assert stack.start_workers() > 0
        assert stack.send_events([{"event_id": "e-1", "ts": 1_732_680_000.0, "user_id": "u1",
                                   "type": "view", "item_id": "p1"}]) == 1
        workers = stack.workers
    assert workers.procs == [] and stack.workers is None
    client = redis.Redis.from_url(redis_server.url)
    assert client.ping()
    client.close()


def test_services_only_stack_creates_no_topics(kafka, redis_server, tmp_path):
    from confluent_kafka.admin import AdminClient

    options = StackOptions(events_topic="never-created", processes=0)
    with LocalStack(tmp_path, options, bootstrap=kafka.bootstrap, redis_url=redis_server.url) as stack:
        stack.start_services()
        assert stack.redis.ping()
    topics = AdminClient({"bootstrap.servers": kafka.bootstrap}).list_topics(timeout=10).topics
    assert "never-created" not in topics
