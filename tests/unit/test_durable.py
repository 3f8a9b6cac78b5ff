"""A layer is on stable storage when its apply returns: exactly its paths fsynced, or one syncfs.

On a real directory, with `os.fsync` and `syncfs` watched (not replaced: each still runs):
a layer of a few files and directories has exactly those fsynced, files before directories,
all before `apply_tar` returns (which is before anyone can commit it); a layer with a link,
a whiteout, a removal, or more than `EXACT_LIMIT` paths gets one syncfs of its filesystem;
a layer whose sync was deferred (a staged one) needs no syncfs of its own when one that
began after it was written has completed, and is fsynced where its tree was moved to.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.diff import durable
from core.diff.apply import Mode, apply_tar, copy_up_implied
from core.diff.durable import Written, make_durable
from core.errors import Internal

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown of layer entries)")


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def make_tar(*entries: tuple) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    buf.seek(0)
    return buf


class Synced:
    """What was fsynced (by path) and syncfs'd (by directory), in order."""

    def __init__(self) -> None:
        self.fsynced: list[str] = []
        self.syncfs: list[str] = []


@pytest.fixture
def synced(monkeypatch: pytest.MonkeyPatch) -> Iterator[Synced]:
    seen = Synced()
    real_fsync, real_syncfs = os.fsync, durable.syncfs

    def fsync(fd: int) -> None:
        seen.fsynced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    def syncfs(fd: int) -> None:
        seen.syncfs.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_syncfs(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(durable, "syncfs", syncfs)
    yield seen


def test_a_few_files_are_fsynced_exactly_before_the_apply_returns(
    tmp_path: Path, synced: Synced
) -> None:
    layer = make_tar(
        entry("app", tarfile.DIRTYPE),
        entry("app/bin", tarfile.DIRTYPE),
        entry("app/bin/tool", data=b"tool"),
        entry("app/data.bin", data=os.urandom(1 << 16)),
        # Implied: `etc` is not listed, so the applier makes it.
        entry("etc/app.conf", data=b"x = 1\n"),
    )
    apply_tar(layer, tmp_path, Mode.OVERLAY)
    assert synced.syncfs == []
    files = {str(tmp_path / p) for p in ("app/bin/tool", "app/data.bin", "etc/app.conf")}
    dirs = {str(tmp_path / p) for p in ("app", "app/bin", "etc")} | {str(tmp_path)}
    assert set(synced.fsynced) == files | dirs
    assert len(synced.fsynced) == len(files | dirs)


@pytest.mark.parametrize(
    "odd",
    [
        entry("app/link", tarfile.SYMTYPE, linkname="bin"),
        entry("app/hard", tarfile.LNKTYPE, linkname="app/one"),
        entry("app/fifo", tarfile.FIFOTYPE),
        entry("app/.wh.gone"),
    ],
    ids=["symlink", "hard link", "fifo", "whiteout"],
)
def test_what_no_fsync_of_a_path_reaches_gets_one_syncfs(
    tmp_path: Path, synced: Synced, odd: tuple
) -> None:
    layer = make_tar(entry("app", tarfile.DIRTYPE), entry("app/one", data=b"1"), odd)
    apply_tar(layer, tmp_path, Mode.OVERLAY)
    assert synced.syncfs == [str(tmp_path)]
    assert synced.fsynced == []


def test_a_replaced_entry_gets_one_syncfs(tmp_path: Path, synced: Synced) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "one").mkdir()
    layer = make_tar(entry("app/one", data=b"a file where a directory was"))
    apply_tar(layer, tmp_path, Mode.DELETE)
    assert (tmp_path / "app" / "one").read_bytes() == b"a file where a directory was"
    assert synced.syncfs == [str(tmp_path)]


def test_many_files_get_one_syncfs(tmp_path: Path, synced: Synced) -> None:
    many = [entry(f"f{i:04d}", data=b"x") for i in range(durable.EXACT_LIMIT + 1)]
    apply_tar(make_tar(*many), tmp_path, Mode.OVERLAY)
    assert synced.syncfs == [str(tmp_path)]
    assert synced.fsynced == []


def test_written_gives_up_past_its_limit() -> None:
    written = Written(limit=3)
    written.file(("a",))
    written.dir(("d",))
    assert written.exact
    written.file(("b",))
    assert not written.exact
    written.file(("c",))
    assert written.files is None and written.dirs is None


def test_make_durable_names_a_path_that_is_gone(tmp_path: Path) -> None:
    written = Written()
    written.file(("missing",))
    fd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(Internal, match="missing"):
            make_durable(fd, written)
    finally:
        os.close(fd)


def test_copied_up_directories_are_fsynced(tmp_path: Path, synced: Synced) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "opt" / "app").mkdir(parents=True)
    os.chmod(lower / "opt" / "app", 0o750)
    (upper / "opt" / "app").mkdir(parents=True)
    copy_up_implied(upper, [("opt",), ("opt", "app")], [lower])
    assert (upper / "opt" / "app").stat().st_mode & 0o777 == 0o750
    assert synced.fsynced == [str(upper / "opt"), str(upper / "opt" / "app")]


def test_one_syncfs_covers_every_layer_written_before_it_started(
    tmp_path: Path, synced: Synced
) -> None:
    links = [entry("a", tarfile.DIRTYPE), entry("a/link", tarfile.SYMTYPE, linkname="x")]
    staged, parent, late = tmp_path / "staged", tmp_path / "parent", tmp_path / "late"
    for d in (staged, parent, late):
        d.mkdir()
    # A staged layer is written first and defers its sync; its parent is synced at once.
    pending = apply_tar(make_tar(*links), staged, Mode.OVERLAY, defer_sync=True).pending
    assert pending is not None and synced.syncfs == []
    apply_tar(make_tar(*links), parent, Mode.OVERLAY)
    assert synced.syncfs == [str(parent)]
    # The staged tree moves, as onto its parent's snapshot; the parent's syncfs started
    # after it was written, so finishing it needs no second one.
    moved = tmp_path / "moved"
    os.rename(staged, moved)
    durable.finish(pending, moved)
    assert synced.syncfs == [str(parent)]
    # A layer written after that syncfs does need its own.
    later = apply_tar(make_tar(*links), late, Mode.OVERLAY, defer_sync=True).pending
    assert later is not None
    durable.finish(later, late)
    assert synced.syncfs == [str(parent), str(late)]


def test_a_deferred_small_layer_is_fsynced_where_it_was_moved(
    tmp_path: Path, synced: Synced
) -> None:
    staged = tmp_path / "staged"
    staged.mkdir()
    layer = make_tar(entry("app", tarfile.DIRTYPE), entry("app/one", data=b"1"))
    pending = apply_tar(layer, staged, Mode.OVERLAY, defer_sync=True).pending
    assert pending is not None and synced.fsynced == []
    moved = tmp_path / "upper"
    os.rename(staged, moved)
    durable.finish(pending, moved)
    assert synced.syncfs == []
    assert set(synced.fsynced) == {str(moved / "app" / "one"), str(moved / "app"), str(moved)}
