"""Applying layer tars onto directories: both whiteout modes, metadata kept, hostile layers refused.

These run as root on the real filesystem (device nodes, ownership, trusted.* xattrs).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard

from core.diff.apply import OPAQUE_XATTR, Mode, apply_layer, apply_tar
from core.diff.compression import DOCKER_LAYER_GZIP, OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD
from core.errors import DataLoss, InvalidArgument

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown, trusted.*)")


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", **attrs: object) -> tuple:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.mtime = 1_600_000_000
    for key, value in attrs.items():
        setattr(info, key, value)
    if kind == tarfile.REGTYPE:
        info.size = len(data)
    return info, data


def make_tar(*entries: tuple) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def apply_bytes(data: bytes, root: Path, mode: Mode = Mode.DELETE, media: str = OCI_LAYER):
    return apply_layer(io.BytesIO(data), media, root, mode)


def tree(root: Path) -> dict[str, str]:
    """A picture of a tree: path -> kind and content/target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "-> " + os.readlink(p)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            elif stat.S_ISCHR(st.st_mode):
                out[rel] = f"chr {os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            elif stat.S_ISREG(st.st_mode):
                out[rel] = "file " + p.read_bytes().decode()
            else:
                out[rel] = "other"
    return out


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    r.mkdir()
    return r


@pytest.fixture
def outside(tmp_path: Path) -> Iterator[Path]:
    o = tmp_path / "outside"
    o.mkdir()
    (o / "keep").write_text("original")
    before = tree(o)
    yield o
    assert tree(o) == before, "something was written outside the target"


BASE = make_tar(
    entry("etc/", tarfile.DIRTYPE),
    entry("etc/passwd", data=b"root"),
    entry("etc/gone", data=b"x"),
    entry("opt/", tarfile.DIRTYPE),
    entry("opt/old", data=b"old"),
    entry("opt/sub/", tarfile.DIRTYPE),
    entry("opt/sub/deep", data=b"deep"),
)


def test_diff_id_is_sha256_of_uncompressed_tar(root: Path) -> None:
    applied = apply_bytes(BASE, root)
    assert applied.digest == "sha256:" + hashlib.sha256(BASE).hexdigest()
    assert applied.size == len(BASE)


@pytest.mark.parametrize(
    ("media", "pack"),
    [
        (OCI_LAYER_GZIP, gzip.compress),
        (DOCKER_LAYER_GZIP, gzip.compress),
        (OCI_LAYER_ZSTD, lambda b: zstandard.ZstdCompressor().compress(b)),
        (OCI_LAYER, lambda b: b),
    ],
)
def test_compressed_layers(root: Path, media: str, pack) -> None:  # type: ignore[no-untyped-def]
    applied = apply_bytes(pack(BASE), root, media=media)
    assert applied.digest == "sha256:" + hashlib.sha256(BASE).hexdigest()
    assert tree(root)["opt/sub/deep"] == "file deep"


def test_unknown_media_type_is_refused(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="application/x-nope"):
        apply_bytes(BASE, root, media="application/x-nope")


def test_expected_diff_id_mismatch(root: Path) -> None:
    with pytest.raises(DataLoss, match="diff ID"):
        apply_layer(
            io.BytesIO(BASE), OCI_LAYER, root, Mode.DELETE, expected_diff_id="sha256:" + "0" * 64
        )


