"""The planes benchmark without a stack: phase settings, ratios, the goal verdict, the report, the order."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest

from cluster import local, processes, redis_server, tls
from cluster.bench import planes
from cluster.bench.load import LevelResult
from cluster.settings import RaychatSettings, load_settings

LOCKS = ("tls.enabled", "tls.serve_mtls", "ray.token_auth", "ray.use_tls", "redis.local_tls")


def level(streams: int, tok_per_s: float, ttft_ms: list[float], errors: int = 0) -> LevelResult:
    return LevelResult(
        concurrency=streams,
        requests=len(ttft_ms) + errors,
        output_tokens=int(tok_per_s * 10),
        wall_s=10.0,
        ttft_s=[t / 1000 for t in ttft_ms],
        errors=errors,
    )


@pytest.fixture
def settings(tmp_path: Path) -> RaychatSettings:
    return load_settings(data_dir=tmp_path)


@pytest.mark.parametrize("on", [False, True])
def test_phase_settings_set_all_four_planes_and_pin_the_engine(settings: RaychatSettings, on: bool) -> None:
    phase = planes.phase_settings(settings, on)
    assert planes.switches(phase) == dict.fromkeys(LOCKS, on)
    assert (phase.llm.dtype, phase.llm.enforce_eager) == ("bfloat16", False)
    assert (phase.llm.min_replicas, phase.llm.max_replicas) == (1, 1)
    assert phase.data_dir == settings.data_dir and phase.ingress == settings.ingress
    assert settings.ray.token_auth and settings.tls.enabled  # the caller's settings are not changed


def test_clients_use_plain_http_off_and_verified_https_on(settings: RaychatSettings) -> None:
    ing = settings.ingress
    assert planes.phase_url(settings, False) == f"http://{ing.host}:{ing.nginx_port}"
    assert planes.phase_url(settings, True) == f"https://{ing.host}:{ing.nginx_https_port}"
    assert planes.client_verify(settings, False) is True
    tls.ensure(settings)  # raychat's private CA in <data_dir>/tls/ca.crt
    context = planes.client_verify(settings, True)
    assert isinstance(context, ssl.SSLContext) and context.verify_mode == ssl.CERT_REQUIRED
    assert context.get_ca_certs()


def test_cycles_merge_into_one_result_per_phase_and_level() -> None:
    runs = [
        {"phase": "off", "cycle": 1, "levels": [level(8, 100, [10, 20]), level(32, 300, [40])]},
        {"phase": "on", "cycle": 1, "levels": [level(8, 90, [12]), level(32, 290, [44])]},
        {"phase": "off", "cycle": 2, "levels": [level(8, 110, [30]), level(32, 310, [50])]},
        {"phase": "on", "cycle": 2, "levels": [level(8, 100, [14]), level(32, 300, [46])]},
    ]
    summary = planes.summarize(runs, [8, 32])
    off8 = summary["off"][0]
    assert [r.concurrency for r in summary["on"]] == [8, 32]
    assert (off8.requests, off8.wall_s, sorted(off8.ttft_s)) == (3, 20.0, [0.01, 0.02, 0.03])
    assert off8.tok_per_s == pytest.approx(105)
    assert planes.ratios(summary)[32]["tok_per_s"] == pytest.approx(295 / 305)


def test_ratios_are_on_over_off_and_the_goal_is_five_percent_at_32_streams() -> None:
    summary = {
        "off": [level(8, 200, [100, 200]), level(32, 400, [300, 600])],
        "on": [level(8, 180, [110, 220]), level(32, 384, [330, 660])],
    }
    by_level = planes.ratios(summary)
    assert by_level[8] == pytest.approx({"tok_per_s": 0.9, "ttft_p50": 1.1, "ttft_p95": 1.1})
    assert by_level[32]["tok_per_s"] == pytest.approx(0.96)
    assert planes.goal_met(by_level) is True  # 10% lost at 8 streams does not count
    summary["on"][1] = level(32, 376, [330])
    assert planes.goal_met(planes.ratios(summary)) is False
    assert planes.goal_met(planes.ratios({"off": summary["off"][:1], "on": summary["on"][:1]})) is None
    assert planes.goal_met(planes.ratios({"off": [level(32, 0, [])], "on": [level(32, 10, [])]})) is None


def meta(settings: RaychatSettings, levels: list[int]) -> dict[str, object]:
    return {
        "date": "2026-01-02 03:04",
        "cpus": 16,
        "model": "smollm2-135m-instruct",
        "dtype": "bfloat16",
        "max_tokens": 128,
        "duration_s": 30.0,
        "warmup_s": 5.0,
        "levels": levels,
        "cycles": 1,
        "phases": {
            name: {
                "switches": planes.switches(planes.phase_settings(settings, on)),
                "url": planes.phase_url(settings, on),
                "redis_tls": on,
            }
            for name, on in planes.PHASES
        },
    }


def test_markdown_table_has_both_phases_per_level_the_ratios_and_the_verdict(
    settings: RaychatSettings,
) -> None:
    summary = {
        "off": [level(8, 200, [100, 200]), level(32, 400, [300, 600], errors=1)],
        "on": [level(8, 180, [110, 220]), level(32, 360, [330, 660])],
    }
    runs = [{"phase": name, "cycle": 1, "levels": rs} for name, rs in summary.items()]
    text = planes.render_markdown(meta(settings, [8, 32]), summary, runs)
    assert "| 8 | off | 2 | 200.0 | 100 | 200 | 0 |  |  |  |" in text
    assert "| 8 | on | 2 | 180.0 | 110 | 220 | 0 | 0.900x | 1.100x | 1.100x |" in text
    assert "| 32 | off | 3 | 400.0 | 300 | 600 | 1 |" in text
    assert "| 32 | on | 2 | 360.0 | 330 | 660 | 0 | 0.900x | 1.100x | 1.100x |" in text
    assert "Goal: at most 5% of the output throughput lost at 32 streams: missed (10.0% lost)." in text
    assert "- off: `tls.enabled: false`, `tls.serve_mtls: false`, `ray.token_auth: false`" in text
    assert "`ray.use_tls: true`, `redis.local_tls: true`; clients on https://" in text
    assert "16 CPUs" in text and "2026-01-02 03:04" in text
    assert "| 2 | on | 32 | 360.0 | 330 | 0 |" in text  # each phase run, in order
    short = planes.render_markdown(meta(settings, [8]), {k: v[:1] for k, v in summary.items()}, [])
    assert "lost at 32 streams: not measured" in short


@pytest.mark.parametrize("was_running", [True, False])
def test_phases_alternate_and_the_stack_ends_as_configured(
    settings: RaychatSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, was_running: bool
) -> None:
    calls: list[str] = []

    def restart(phase: RaychatSettings) -> str:
        calls.append("configured" if phase == settings else "on" if phase.ray.use_tls else "off")
        return "http://svc"

    def run_phase(name: str, phase: RaychatSettings, on: bool, args: object) -> list[LevelResult]:
        assert planes.switches(phase) == dict.fromkeys(LOCKS, on) and name == ("on" if on else "off")
        return [level(8, 190 if on else 200, [100]), level(32, 390 if on else 400, [300])]

    monkeypatch.setattr(processes, "is_running", lambda run_dir, name: was_running)
    monkeypatch.setattr(planes, "restart", restart)
    monkeypatch.setattr(planes, "run_phase", run_phase)
    monkeypatch.setattr(local, "down", lambda s: calls.append("down"))
    monkeypatch.setattr(redis_server, "uses_tls", lambda s: s.redis.local_tls)
    out = tmp_path / "results"
    assert planes.main(["--cycles", "2", "--out", str(out)], settings) == 0
    expected = ["off", "on", "off", "on"] + (["configured"] if was_running else ["down"])
    assert calls == expected
    assert {p.name for p in out.iterdir()} == {"planes.md", "planes.json", "planes.png"}
    results = json.loads((out / "planes.json").read_text())
    assert results["goal_met"] is True and [r["phase"] for r in results["runs"]] == ["off", "on"] * 2
    assert results["meta"]["phases"]["on"]["switches"] == dict.fromkeys(LOCKS, True)
