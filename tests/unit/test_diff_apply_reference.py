"""The applier's tree against GNU tar's extraction of the same layer, file for file.

Layers are made by GNU tar from real trees (a crafted one with every kind of entry, owners,
modes, xattrs, hard links, a sparse file and whiteouts, and a copy of the host's
`/usr/share/zoneinfo`), then extracted twice: by `tar --xattrs -xpf` as the reference, and by
`apply_layer` in overlay mode. Every path must match in kind, mode, owner, size, content,
link target, device number, extended attributes, mtime and hard-link grouping; a whiteout
file `.wh.X` in the reference must be the 0:0 character device `X` in the applier's tree, and
`.wh..wh..opq` the `trusted.overlay.opaque` attribute on its directory. Also: the applier's
cache of directory descriptors follows a directory that a later entry of the same layer
replaces by a link or a file.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from core.diff.apply import OPAQUE_XATTR, Mode, apply_layer
from core.diff.compression import OCI_LAYER_GZIP
from core.errors import InvalidArgument

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.*)"),
    pytest.mark.skipif(shutil.which("tar") is None, reason="needs GNU tar"),
]

MTIME = 1_700_000_000


def _picture(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path below `root` with what a layer can say about it."""
    out: dict[str, tuple[object, ...]] = {}
    inodes: dict[int, list[str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            kind = stat.S_IFMT(st.st_mode)
            names = os.listxattr(p, follow_symlinks=False)
            xattrs = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in names))
            detail: object = None
            if stat.S_ISREG(st.st_mode):
                detail = hashlib.sha256(p.read_bytes()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                detail = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                detail = (os.major(st.st_rdev), os.minor(st.st_rdev))
            mode = None if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode)
            out[rel] = (kind, mode, st.st_uid, st.st_gid, st.st_size if kind == stat.S_IFREG else 0,
                        detail, xattrs, st.st_mtime_ns)  # fmt: skip
    for group in inodes.values():
        for rel in group:
            out[rel] = (*out[rel], tuple(sorted(group)))
    return out


