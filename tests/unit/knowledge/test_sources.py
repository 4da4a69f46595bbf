"""Source folders confined to the roots: `..`, absolute paths, symlinked folders and files that lead out are
refused, messages tell nothing beyond the path sent, and upload names are made safe."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from knowledge import sources
from knowledge.errors import SourceFolderNotAllowed, StoreError
from knowledge.ingest import document_id, upload_name
from knowledge.loaders import LoadError
from knowledge.sources import confine, inside, read_file, resolve_inside


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """<tmp>/data/sources (the root) with a followed folder, and <tmp>/outside with a secret."""
    root = tmp_path / "data" / "sources"
    (root / "manuals" / "sub").mkdir(parents=True)
    (root / "manuals" / "a.txt").write_text("pump manual")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("the vault code is 4711")
    return {"root": root, "folder": root / "manuals", "outside": outside, "secret": outside / "secret.txt"}


def refused(folder: str, roots: list[Path]) -> str:
    with pytest.raises(SourceFolderNotAllowed) as info:
        confine(folder, roots)
    return str(info.value)


def test_a_folder_inside_the_root_is_its_real_path(tree: dict[str, Path]) -> None:
    root = tree["root"]
    assert confine(str(tree["folder"]), [root]) == tree["folder"].resolve()
    assert confine(str(root / "manuals" / "sub" / ".."), [root]) == tree["folder"].resolve()  # `..` inside
    assert confine(str(root), [root]) == root.resolve()  # the root itself may be followed


def test_a_relative_folder_is_under_the_first_root(tree: dict[str, Path], tmp_path: Path) -> None:
    other = tmp_path / "other-root"
    (other / "manuals").mkdir(parents=True)
    assert confine("manuals", [tree["root"], other]) == tree["folder"].resolve()
    assert confine("manuals/sub", [tree["root"]]) == (tree["folder"] / "sub").resolve()
    assert confine(str(other / "manuals"), [tree["root"], other]) == (other / "manuals").resolve()
    assert refused("../outside", [tree["root"]]).startswith("source_folder '../outside' is outside")


def test_dot_dot_escapes_are_refused(tree: dict[str, Path]) -> None:
    root = tree["root"]
    for folder in ("..", "../..", "manuals/../../..", str(root / ".." / ".." / "outside"), "../../outside"):
        assert "is outside" in refused(folder, [root]), folder


def test_absolute_paths_elsewhere_are_refused(tree: dict[str, Path]) -> None:
    for folder in ("/etc", "/", str(tree["outside"]), str(tree["root"].parent)):
        assert "is outside" in refused(folder, [tree["root"]]), folder


def test_a_sibling_sharing_the_roots_prefix_is_outside(tree: dict[str, Path]) -> None:
    evil = tree["root"].parent / "sources-evil"
    evil.mkdir()
    assert "is outside" in refused(str(evil), [tree["root"]])


def test_a_symlinked_folder_that_leads_out_is_refused(tree: dict[str, Path]) -> None:
    link = tree["root"] / "innocent"
    link.symlink_to(tree["outside"], target_is_directory=True)
    assert "is outside" in refused(str(link), [tree["root"]])
    assert "is outside" in refused("innocent", [tree["root"]])
    nested = tree["folder"] / "escape"
    nested.symlink_to("../../../outside")  # relative link text
    assert "is outside" in refused("manuals/escape", [tree["root"]])


def test_a_symlinked_folder_that_stays_inside_is_followed_at_its_real_path(tree: dict[str, Path]) -> None:
    link = tree["root"] / "alias"
    link.symlink_to(tree["folder"], target_is_directory=True)
    assert confine("alias", [tree["root"]]) == tree["folder"].resolve()


def test_a_root_that_is_itself_a_symlink_is_resolved(tree: dict[str, Path], tmp_path: Path) -> None:
    linked_root = tmp_path / "data" / "linked-sources"
    linked_root.symlink_to(tree["root"], target_is_directory=True)
    real = tree["folder"].resolve()
    # Named through the link or through the real path, relative or absolute: the same folder.
    assert confine("manuals", [linked_root]) == real
    assert confine(str(linked_root / "manuals"), [linked_root]) == real
    assert confine(str(tree["folder"]), [linked_root]) == real
    assert "is outside" in refused(str(tree["outside"]), [linked_root])
    assert "is outside" in refused("../../outside", [linked_root])


def test_missing_or_not_a_folder(tree: dict[str, Path]) -> None:
    root = tree["root"]
    assert refused("nope", [root]) == "source_folder 'nope' is not an existing folder"
    assert refused("manuals/a.txt", [root]) == "source_folder 'manuals/a.txt' is not an existing folder"
    # Outside, existing or not, gets the same answer: nothing outside is probed.
    assert refused("/no/such/dir", [root]) == refused("/etc", [root]).replace("'/etc'", "'/no/such/dir'")
    assert resolve_inside("later", [root]) == (root / "later").resolve()  # inside, need not exist yet


def test_messages_name_only_what_was_sent(tree: dict[str, Path]) -> None:
    link = tree["root"] / "innocent"
    link.symlink_to(tree["outside"], target_is_directory=True)
    for folder in ("innocent", "../outside", "nope"):
        message = refused(folder, [tree["root"]])
        assert str(tree["root"].parent) not in message and "outside/" not in message, message
        assert repr(folder) in message
    long = "x" * 5000
    assert len(refused(long, [tree["root"]])) < 400  # a huge path is not echoed whole


def test_unusable_input_is_refused_not_raised(tree: dict[str, Path]) -> None:
    root = tree["root"]
    for folder in ("a\x00b", "/etc\x00", "x" * 5000, "/" + "y/" * 3000):
        with pytest.raises(SourceFolderNotAllowed):
            confine(folder, [root])
    loop = root / "loop"
    loop.symlink_to(loop)
    with pytest.raises(SourceFolderNotAllowed):
        confine("loop", [root])
    with pytest.raises(SourceFolderNotAllowed):
        confine("manuals", [])  # no roots: no folder at all
    with pytest.raises(SourceFolderNotAllowed):
        confine(42, [root])  # type: ignore[arg-type]
    assert issubclass(SourceFolderNotAllowed, StoreError)  # the Retriever sends it back as a value


def test_inside_tells_files_that_lead_out(tree: dict[str, Path]) -> None:
    root = tree["root"]
    (tree["folder"] / "leak.txt").symlink_to(tree["secret"])
    (tree["folder"] / "alias.txt").symlink_to(tree["folder"] / "a.txt")
    assert inside(tree["folder"] / "a.txt", [root])
    assert inside(tree["folder"] / "alias.txt", [root])
    assert not inside(tree["folder"] / "leak.txt", [root])
    assert not inside(tree["secret"], [root])


def test_read_file_never_opens_a_file_that_leads_out(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tree["root"]
    leak = tree["folder"] / "leak.txt"
    leak.symlink_to(tree["secret"])
    opened: list[str] = []
    real_open = os.open

    def spy(path: str | os.PathLike[str], flags: int, *args: int) -> int:
        opened.append(os.fspath(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(sources.os, "open", spy)
    assert read_file(tree["folder"] / "a.txt", [root]) == b"pump manual"
    with pytest.raises(SourceFolderNotAllowed, match="leads outside") as info:
        read_file(leak, [root])
    assert "4711" not in str(info.value) and str(tree["outside"]) not in str(info.value)
    assert opened == [str((tree["folder"] / "a.txt").resolve())]  # the secret was never opened


def test_read_file_refuses_what_is_not_a_regular_file(tree: dict[str, Path]) -> None:
    fifo = tree["folder"] / "pipe.txt"
    os.mkfifo(fifo)
    result: list[BaseException] = []

    def read() -> None:
        try:
            read_file(fifo, [tree["root"]])
        except BaseException as exc:  # handed to the test thread
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(timeout=5)
    assert not reader.is_alive(), "reading a FIFO blocked"
    assert isinstance(result[0], SourceFolderNotAllowed)


def test_read_file_checks_the_opened_descriptor(
    tree: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link swapped in between the check and the open is caught on the descriptor itself."""
    monkeypatch.setattr(sources, "_opened_path", lambda fd: tree["secret"])
    with pytest.raises(SourceFolderNotAllowed, match="leads outside"):
        read_file(tree["folder"] / "a.txt", [tree["root"]])


