"""Source folders confined to `knowledge.source_roots`: a knowledge base follows a folder only if its real
path (every symlink resolved, `..` collapsed) lies inside one of the roots, and a followed folder's files are
read only if theirs does too.

Roots are expected absolute (the settings make them so against the data dir); a root that is itself a
symlink counts as the folder it leads to. Hard links cannot be told from ordinary files, so whoever may
write inside the roots decides what they hold; symlinks, `..` and absolute paths cannot reach out.
Messages name only what the caller sent, never a resolved path, a root or whether something outside exists.

Standard library only: the store, the watcher and the CLI all check the same way.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence
from pathlib import Path

from knowledge.errors import SourceFolderNotAllowed

ALLOWED = "the folders knowledge bases may follow (knowledge.source_roots)"
FILE_OUTSIDE = f"not read: the file leads outside {ALLOWED}"

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)  # the last part swapped for a link after the check: refused
    | getattr(os, "O_NONBLOCK", 0)  # a FIFO swapped in never blocks the read
    | getattr(os, "O_CLOEXEC", 0)
)


def _shown(folder: object) -> str:
    text = repr(folder)
    return text if len(text) <= 200 else text[:197] + "..."


def _resolve(path: Path) -> Path | None:
    """The real path, or None when it cannot be resolved (NUL byte, name too long, a symlink loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError, ValueError):
        return None


def real_roots(roots: Iterable[Path | str]) -> list[Path]:
    """The roots with their symlinks resolved; one that cannot be resolved admits nothing."""
    return [real for real in (_resolve(Path(root)) for root in roots) if real is not None]


def _within(real: Path, roots: Sequence[Path]) -> bool:
    return any(real == root or real.is_relative_to(root) for root in roots)


def inside(path: str | Path, roots: Iterable[Path | str]) -> bool:
    """Whether the real path of `path` (a file or a folder) lies inside one of the roots."""
    real = _resolve(Path(path))
    return real is not None and _within(real, real_roots(roots))


def resolve_inside(folder: str | Path, roots: Sequence[Path | str]) -> Path:
    """The real path of `folder` when it lies inside a root (it need not exist); a relative `folder` is
    taken relative to the first root. Raises `SourceFolderNotAllowed` otherwise."""
    refused = SourceFolderNotAllowed(f"source_folder {_shown(folder)} is outside {ALLOWED}")
    if not isinstance(folder, str | Path) or not roots:
        raise refused
    real = _resolve(Path(roots[0]) / folder)  # an absolute `folder` replaces the root
    if real is None or not _within(real, real_roots(roots)):
        raise refused
    return real


def confine(folder: str | Path, roots: Sequence[Path | str]) -> Path:
    """The real path of `folder`, an existing directory inside a root; `SourceFolderNotAllowed` otherwise.
    Whether the folder exists is only told once it is known to be inside, so nothing outside is probed."""
    real = resolve_inside(folder, roots)
    try:
        is_dir = real.is_dir()
    except OSError:
        is_dir = False
    if not is_dir:
        raise SourceFolderNotAllowed(f"source_folder {_shown(folder)} is not an existing folder")
    return real


def _opened_path(fd: int) -> Path | None:
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return None  # no /proc: the check made before opening stands alone


def read_file(path: str | Path, roots: Iterable[Path | str]) -> bytes:
    """The bytes of the regular file at `path`, read only when its real path lies inside a root. The
    opened descriptor is checked again, so a link swapped in between the check and the read is caught.
    Raises `SourceFolderNotAllowed` (nothing was read) or `OSError` (unreadable)."""
    resolved = real_roots(roots)
    real = _resolve(Path(path))
    if real is None or not _within(real, resolved):
        raise SourceFolderNotAllowed(FILE_OUTSIDE)
    with os.fdopen(os.open(real, _OPEN_FLAGS), "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise SourceFolderNotAllowed("not read: not a regular file")
        opened = _opened_path(handle.fileno())
        if opened is not None and not _within(opened, resolved):
            raise SourceFolderNotAllowed(FILE_OUTSIDE)
        return handle.read()