def _expected_from_reference(ref: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    """The reference picture with whiteout files turned into what overlayfs reads."""
    out: dict[str, tuple[object, ...]] = {}
    opaque: set[str] = set()
    for rel, info in ref.items():
        parent, _, base = rel.rpartition("/")
        if base == ".wh..wh..opq":
            opaque.add(parent)
        elif base.startswith(".wh."):
            target = f"{parent}/{base[4:]}" if parent else base[4:]
            out[target] = ("whiteout", info[2], info[3])
        else:
            out[rel] = info
    for parent in opaque:
        kind, mode, uid, gid, size, detail, xattrs, mtime = out[parent]
        xattrs = tuple(sorted((*xattrs, (OPAQUE_XATTR, b"y"))))  # type: ignore[arg-type]
        out[parent] = (kind, mode, uid, gid, size, detail, xattrs, mtime)
    return out


def _as_applied(picture: dict[str, tuple[object, ...]]) -> dict[str, tuple[object, ...]]:
    out = dict(picture)
    for rel, info in picture.items():
        kind, detail = info[0], info[5]
        if kind == stat.S_IFCHR and detail == (0, 0):
            out[rel] = ("whiteout", info[2], info[3])
    return out


def _gnu_layer(
    source: Path, out: Path, *, sparse: bool = False, options: tuple[str, ...] = ()
) -> bytes:
    """A gzip layer of `source`'s contents, as GNU tar writes one (PAX, xattrs, numeric owners).

    `options` replace the format options (`--format=posix --xattrs --xattrs-include=*`).
    """
    fmt = options or ("--format=posix", "--xattrs", "--xattrs-include=*")
    cmd = ["tar", *fmt, "--numeric-owner", "--sort=name", "-C", str(source), "-cf", str(out), "."]
    if sparse:
        cmd.insert(1, "--sparse")
    subprocess.run(cmd, check=True)
    return gzip.compress(out.read_bytes(), compresslevel=1, mtime=0)


def _reference(tar_path: Path, dest: Path) -> None:
    dest.mkdir()
    subprocess.run(
        ["tar", "--xattrs", "--xattrs-include=*", "--numeric-owner", "--same-owner", "-xpf",
         str(tar_path), "-C", str(dest)],
        check=True,
    )  # fmt: skip


def _compare(
    tmp_path: Path, source: Path, *, sparse: bool = False, options: tuple[str, ...] = ()
) -> None:
    tar_path = tmp_path / "layer.tar"
    blob = _gnu_layer(source, tar_path, sparse=sparse, options=options)
    _reference(tar_path, tmp_path / "ref")
    ours = tmp_path / "ours"
    ours.mkdir()
    applied = apply_layer(io.BytesIO(blob), OCI_LAYER_GZIP, ours, Mode.OVERLAY)
    assert applied.digest == "sha256:" + hashlib.sha256(tar_path.read_bytes()).hexdigest()
    expected = _expected_from_reference(_picture(tmp_path / "ref"))
    got = _as_applied(_picture(ours))
    assert sorted(got) == sorted(expected)
    for rel in expected:
        assert got[rel] == expected[rel], rel


def _crafted(root: Path) -> None:
    def f(rel: str, data: bytes, mode: int = 0o644, owner: tuple[int, int] = (0, 0)) -> Path:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        os.chown(p, *owner)
        os.chmod(p, mode)
        return p

    f("etc/passwd", b"root:x:0:0::/root:/bin/sh\n")
    f("etc/shadow", b"root:*::\n", 0o640, (0, 42))
    f("usr/bin/su", b"\x7fELF setuid", 0o4755)
    f("usr/bin/wall", b"\x7fELF setgid", 0o2755, (0, 5))
    f("usr/bin/ping", b"\x7fELF caps", 0o755)
    os.setxattr(root / "usr/bin/ping", "security.capability",
                bytes.fromhex("0100000200200000000000000000000000000000"))  # fmt: skip
    os.setxattr(root / "etc/passwd", "user.origin", b"crafted \xff bytes")
    os.setxattr(root / "etc/passwd", "trusted.note", b"t")
    f("home/user/.profile", b"export A=1\n", 0o600, (1000, 1000))
    f("empty", b"")
    f("big/blob.bin", os.urandom(3 << 20) + b"tail")
    f("lib/libc.so.6", b"libc")
    os.link(root / "lib/libc.so.6", root / "lib/libc-hard.so")
    os.link(root / "lib/libc.so.6", root / "usr/bin/libc-elsewhere")
    os.symlink("libc.so.6", root / "lib/libc.so")
    os.symlink("/usr/lib", root / "lib64")
    os.symlink("../../etc/passwd", root / "usr/bin/dangling-but-inside")
    os.lchown(root / "lib/libc.so", 1000, 1000)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "srv/shared").mkdir(parents=True)
    os.chown(root / "srv/shared", 1000, 2000)
    os.chmod(root / "srv/shared", 0o2775)
    os.mkfifo(root / "srv/fifo")
    os.mknod(root / "srv/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(root / "srv/loop0", stat.S_IFBLK | 0o660, os.makedev(7, 0))
    # A sparse file: holes read back as zeros, in both trees.
    (root / "var/lib").mkdir(parents=True)
    with (root / "var/lib/sparse.img").open("wb") as out:
        out.seek(5 << 20)
        out.write(b"end")
    # Whiteouts, as a layer above another would carry them.
    f("var/cache/.wh.old-cache", b"")
    f("opt/app/.wh..wh..opq", b"")
    f("opt/app/new", b"new")
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, ns=(MTIME * 10**9 + 123, MTIME * 10**9 + 456789),
                     follow_symlinks=False)  # fmt: skip


def test_crafted_layer_matches_gnu_tar(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _crafted(source)
    _compare(tmp_path, source, sparse=True)


def _long_and_large(root: Path, *, long_link: bool = True, large_ids: bool = True) -> None:
    """Names past the 100 bytes of a header's field, long link targets, ids past 7 octal digits."""
    deep = root / ("d" * 90) / ("e" * 50)
    deep.mkdir(parents=True)
    (deep / ("f" * 80)).write_bytes(b"deep")
    if long_link:
        os.link(deep / ("f" * 80), root / "hard-to-deep")
        os.symlink(str((deep / ("f" * 80)).relative_to(root)), root / "link-to-deep")
    if large_ids:
        (root / "large-ids").write_bytes(b"ids")
        os.chown(root / "large-ids", 3_000_000, 4_000_000)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, ns=(MTIME * 10**9, MTIME * 10**9), follow_symlinks=False)


