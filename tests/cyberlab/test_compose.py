"""The compose file cannot be run here (no registry), so what matters is checked by reading it."""

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_the_whole_stack_is_there(compose):
    assert set(compose["services"]) == {"postgres", "redis", "web", "worker", "beat"}


def test_redis_matches_the_seed_and_never_evicts_queues(compose):
    redis = compose["services"]["redis"]
    command = " ".join(redis["command"])
    assert redis["image"] == "redis:7-alpine"
    assert redis["container_name"] == "cyberlab_redis"
    assert "--appendonly yes" in command
    assert "--appendfsync everysec" in command
    assert "--maxmemory 512mb" in command
    assert "--maxmemory-policy volatile-lru" in command
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]


def test_postgres_is_16_with_a_pg_isready_healthcheck(compose):
    postgres = compose["services"]["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_app_services_wait_for_healthy_dependencies_and_use_service_names(compose):
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert "@postgres:5432/" in env["DATABASE_URL"]
    assert env["REDIS_URL"].startswith("redis://redis:6379/")
    for name in ("web", "worker", "beat"):
        service = compose["services"][name]
        assert service["depends_on"] == {
            "postgres": {"condition": "service_healthy"},
            "redis": {"condition": "service_healthy"},
        }
        assert ".env.example" in [item["path"] for item in service["env_file"]]
        assert "network_mode" not in service


def test_there_is_exactly_one_beat_and_the_web_port_is_local(compose):
    assert compose["services"]["beat"]["deploy"]["replicas"] == 1
    assert "beat" in compose["services"]["beat"]["command"]
    assert compose["services"]["web"]["ports"] == ["127.0.0.1:8000:8000"]


def test_every_variable_the_stack_sets_is_documented_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            assert f"`{line.split('=', 1)[0]}`" in readme
