from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from cluster import model_store
from cluster.model_store import ModelStoreError


def test_bundled_gguf_found_with_wheel_checksum() -> None:
    bundled = model_store.find_bundled_gguf()
    assert bundled.path.suffix == ".gguf" and bundled.path.exists()
    assert len(bundled.sha256) == 64


def test_checksum_match_and_mismatch(tmp_path: Path) -> None:
    f = tmp_path / "weights.gguf"
    f.write_bytes(b"GGUF" + bytes(1000))
    good = hashlib.sha256(f.read_bytes()).hexdigest()
    model_store.verify_checksum(f, good)
    with pytest.raises(ModelStoreError, match="checksum mismatch") as err:
        model_store.verify_checksum(f, "0" * 64)
    assert good in str(err.value)  # says what it found


def test_mismatch_refuses_before_converting(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="checksum mismatch"):
        model_store.prepare_bundled(tmp_path / "models", expected_sha256="f" * 64)
    # nothing half-made is left behind that a later run could mistake for a prepared model
    assert not any((tmp_path / "models").glob("*/raychat-model.json"))


def test_cached_model_is_reused_without_rehashing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bundled = model_store.find_bundled_gguf()
    out = tmp_path / "models" / f"{bundled.path.stem}-{bundled.sha256[:12]}"
    out.mkdir(parents=True)
    (out / "raychat-model.json").write_text(f'{{"source_sha256": "{bundled.sha256}"}}')
    monkeypatch.setattr(model_store, "verify_checksum", lambda *a, **k: pytest.fail("rehashed"))
    assert model_store.prepare_bundled(tmp_path / "models") == out


def test_local_model_dir(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError, match="not a directory"):
        model_store.resolve_model(str(tmp_path / "nope"), tmp_path)
    with pytest.raises(ModelStoreError, match="config.json"):
        model_store.resolve_model(str(tmp_path), tmp_path)
    (tmp_path / "config.json").write_text("{}")
    assert model_store.resolve_model(str(tmp_path), tmp_path / "models") == tmp_path