@pytest.mark.parametrize("version", ["0.0", "0.1", "1.0"])
def test_pax_sparse_formats_match_gnu_tar(tmp_path: Path, version: str) -> None:
    source = tmp_path / "src"
    source.mkdir()
    with (source / "sparse.img").open("wb") as out:
        out.write(b"head")
        out.seek(3 << 20)
        out.write(b"middle")
        out.seek(9 << 20)
        out.write(b"end")
    with (source / "all-hole.img").open("wb") as out:
        out.truncate(2 << 20)
    options = ("--format=posix", f"--sparse-version={version}")
    _compare(tmp_path, source, sparse=True, options=options)
    # The holes stay holes: only the data segments take blocks.
    assert (tmp_path / "ours/sparse.img").stat().st_blocks * 512 < 1 << 20


def test_gnu_format_matches_gnu_tar(tmp_path: Path) -> None:
    # GNU format: long names and link targets as `L` and `K` entries, ids in base-256,
    # sparse files as old GNU `S` entries (without xattrs, which only PAX carries).
    source = tmp_path / "src"
    source.mkdir()
    _crafted(source)
    _long_and_large(source / "long")
    _compare(tmp_path, source, sparse=True, options=("--format=gnu",))


def test_ustar_format_matches_gnu_tar(tmp_path: Path) -> None:
    # ustar splits a long name into the header's prefix and name fields.
    source = tmp_path / "src"
    source.mkdir()
    _long_and_large(source, long_link=False, large_ids=False)
    _compare(tmp_path, source, options=("--format=ustar",))


def test_long_names_and_large_ids_in_pax_match_gnu_tar(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    _long_and_large(source)
    _compare(tmp_path, source)


def test_host_tree_matches_gnu_tar(tmp_path: Path) -> None:
    zoneinfo = Path("/usr/share/zoneinfo")
    if not zoneinfo.is_dir():
        pytest.skip("no /usr/share/zoneinfo on this host")
    source = tmp_path / "src"
    shutil.copytree(zoneinfo, source / "usr/share/zoneinfo", symlinks=True)
    _compare(tmp_path, source)


def _tar(*entries: tuple[str, bytes, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, arg in entries:
            info = tarfile.TarInfo(name)
            info.type, info.mtime = kind, MTIME
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            data = arg.encode() if kind == tarfile.REGTYPE else b""
            if kind == tarfile.SYMTYPE:
                info.linkname = arg
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


def test_directory_replaced_by_a_link_within_a_layer(tmp_path: Path) -> None:
    layer = _tar(
        ("a/", tarfile.DIRTYPE, ""),
        ("a/x", tarfile.REGTYPE, "x"),
        ("b/", tarfile.DIRTYPE, ""),
        ("a", tarfile.SYMTYPE, "b"),
        ("a/y", tarfile.REGTYPE, "y"),
    )
    apply_layer(io.BytesIO(layer), OCI_LAYER_GZIP, tmp_path, Mode.OVERLAY)
    assert os.readlink(tmp_path / "a") == "b"
    assert (tmp_path / "b/y").read_text() == "y"
    assert not (tmp_path / "b/x").exists()


def test_directory_replaced_by_a_file_within_a_layer(tmp_path: Path) -> None:
    layer = _tar(
        ("a/", tarfile.DIRTYPE, ""),
        ("a/x", tarfile.REGTYPE, "x"),
        ("a", tarfile.REGTYPE, "now a file"),
        ("a/y", tarfile.REGTYPE, "y"),
    )
    with pytest.raises(InvalidArgument, match="'a/y' needs 'a' to be a directory"):
        apply_layer(io.BytesIO(layer), OCI_LAYER_GZIP, tmp_path, Mode.OVERLAY)
    assert (tmp_path / "a").read_text() == "now a file"
