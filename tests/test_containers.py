"""Static checks of the Dockerfile and compose.yaml, for machines without a container engine:
what the image copies exists and is complete, and the services are wired to each other and
configured only with variables the software reads (docs/containers.md)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import yaml

from streamrec.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
STREAMREC_SERVICES = ("worker-0", "worker-1", "gateway")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def test_dockerfile_copies_existing_paths_and_every_package():
    instructions = _instructions()
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("python:3.11")
    copied = []
    for word, args in instructions:
        if word == "COPY":
            *sources, _dest = [a for a in shlex.split(args) if not a.startswith("--")]
            copied += sources
    missing = [s for s in copied if not (ROOT / s).exists()]
    assert missing == [], f"the Dockerfile copies paths that do not exist: {missing}"
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    assert sorted(p for p in packages if f"{p}/" not in copied) == []
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert not ignored & {s.rstrip("/") for s in copied}


def test_dockerfile_installs_the_gateway_and_runs_the_worker_unprivileged():
    instructions = _instructions()
    runs = [args for word, args in instructions if word == "RUN"]
    assert any(re.search(r"pip install '?\.\[gateway\]'?", r) for r in runs)
    users = [args for word, args in instructions if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert ("EXPOSE", "8000") in instructions
    cmd = [args for word, args in instructions if word == "CMD"][-1]
    assert yaml.safe_load(cmd) == ["python", "-m", "bytewax.run", "dataflows.recommend"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["streamrec"] == "streamrec.cli:main"  # what the gateway service runs


def test_compose_services_images_and_dependencies(compose):
    services = compose["services"]
    assert set(services) == {"kafka", "topics", "redis", *STREAMREC_SERVICES}
    for name, service in services.items():
        assert service.get("image"), f"service {name} has no image"
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
    for name in STREAMREC_SERVICES:
        assert services[name]["build"] == "." and services[name]["image"] == "streamrec:local"
    assert services["gateway"]["ports"] == ["8000:8000"]


def test_compose_workers_form_one_cluster_over_every_partition(compose):
    services = compose["services"]
    workers = sorted(n for n in services if n.startswith("worker-"))
    addresses = None
    for index, name in enumerate(workers):
        command = services[name]["command"]
        assert command[:4] == ["python", "-m", "bytewax.run", "dataflows.recommend"]
        assert command[command.index("-i") + 1] == str(index)
        addresses = addresses or command[command.index("-a") + 1]
        assert command[command.index("-a") + 1] == addresses
    assert [a.split(":")[0] for a in addresses.split(";")] == workers
    script = " ".join(services["topics"]["command"])
    topics = dict(re.findall(r"(\S+?):(\d+)", script.split(" in ", 1)[1].split(";")[0]))
    env = services["worker-0"]["environment"]
    assert topics == {env["STREAMREC_EVENTS_TOPIC"]: str(len(workers)), env["STREAMREC_ITEMS_TOPIC"]: "1",
                      f"{env['STREAMREC_EVENTS_TOPIC']}.dlq": "1"}


def test_compose_environment_is_what_the_software_reads(compose):
    services = compose["services"]
    known = set(re.findall(r'"((?:STREAMREC|KAFKA|REDIS)_[A-Z_]+)"',
                           (ROOT / "streamrec" / "settings.py").read_text()
                           + (ROOT / "streamrec" / "settings_env.py").read_text()
                           + (ROOT / "gateway" / "config.py").read_text()))
    kafka_port = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"].rsplit(":", 1)[1]
    for name in STREAMREC_SERVICES:
        env = {k: str(v) for k, v in services[name]["environment"].items()}
        assert sorted(set(env) - known) == [], f"{name} sets variables nothing reads"
        settings = Settings.from_env(env)
        assert settings.brokers == [f"kafka:{kafka_port}"]
        assert settings.redis_url.startswith("redis://redis:6379/")
    gateway = services["gateway"]
    assert gateway["command"][:2] == ["streamrec", "serve"]
    command = gateway["command"]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert gateway["ports"][0].split(":")[1] == command[command.index("--port") + 1]
    assert "STREAMREC_GATEWAY_SECRET" in gateway["environment"]
