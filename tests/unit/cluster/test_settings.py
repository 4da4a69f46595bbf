from __future__ import annotations

from pathlib import Path

import pytest

from cluster.settings import PROFILES, SettingsError, load_settings

pytestmark = pytest.mark.usefixtures("clean_settings_env")


def test_defaults_run_on_this_machine() -> None:
    s = load_settings()
    assert s.profile == "cpu"
    assert s.llm.accelerator == "cpu"
    assert (s.llm.min_replicas, s.llm.max_replicas) == (1, 2)
    assert s.ray.host == "127.0.0.1" and s.serve.host == "127.0.0.1" and s.ingress.host == "127.0.0.1"
    assert s.public_url() == "http://127.0.0.1:8080"
    assert s.data_dir.is_absolute()


def test_gpu_profile_is_the_production_shape() -> None:
    s = load_settings(profile="gpu")
    assert s.llm.accelerator == "gpu"
    assert (s.llm.min_replicas, s.llm.max_replicas) == (2, 4)
    assert s.llm.dtype == "bfloat16"
    assert s.llm.max_num_seqs is None  # vLLM's own default


@pytest.mark.parametrize(("tier", "replicas"), [("tier1", (1, 1)), ("tier2", (2, 2)), ("tier3", (2, 4))])
def test_seed_tiers_map_to_gpu_counts(tier: str, replicas: tuple[int, int]) -> None:
    s = load_settings(profile=tier)
    assert s.llm.accelerator == "gpu"
    assert (s.llm.min_replicas, s.llm.max_replicas) == replicas


def test_every_profile_loads() -> None:
    for name in PROFILES:
        assert load_settings(profile=name).profile == name


def test_env_overrides_yaml_which_overrides_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "site.yaml"
    cfg.write_text("profile: gpu\nllm:\n  max_replicas: 3\n  model_id: site-model\n")
    s = load_settings(cfg)
    assert (s.llm.min_replicas, s.llm.max_replicas, s.llm.model_id) == (2, 3, "site-model")
    monkeypatch.setenv("RAYCHAT_LLM__MAX_REPLICAS", "4")
    assert load_settings(cfg).llm.max_replicas == 4


def test_config_path_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "other.yaml"
    cfg.write_text("serve:\n  port: 9001\n")
    monkeypatch.setenv("RAYCHAT_CONFIG", str(cfg))
    assert load_settings().serve.port == 9001


def test_bad_env_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYCHAT_LLM__MAX_REPLICAS", "many")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "llm.max_replicas" in str(err.value)
    assert "RAYCHAT_LLM__MAX_REPLICAS" in str(err.value)


def test_bad_yaml_value_names_the_field(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("llm:\n  gpu_memory_utilization: 1.5\n")
    with pytest.raises(SettingsError, match=r"llm\.gpu_memory_utilization"):
        load_settings(cfg)


def test_unknown_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("llm:\n  max_replica: 3\n")
    with pytest.raises(SettingsError, match=r"llm\.max_replica"):
        load_settings(cfg)


def test_replica_bounds_checked() -> None:
    with pytest.raises(SettingsError, match="max_replicas"):
        load_settings(llm={"min_replicas": 3, "max_replicas": 2})


def test_unknown_profile_refused() -> None:
    with pytest.raises(SettingsError, match="profile"):
        load_settings(profile="huge")


def test_missing_config_file_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "absent.yaml")


def test_source_roots_relative_to_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAYCHAT_DATA_DIR", str(tmp_path / "data"))
    data = (tmp_path / "data").resolve()
    assert load_settings().knowledge.source_roots == [data / "sources"]  # the default
    monkeypatch.setenv("RAYCHAT_KNOWLEDGE__SOURCE_ROOTS", '["manuals", "/srv/docs"]')
    s = load_settings()
    assert s.knowledge.source_roots == [data / "manuals", Path("/srv/docs")]
    # What the Retriever and the folder-sync actor receive: the same absolute roots.
    assert s.app_config(model_path=tmp_path).knowledge.source_roots == s.knowledge.source_roots
    assert s.knowledge.model_dump(mode="json")["source_roots"] == [str(data / "manuals"), "/srv/docs"]


def test_direct_ingress_ports_in_serves_environment(tmp_path: Path) -> None:
    env = load_settings(data_dir=tmp_path).serve.env()
    assert env["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "1"
    # Serve's upper bound is exclusive: eight ports, 30000..30007.
    assert (env["RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT"], env["RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT"]) == (
        "30000",
        "30008",
    )
    assert env["RAY_SERVE_PORT_QUARANTINE_S"] == "0"
    assert env["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"] == "2"
    off = load_settings(data_dir=tmp_path, serve={"direct_ingress": False}).serve.env()
    assert off["RAY_SERVE_ENABLE_DIRECT_INGRESS"] == "0"


def test_direct_ingress_needs_room_for_a_rolling_update(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="serve.direct_ingress_ports"):
        load_settings(data_dir=tmp_path, gateway={"num_replicas": 3}, serve={"direct_ingress_ports": 4})
