"""Making layers from two trees: applying the diff to a copy of the lower tree gives the upper."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from core.diff.apply import Mode, apply_tar
from core.diff.compression import GZIP, PLAIN, ZSTD, Compressor, HashingWriter, open_layer
from core.diff.walk import write_diff

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mknod, chown)")


def picture(root: Path) -> dict[str, tuple]:
    """Every entry with its kind, mode, owner, mtime, and content, target or device."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            if stat.S_ISLNK(st.st_mode):
                extra: object = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                extra = p.read_bytes()
            else:
                extra = st.st_rdev
            mtime = None if stat.S_ISDIR(st.st_mode) else int(st.st_mtime)
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, mtime, extra)
    return out


def build_lower(root: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0")
    (root / "etc/hosts").write_text("127.0.0.1")
    (root / "var/lib/stale").mkdir(parents=True)
    (root / "var/lib/stale/file").write_text("stale")
    (root / "bin").mkdir()
    (root / "bin/tool").write_text("v1")
    os.symlink("tool", root / "bin/alias")


def layer_of(lower: Path | None, upper: Path) -> bytes:
    buf = io.BytesIO()
    write_diff(lower, upper, buf)
    return buf.getvalue()


def names(layer: bytes) -> list[str]:
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        return tar.getnames()


def test_round_trip(tmp_path: Path) -> None:
    lower, upper, result = tmp_path / "lower", tmp_path / "upper", tmp_path / "result"
    build_lower(lower)
    subprocess.run(["cp", "-a", str(lower), str(upper)], check=True)
    subprocess.run(["cp", "-a", str(lower), str(result)], check=True)
    (upper / "etc/hosts").unlink()
    shutil.rmtree(upper / "var/lib/stale")
    (upper / "bin/tool").write_text("v2 longer")
    os.chmod(upper / "bin/tool", 0o4755)
    os.chown(upper / "bin/tool", 10, 20)
    (upper / "new/dir").mkdir(parents=True)
    (upper / "new/dir/a").write_text("a")
    os.link(upper / "new/dir/a", upper / "new/b")
    os.mknod(upper / "new/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mkfifo(upper / "new/fifo")
    os.setxattr(upper / "new/b", "user.tag", b"v")

    layer = layer_of(lower, upper)
    listed = names(layer)
    assert "etc/.wh.hosts" in listed and "var/lib/.wh.stale" in listed
    assert "var/lib/stale/file" not in listed and "etc/passwd" not in listed
    # Parents of changes are included so their metadata travels with them.
    assert "var/lib" in listed and "etc" in listed

    apply_tar(io.BytesIO(layer), result, Mode.DELETE)
    assert picture(result) == picture(upper)
    assert (result / "new/b").stat().st_ino == (result / "new/dir/a").stat().st_ino
    assert os.getxattr(result / "new/b", "user.tag") == b"v"


def test_unchanged_trees_give_an_empty_layer(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    build_lower(lower)
    subprocess.run(["cp", "-a", str(lower), str(upper)], check=True)
    assert names(layer_of(lower, upper)) == []


def test_no_lower_is_the_whole_tree(tmp_path: Path) -> None:
    upper, result = tmp_path / "upper", tmp_path / "result"
    build_lower(upper)
    result.mkdir()
    apply_tar(io.BytesIO(layer_of(None, upper)), result, Mode.DELETE)
    assert picture(result) == picture(upper)


def test_overlay_whiteout_devices_count_as_deletions(tmp_path: Path) -> None:
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    build_lower(lower)
    subprocess.run(["cp", "-a", str(lower), str(upper)], check=True)
    (upper / "etc/hosts").unlink()
    os.mknod(upper / "etc/hosts", stat.S_IFCHR, os.makedev(0, 0))
    listed = names(layer_of(lower, upper))
    assert "etc/.wh.hosts" in listed and "etc/hosts" not in listed


@pytest.mark.parametrize("kind", [GZIP, ZSTD, PLAIN])
def test_compressors_round_trip(kind: str) -> None:
    data = os.urandom(1000) * 50
    out = io.BytesIO()
    compressor = Compressor(out, kind)  # type: ignore[arg-type]
    hashing = HashingWriter(compressor)  # type: ignore[arg-type]
    hashing.write(data)
    compressor.close()
    media = {
        GZIP: "application/vnd.oci.image.layer.v1.tar+gzip",
        ZSTD: "application/vnd.oci.image.layer.v1.tar+zstd",
        PLAIN: "application/vnd.oci.image.layer.v1.tar",
    }[kind]
    assert open_layer(io.BytesIO(out.getvalue()), media).read() == data
    assert hashing.size == len(data)
