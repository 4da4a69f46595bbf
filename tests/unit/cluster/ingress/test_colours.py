"""Nginx and Traefik configs for each colour state: the live app alone (on '/' or a prefixed slot), and
an upgrade's split, where the candidate's share is drawn per request and its refusals go to the live one."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cluster import tls
from cluster.ingress import nginx, routing, traefik
from cluster.ingress.routing import Colour, Routing
from cluster.settings import RaychatSettings, load_settings

BLUE = Colour(app="raychat", prefix="/", version="v1")
GREEN = Colour(app="raychat-2", prefix="/raychat-2", version="v2")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RaychatSettings:
    monkeypatch.chdir(tmp_path)
    return load_settings(data_dir=tmp_path / "data")


def nginx_accepts(settings: RaychatSettings, tmp_path: Path) -> str:
    tls.ensure(settings)
    prefix = tmp_path / "nginx"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    settings.logs_dir.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    text = nginx.render(settings, prefix)
    conf.write_text(text)
    argv = [str(nginx.binary()), "-t", "-p", str(prefix), "-c", str(conf), "-e", str(settings.logs_dir / "e")]
    check = subprocess.run(argv, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    return text


def test_without_a_record_the_first_slot_is_live(settings: RaychatSettings) -> None:
    colours = routing.load(settings)
    assert colours.live.app == "raychat" and colours.live.prefix == "/" and colours.candidate is None
    assert routing.other_slot(settings, "raychat") == "raychat-2"
    assert routing.other_slot(settings, "raychat-2") == "raychat"
    assert routing.prefix_of(settings, "raychat-2") == "/raychat-2"


def test_record_round_trip_and_clear(settings: RaychatSettings) -> None:
    routing.save(settings, Routing(live=BLUE, candidate=GREEN, candidate_weight=10))
    assert routing.load(settings) == Routing(live=BLUE, candidate=GREEN, candidate_weight=10)
    assert routing.live_app(settings) == "raychat"
    routing.clear(settings)
    assert routing.load(settings).candidate is None


def test_nginx_steady_on_the_first_slot_passes_the_uri_unchanged(
    settings: RaychatSettings, tmp_path: Path
) -> None:
    text = nginx_accepts(settings, tmp_path)
    assert "proxy_pass https://raychat_serve;" in text
    assert "split_clients" not in text and "__raychat/candidate" not in text
    assert "server 127.0.0.1:30000 " in text  # the replicas' own ports


def test_nginx_steady_on_the_second_slot_adds_its_prefix(settings: RaychatSettings, tmp_path: Path) -> None:
    routing.save(settings, Routing(live=GREEN))
    text = nginx_accepts(settings, tmp_path)
    assert "proxy_pass https://raychat_serve/raychat-2$request_uri;" in text
    assert "server 127.0.0.1:30000 " in text


def test_nginx_split_draws_the_candidate_share_and_retries_its_refusals_on_live(
    settings: RaychatSettings, tmp_path: Path
) -> None:
    routing.save(settings, Routing(live=BLUE, candidate=GREEN, candidate_weight=10))
    text = nginx_accepts(settings, tmp_path)
    assert 'split_clients "${request_id}" $raychat_colour' in text
    assert "10% candidate;" in text and "* live;" in text
    # Both colours through Serve's proxy (the replicas' ports would mix the two apps), by prefix.
    assert "server 127.0.0.1:30000" not in text and "server 127.0.0.1:8000 " in text
    candidate = text.split("location = /__raychat/candidate {")[1].split("location @live")[0]
    assert "internal;" in candidate
    assert "proxy_pass https://raychat_serve/raychat-2$request_uri;" in candidate
    assert "proxy_intercept_errors on;" in candidate and "error_page 502 503 504 = @live;" in candidate
    live = text.split("location @live {")[1]
    assert "proxy_pass https://raychat_serve$request_uri;" in live


def test_nginx_split_at_zero_and_at_hundred(settings: RaychatSettings, tmp_path: Path) -> None:
    routing.save(settings, Routing(live=BLUE, candidate=GREEN, candidate_weight=0))
    text = nginx_accepts(settings, tmp_path)
    assert "split_clients" not in text and "server 127.0.0.1:8000 " in text
    routing.save(settings, Routing(live=BLUE, candidate=GREEN, candidate_weight=100))
    text = nginx_accepts(settings, tmp_path)
    assert "* candidate;" in text and "* live;" not in text


def test_traefik_split_is_weighted_with_failover_to_live(settings: RaychatSettings) -> None:
    routing.save(settings, Routing(live=BLUE, candidate=GREEN, candidate_weight=50))
    services = traefik.dynamic_config(settings)["http"]["services"]
    assert services["raychat"]["weighted"]["services"] == [
        {"name": "raychat-live", "weight": 50},
        {"name": "raychat-candidate", "weight": 50},
    ]
    failover = services["raychat-candidate"]["failover"]
    assert failover["service"] == "raychat-candidate-servers" and failover["fallback"] == "raychat-live"
    assert failover["errors"]["status"] == ["502-504"]
    green = services["raychat-candidate-servers"]["loadBalancer"]["servers"]
    assert green == [{"url": "https://127.0.0.1:8000/raychat-2", "preservePath": True}]
    assert services["raychat-live"]["loadBalancer"]["servers"] == [{"url": "https://127.0.0.1:8000"}]


def test_traefik_steady_on_the_second_slot(settings: RaychatSettings) -> None:
    routing.save(settings, Routing(live=GREEN))
    services = traefik.dynamic_config(settings)["http"]["services"]
    replicas = services["raychat-replicas"]["loadBalancer"]
    assert replicas["servers"][0] == {"url": "https://127.0.0.1:30000/raychat-2", "preservePath": True}
    assert replicas["healthCheck"]["path"] == "/raychat-2/healthz"


def test_traefik_config_names_its_generation(settings: RaychatSettings) -> None:
    first = traefik.dynamic_config(settings)
    routing.save(settings, Routing(live=BLUE, candidate=GREEN, candidate_weight=10))
    second = traefik.dynamic_config(settings)
    assert traefik._generation(first) != traefik._generation(second)


def test_during_a_reindex_knowledge_base_writes_go_to_the_live_colour(
    settings: RaychatSettings, tmp_path: Path
) -> None:
    routing.save(settings, Routing(live=BLUE, candidate=GREEN, candidate_weight=50, writes_to_live=True))
    text = nginx_accepts(settings, tmp_path)
    writes = text.split(f"location ~ {routing.KB_WRITES} {{")[1].split("}")[0]
    assert "proxy_pass https://raychat_serve$request_uri;" in writes
    routers = traefik.dynamic_config(settings)["http"]["routers"]
    assert routers["raychat-kb-writes"]["service"] == "raychat-live"
    assert routers["raychat-uploads"]["service"] == "raychat-live"
    assert routers["raychat"]["service"] == "raychat"  # chats and searches: split by weight
    import re

    pattern = re.compile(routing.KB_WRITES)
    for path in ("/v1/knowledge_bases", "/v1/knowledge_bases/kb", "/v1/knowledge_bases/kb/documents/a.txt"):
        assert pattern.match(path)
    assert not pattern.match("/v1/knowledge_bases/kb/search")


def test_a_rolling_upgrade_goes_through_serves_proxy(settings: RaychatSettings, tmp_path: Path) -> None:
    """Its new Gateway replicas take ports beside the old ones: Serve's proxy knows which run."""
    routing.save(settings, Routing(live=BLUE, rolling=True))
    text = nginx_accepts(settings, tmp_path)
    assert "server 127.0.0.1:30000" not in text and "server 127.0.0.1:8000 " in text
    assert "split_clients" not in text
    services = traefik.dynamic_config(settings)["http"]["services"]
    assert services["raychat"]["loadBalancer"]["servers"] == [{"url": "https://127.0.0.1:8000"}]
    assert "healthCheck" not in services["raychat"]["loadBalancer"]
    routing.save(settings, Routing(live=BLUE))
    assert "server 127.0.0.1:30000 " in nginx_accepts(settings, tmp_path)
