"""What a new version may change: the app, not the cluster; a new model name keeps the old as an alias;
a new embedding model needs --reindex; steps rise to 100."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cluster.settings import RaychatSettings, load_settings
from cluster.upgrade.compat import UpgradeRefused, plan
from cluster.upgrade.settings import UpgradeSettings


@pytest.fixture
def blue(tmp_path: Path, clean_settings_env: None) -> RaychatSettings:
    return load_settings(data_dir=tmp_path / "data")


def green(blue: RaychatSettings, **sections: dict) -> RaychatSettings:
    return load_settings(data_dir=blue.data_dir, **sections)


def test_an_app_change_is_planned_as_it_is(blue: RaychatSettings) -> None:
    result = plan(blue, green(blue, llm={"dtype": "float32"}))
    assert result.green.llm.dtype == "float32" and result.notes == [] and not result.reindex


def test_a_new_model_name_keeps_the_old_one_as_an_alias(blue: RaychatSettings) -> None:
    result = plan(blue, green(blue, llm={"model_id": "smollm2-v2"}))
    assert result.green.llm.model_aliases == [blue.llm.model_id]
    assert "alias" in result.notes[0]
    kept = plan(blue, green(blue, llm={"model_id": "v2"}, upgrade={"keep_previous_model_name": False}))
    assert kept.green.llm.model_aliases == []


@pytest.mark.parametrize(
    "change",
    [{"ray": {"port": 7000}}, {"ingress": {"nginx_port": 9090}}, {"redis": {"key_prefix": "x"}}],
)
def test_the_cluster_itself_cannot_change(blue: RaychatSettings, change: dict) -> None:
    with pytest.raises(UpgradeRefused, match=next(iter(change))):
        plan(blue, green(blue, **change))


def test_serve_changes_only_in_its_release(blue: RaychatSettings) -> None:
    assert plan(blue, green(blue, serve={"release": "2026.12"})).green.serve.release == "2026.12"
    with pytest.raises(UpgradeRefused, match="serve"):
        plan(blue, green(blue, serve={"port": 9000}))


def test_a_new_embedding_model_needs_reindex(blue: RaychatSettings) -> None:
    new = green(blue, knowledge={"embedding_model_id": "other", "embedding_model": "/models/other"})
    with pytest.raises(UpgradeRefused, match="--reindex"):
        plan(blue, new)
    assert plan(blue, new, reindex=True).reindex


@pytest.mark.parametrize("steps", [[], [10, 50], [50, 10, 100], [0, 100], [10, 10, 100]])
def test_steps_rise_to_100(steps: list[int]) -> None:
    with pytest.raises(ValidationError):
        UpgradeSettings(steps=steps)


def test_another_embedding_dimension_needs_reindex_too(blue: RaychatSettings) -> None:
    with pytest.raises(UpgradeRefused, match="--reindex"):
        plan(blue, green(blue, knowledge={"embedding_dimension": 128}))


def test_a_rolling_upgrade_refuses_what_needs_two_whole_colours(blue: RaychatSettings) -> None:
    assert plan(blue, green(blue, llm={"dtype": "float32"}), rolling=True).green.llm.dtype == "float32"
    with pytest.raises(UpgradeRefused, match="served model name .* blue-green"):
        plan(blue, green(blue, llm={"model_id": "smollm2-v2"}), rolling=True)
    with pytest.raises(UpgradeRefused, match="new embedding needs the blue-green"):
        plan(blue, green(blue, knowledge={"embedding_dimension": 128}), rolling=True, reindex=True)
