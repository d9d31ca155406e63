"""Shared fixtures: one embedded broker and one embedded Redis for the whole session."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from connectors.embedded import EmbeddedKafka, EmbeddedRedis


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedKafka]:
    """A running tansu broker (memory storage) on a free port; `.bootstrap` to connect."""
    with EmbeddedKafka(log_dir=tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A running valkey-server on a free port; `.url` to connect."""
    with EmbeddedRedis(log_dir=tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A bytes-returning client on an emptied database."""
    client = redis.Redis.from_url(redis_server.url, decode_responses=False)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture
def unique_topic(request: pytest.FixtureRequest) -> str:
    """A topic name no other test uses (the broker lives for the whole session)."""
    # Kafka topic names allow [a-zA-Z0-9._-] up to 249 characters.
    test = "".join(c if c.isalnum() else "-" for c in request.node.name)[:60]
    return f"t-{test}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory):
    """A RabbitMQ node of the suite's own (Debian's rabbitmq-server, free ports, own data
    directory and epmd); `.url` to connect. Started once: it takes seconds."""
    from connectors.embedded_rabbitmq import EmbeddedRabbitMQ

    with EmbeddedRabbitMQ(log_dir=tmp_path_factory.mktemp("rabbitmq")) as node:
        yield node


@pytest.fixture(params=["run_main", "cluster_main-2"])
def entry_point(request):
    """Runs a flow one way or the other: in one worker, or in two of one process."""
    from bytewax.testing import cluster_main, run_main

    if request.param == "run_main":
        return lambda flow, **kw: run_main(flow, **kw)
    return lambda flow, **kw: cluster_main(flow, [], 0, worker_count_per_proc=2, **kw)
