"""deploy/docker-compose.yml: tokenmill, Redis, Prometheus and Grafana wired to each
other by real service names, ports, settings and routes."""

from __future__ import annotations

import re
from urllib.parse import urlparse

import pytest
import yaml

from tests.deploy.files import DEPLOY, load_docs

COMPOSE = DEPLOY / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_the_four_services_are_there(compose):
    assert set(compose["services"]) >= {"tokenmill", "redis", "prometheus", "grafana"}
    assert compose["services"]["tokenmill"]["build"]["dockerfile"] == "deploy/Dockerfile"


def test_tokenmill_settings_are_declared_and_valid(compose, settings_by_env):
    env = compose["services"]["tokenmill"]["environment"]
    for name, value in env.items():
        assert name in settings_by_env, f"{name} is not a tokenmill setting"
        settings_by_env[name].coerce(str(value), name)


def test_redis_url_names_the_redis_service(compose):
    url = urlparse(compose["services"]["tokenmill"]["environment"]["TOKENMILL_REDIS_URL"])
    assert url.scheme == "redis" and url.hostname in compose["services"]


def test_port_mapping_reaches_the_configured_port(compose):
    service = compose["services"]["tokenmill"]
    port = str(service["environment"]["TOKENMILL_PORT"])
    assert any(p.split(":")[-1] == port for p in service["ports"])


def test_stop_grace_outlasts_the_drain(compose):
    service = compose["services"]["tokenmill"]
    stop = int(re.fullmatch(r"(\d+)s", service["stop_grace_period"]).group(1))
    assert stop > float(service["environment"]["TOKENMILL_SHUTDOWN_GRACE"]) + 5


def test_prometheus_scrapes_tokenmill(compose, get_routes):
    mounts = compose["services"]["prometheus"]["volumes"]
    source = next(m.split(":")[0] for m in mounts if m.split(":")[1].endswith("prometheus.yml"))
    (config,) = load_docs(COMPOSE.parent / source)
    (job,) = config["scrape_configs"]
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    assert host == "tokenmill"
    assert port == str(compose["services"]["tokenmill"]["environment"]["TOKENMILL_PORT"])
    assert job["metrics_path"] in get_routes


def test_grafana_reads_prometheus(compose):
    mounts = compose["services"]["grafana"]["volumes"]
    source = next(m.split(":")[0] for m in mounts if "datasources" in m)
    (config,) = load_docs(COMPOSE.parent / source)
    (source,) = config["datasources"]
    url = urlparse(source["url"])
    assert url.hostname == "prometheus" and url.port == 9090