def test_corrupt_gzip_is_invalid(root: Path) -> None:
    data = gzip.compress(BASE)
    with pytest.raises(InvalidArgument):
        apply_bytes(data[: len(data) // 2], root, media=OCI_LAYER_GZIP)


def test_whiteouts_delete_mode(root: Path) -> None:
    apply_bytes(BASE, root)
    upper = make_tar(
        entry("etc/.wh.gone"),
        entry("opt/", tarfile.DIRTYPE),
        entry("opt/new", data=b"new"),
        entry("opt/.wh..wh..opq"),
        entry("opt/later", data=b"later"),
    )
    apply_bytes(upper, root)
    assert tree(root) == {
        "etc": "dir",
        "etc/passwd": "file root",
        "opt": "dir",
        "opt/new": "file new",
        "opt/later": "file later",
    }


def test_opaque_keeps_this_layers_subtree(root: Path) -> None:
    apply_bytes(BASE, root)
    upper = make_tar(
        entry("opt/sub/", tarfile.DIRTYPE),
        entry("opt/sub/fresh", data=b"f"),
        entry("opt/.wh..wh..opq"),
    )
    apply_bytes(upper, root)
    assert tree(root)["opt/sub/fresh"] == "file f"
    assert "opt/sub/deep" not in tree(root)
    assert "opt/old" not in tree(root)


def test_whiteouts_overlay_mode(root: Path) -> None:
    upper = make_tar(
        entry("etc/", tarfile.DIRTYPE),
        entry("etc/.wh.gone", uid=0, gid=0),
        entry("opt/", tarfile.DIRTYPE),
        entry("opt/.wh..wh..opq"),
        entry("opt/new", data=b"new"),
    )
    apply_bytes(upper, root, Mode.OVERLAY)
    assert tree(root) == {
        "etc": "dir",
        "etc/gone": "chr 0:0",
        "opt": "dir",
        "opt/new": "file new",
    }
    assert os.getxattr(root / "opt", OPAQUE_XATTR) == b"y"
    assert os.lstat(root / "etc/gone").st_uid == 0


def test_overlay_whiteouts_make_a_working_overlay(tmp_path: Path) -> None:
    lower, upper, work, merged = (tmp_path / n for n in ("lower", "upper", "work", "merged"))
    for d in (lower, upper, work, merged):
        d.mkdir()
    apply_bytes(BASE, lower, Mode.OVERLAY)
    layer = make_tar(
        entry("etc/", tarfile.DIRTYPE),
        entry("etc/.wh.gone"),
        entry("opt/", tarfile.DIRTYPE),
        entry("opt/.wh..wh..opq"),
        entry("opt/new", data=b"new"),
    )
    apply_bytes(layer, upper, Mode.OVERLAY)
    opts = f"lowerdir={upper}:{lower}"
    assert os.system(f"mount -t overlay overlay -o {opts} {merged}") == 0
    try:
        assert tree(merged) == {
            "etc": "dir",
            "etc/passwd": "file root",
            "opt": "dir",
            "opt/new": "file new",
        }
    finally:
        os.system(f"umount {merged}")


def test_metadata_is_kept(root: Path) -> None:
    layer = make_tar(
        entry("d/", tarfile.DIRTYPE, mode=0o1777, uid=12, gid=34, mtime=1_500_000_000),
        entry("d/suid", data=b"x", mode=0o4755, uid=1000, gid=1000, mtime=1_400_000_000),
        entry("d/link", tarfile.SYMTYPE, linkname="suid", uid=5, gid=6),
        entry("d/hard", tarfile.LNKTYPE, linkname="d/suid"),
        entry("d/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
        entry("d/blk", tarfile.BLKTYPE, devmajor=7, devminor=0, mode=0o660),
        entry("d/fifo", tarfile.FIFOTYPE, mode=0o600),
        entry(
            "d/cap",
            data=b"c",
            pax_headers={
                "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00"
                + "\x00" * 12,
                "SCHILY.xattr.user.note": "hello",
                "SCHILY.xattr.trusted.overlay.redirect": "/etc",
            },
        ),
    )
    apply_bytes(layer, root)
    d = root / "d"
    st = d.lstat()
    assert stat.S_IMODE(st.st_mode) == 0o1777 and (st.st_uid, st.st_gid) == (12, 34)
    assert st.st_mtime == 1_500_000_000
    st = (d / "suid").lstat()
    assert stat.S_IMODE(st.st_mode) == 0o4755 and (st.st_uid, st.st_gid) == (1000, 1000)
    assert st.st_mtime == 1_400_000_000 and st.st_nlink == 2
    assert (d / "hard").lstat().st_ino == st.st_ino
    assert os.readlink(d / "link") == "suid"
    assert ((d / "link").lstat().st_uid, (d / "link").lstat().st_gid) == (5, 6)
    assert (d / "link").lstat().st_mtime == 1_600_000_000
    null = (d / "null").lstat()
    assert stat.S_ISCHR(null.st_mode) and null.st_rdev == os.makedev(1, 3)
    assert stat.S_IMODE(null.st_mode) == 0o666
    assert stat.S_ISBLK((d / "blk").lstat().st_mode)
    assert stat.S_ISFIFO((d / "fifo").lstat().st_mode)
    assert os.getxattr(d / "cap", "user.note") == b"hello"
    assert os.getxattr(d / "cap", "security.capability")[:4] == b"\x01\x00\x00\x02"
    assert "trusted.overlay.redirect" not in os.listxattr(d / "cap")


def test_replacing_entries(root: Path) -> None:
    apply_bytes(BASE, root)
    layer = make_tar(
        entry("opt", data=b"now a file"),
        entry("etc/passwd", tarfile.SYMTYPE, linkname="/dev/null"),
    )
    apply_bytes(layer, root)
    t = tree(root)
    assert t["opt"] == "file now a file"
    assert t["etc/passwd"] == "-> /dev/null"


def test_relative_symlink_inside_root_is_followed(root: Path) -> None:
    layer = make_tar(
        entry("usr/", tarfile.DIRTYPE),
        entry("usr/lib/", tarfile.DIRTYPE),
        entry("lib", tarfile.SYMTYPE, linkname="usr/lib"),
        entry("lib/libc.so", data=b"libc"),
    )
    apply_bytes(layer, root)
    assert tree(root)["usr/lib/libc.so"] == "file libc"


HOSTILE = {
    "absolute": lambda out: [entry(f"{out}/evil", data=b"x")],
    "dotdot": lambda out: [entry("../outside/evil", data=b"x")],
    "nested dotdot": lambda out: [entry("a/", tarfile.DIRTYPE), entry("a/../../evil", data=b"x")],
    "symlink out then write": lambda out: [
        entry("esc", tarfile.SYMTYPE, linkname=str(out)),
        entry("esc/evil", data=b"x"),
    ],
    "symlink out then overwrite": lambda out: [
        entry("esc", tarfile.SYMTYPE, linkname=str(out)),
        entry("esc/keep", data=b"x"),
    ],
    "relative symlink out": lambda out: [
        entry("esc", tarfile.SYMTYPE, linkname="../outside"),
        entry("esc/evil", data=b"x"),
    ],
    "symlink chain": lambda out: [
        entry("a", tarfile.SYMTYPE, linkname="b"),
        entry("b", tarfile.SYMTYPE, linkname="c/../.."),
        entry("c/", tarfile.DIRTYPE),
        entry("a/outside/evil", data=b"x"),
    ],
    "symlink loop": lambda out: [
        entry("a", tarfile.SYMTYPE, linkname="b"),
        entry("b", tarfile.SYMTYPE, linkname="a"),
        entry("a/evil", data=b"x"),
    ],
    "hard link to /etc/passwd": lambda out: [
        entry("pw", tarfile.LNKTYPE, linkname="/etc/passwd"),
    ],
    "hard link out by dotdot": lambda out: [
        entry("pw", tarfile.LNKTYPE, linkname="../outside/keep"),
    ],
    "hard link through symlink": lambda out: [
        entry("esc", tarfile.SYMTYPE, linkname=str(out)),
        entry("pw", tarfile.LNKTYPE, linkname="esc/keep"),
    ],
    "hard link to missing": lambda out: [entry("pw", tarfile.LNKTYPE, linkname="nothing")],
    "whiteout through symlink": lambda out: [
        entry("esc", tarfile.SYMTYPE, linkname=str(out)),
        entry("esc/.wh.keep"),
    ],
    "opaque through symlink": lambda out: [
        entry("esc", tarfile.SYMTYPE, linkname=str(out)),
        entry("esc/.wh..wh..opq"),
    ],
}


@pytest.mark.parametrize("mode", [Mode.DELETE, Mode.OVERLAY])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layers_are_refused(root: Path, outside: Path, case: str, mode: Mode) -> None:
    layer = make_tar(*HOSTILE[case](outside))
    with pytest.raises(InvalidArgument, match="layer entry") as info:
        apply_bytes(layer, root, mode)
    assert "invalid argument" in str(info.value)
    assert not (outside / "evil").exists()
    assert not (outside.parent / "evil").exists()


def test_refusal_names_the_entry(root: Path, outside: Path) -> None:
    layer = make_tar(
        entry("esc", tarfile.SYMTYPE, linkname=str(outside)),
        entry("esc/evil", data=b"x"),
    )
    with pytest.raises(InvalidArgument, match=r"'esc/evil'.*symbolic link 'esc'"):
        apply_bytes(layer, root)


def test_empty_stream_is_an_empty_layer(root: Path) -> None:
    applied = apply_tar(io.BytesIO(b""), root, Mode.DELETE)
    assert applied.size == 0 and tree(root) == {}


def test_implied_parents_copy_lower_metadata(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "srv").mkdir(parents=True)
    os.chown(lower / "srv", 7, 8)
    os.chmod(lower / "srv", 0o750)
    upper.mkdir()
    layer = make_tar(entry("srv/file", data=b"x"))
    apply_layer(io.BytesIO(layer), OCI_LAYER, upper, Mode.OVERLAY, lowers=[lower])
    st = (upper / "srv").lstat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (7, 8, 0o750)


def test_delete_mode_whiteout_of_missing_path_makes_nothing(root: Path) -> None:
    apply_bytes(make_tar(entry("a/b/.wh.c"), entry(".wh.nothing")), root)
    assert tree(root) == {}


def test_broken_streams_are_refused_naming_where(root: Path) -> None:
    with pytest.raises(InvalidArgument, match="layer is not a tar stream"):
        apply_bytes(b"not a tar archive, just some bytes" * 20, root)
    layer = bytearray(make_tar(entry("a", data=b"x"), entry("b", data=b"y")))
    second = 2 * 512  # after the first entry's header and its data block
    assert layer[second : second + 1] == b"b"
    layer[second + 148 : second + 156] = b"0000001\0"
    with pytest.raises(InvalidArgument, match="not a valid tar stream at 'a': bad header checksum"):
        apply_bytes(bytes(layer), root)
    with pytest.raises(InvalidArgument, match="at 'a': unexpected end"):
        apply_bytes(make_tar(entry("a", data=b"x" * 2000))[:1024], root.parent)


def test_owners_exact_in_setgid_and_plain_directories(root: Path) -> None:
    # A file made in a setgid directory gets the directory's group, elsewhere the
    # process's: the applier skips the chown only when that is the entry's owner.
    layer = make_tar(
        entry("sg/", tarfile.DIRTYPE, mode=0o2775, gid=50),
        entry("sg/a", data=b"a", uid=0, gid=0),
        entry("sg/b", data=b"b", uid=0, gid=50),
        entry("sg/c", data=b"c", uid=7, gid=50),
        entry("plain/", tarfile.DIRTYPE),
        entry("plain/d", data=b"d", uid=0, gid=0),
        entry("plain/e", data=b"e", uid=1000, gid=1000),
        # The same directory listed again, with another group, then more files in it.
        entry("sg/", tarfile.DIRTYPE, mode=0o2775, gid=60),
        entry("sg/f", data=b"f", uid=0, gid=50),
        entry("sg/g", data=b"g", uid=0, gid=60),
        entry("top", data=b"t", uid=0, gid=0),
    )
    for mode in Mode:
        target = root / mode.value
        target.mkdir()
        apply_bytes(layer, target, mode)
        owners = {
            name: (st.st_uid, st.st_gid)
            for name in ("sg/a", "sg/b", "sg/c", "plain/d", "plain/e", "sg/f", "sg/g", "top")
            for st in [(target / name).lstat()]
        }
        assert owners == {
            "sg/a": (0, 0), "sg/b": (0, 50), "sg/c": (7, 50), "plain/d": (0, 0),
            "plain/e": (1000, 1000), "sg/f": (0, 50), "sg/g": (0, 60), "top": (0, 0),
        }  # fmt: skip
        assert (target / "sg").lstat().st_gid == 60