# --- upload names ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sent", "safe"),
    [
        ("manual.pdf", "manual.pdf"),
        ("../../x.txt", "x.txt"),
        ("/etc/passwd.txt", "passwd.txt"),
        ("C:\\Users\\me\\notes.md", "notes.md"),
        ("..\\..\\win.ini.txt", "win.ini.txt"),
        ("a\x00b.txt", "ab.txt"),
        ("line\nbreak\r.txt", "linebreak.txt"),
        ("\x1b[31mred.txt", "[31mred.txt"),
        (".env.txt", "env.txt"),
        ("...hidden.md", "hidden.md"),
        (" . spaced.txt ", "spaced.txt"),
        ("\u202etxt.exe", "txt.exe"),  # a right-to-left override goes
        ("设备/说明书.txt", "说明书.txt"),
    ],
)
def test_upload_names_are_made_safe(sent: str, safe: str) -> None:
    assert upload_name(sent) == safe
    assert upload_name(safe) == safe


@pytest.mark.parametrize("sent", ["", ".", "..", "/", "\\", "../..", "\x00", "...", " / . /\x01", "\u200b"])
def test_upload_names_with_nothing_left_are_refused(sent: str) -> None:
    with pytest.raises(LoadError):
        upload_name(sent)


def test_document_ids_keep_folders_and_are_stable() -> None:
    assert document_id("sub/b.md") == "sub/b.md"
    assert document_id("../a/./../b.txt") == "a/b.txt"
    assert document_id("/abs/x.txt") == "abs/x.txt"
    for name in ("sub/b.md", "a\x00/.b/c.txt", " x /y.txt"):
        assert document_id(document_id(name)) == document_id(name)  # folder sync hands ids back in
