"""A rolling upgrade's pieces: the room it needs (one replica of each deployment), its canary, the surge
options every deployment gets, and the judge reading what clients saw in the proxies' access logs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cluster.settings import RaychatSettings, load_settings
from cluster.upgrade.access_log import AccessLogs, parse_nginx, parse_traefik
from cluster.upgrade.health import verdict
from cluster.upgrade.rolling import canary_settings
from cluster.upgrade.steps import needs
from deployments.config import LLMSettings, RolloutSettings
from deployments.llm import deployment_options


@pytest.fixture
def settings(tmp_path: Path, clean_settings_env: None) -> RaychatSettings:
    return load_settings(
        data_dir=tmp_path / "data",
        llm={"min_replicas": 3, "max_replicas": 4, "engine_bundle_resources": {"GPU": 1}},
        gateway={"num_replicas": 2},
    )


def test_rolling_needs_one_replica_of_each_where_blue_green_needs_a_whole_copy(
    settings: RaychatSettings,
) -> None:
    whole, one = needs(settings), needs(settings, one_each=True)
    assert whole["GPU"] == 3 and one["GPU"] == 1
    assert one["CPU"] < whole["CPU"]


def test_the_canary_is_one_replica_of_each(settings: RaychatSettings) -> None:
    canary = canary_settings(settings)
    assert (canary.llm.min_replicas, canary.llm.max_replicas, canary.llm.initial_replicas) == (1, 1, 1)
    assert canary.gateway.num_replicas == 1 and canary.knowledge.embedding_replicas == 1
    assert canary.llm.dtype == settings.llm.dtype and settings.llm.min_replicas == 3  # a copy


def test_every_replacement_starts_before_the_old_replica_stops() -> None:
    options = deployment_options(LLMSettings(), RolloutSettings())
    assert options["max_surge_percent"] == 1 and options["graceful_shutdown_timeout_s"] == 120
    assert deployment_options(LLMSettings(), RolloutSettings(max_surge_percent=0))["max_surge_percent"] == 0


NGINX = (
    '127.0.0.1 [2026-12-06T17:48:11+00:00] "POST /v1/chat/completions HTTP/1.1" 200 404 rt=1.160 '
    "urt=1.160 up=127.0.0.1:29001 trace=b req=f version={version}"
)


def traefik_line(path: str, status: int, seconds: float, version: str | None) -> str:
    entry = {"RequestPath": path, "DownstreamStatus": status, "Duration": int(seconds * 1e9)}
    if version:
        entry["downstream_X-Raychat-Version"] = version
    return json.dumps(entry)


def test_access_log_lines_parse_with_the_version_that_answered() -> None:
    assert parse_nginx(NGINX.format(version="v1")) == ("/v1/chat/completions", 200, 1.16, "v1")
    assert parse_nginx(NGINX.format(version="-"))[3] == ""
    assert parse_nginx("not a log line") is None
    assert parse_traefik(traefik_line("/v1/models", 503, 0.5, None)) == ("/v1/models", 503, 0.5, "")
    assert parse_traefik("{broken") is None


def test_the_judge_reads_from_its_mark_and_blames_unanswered_refusals_on_the_new_version(
    settings: RaychatSettings,
) -> None:
    logs_dir = settings.logs_dir
    logs_dir.mkdir(parents=True)
    nginx_log, traefik_log = logs_dir / "nginx-access.log", logs_dir / "traefik-access.log"
    nginx_log.write_text(NGINX.format(version="v0") + "\n")  # before the mark: not counted
    logs = AccessLogs(settings)
    with nginx_log.open("a") as log:
        for _ in range(20):
            log.write(NGINX.format(version="v1") + "\n")
        log.write(NGINX.format(version="v2") + "\n")
    with traefik_log.open("w") as log:
        log.write(traefik_line("/v1/chat/completions", 200, 2.0, "v2") + "\n")
        log.write(traefik_line("/v1/chat/completions", 502, 0.01, None) + "\n")  # no replica answered
        log.write(traefik_line("/healthz", 500, 0.01, None) + "\n")  # not an API request
    old, new = logs.old_and_new("v1", "v2")
    assert (old.requests, old.errors, old.generations) == (20, 0, 20)
    assert (new.requests, new.errors, new.generations) == (3, 1, 2)
    assert new.p95() is not None and 1.16 <= new.p95() <= 2.0
    reason = verdict(old, new, settings.upgrade)
    assert reason is not None and "1 of 3" in reason
    named = verdict(old, new, settings.upgrade, names=("the new version", "the old one"))
    assert named is not None and named.startswith("the new version answered 1 of 3")
    assert "the old one 0.0%" in named
