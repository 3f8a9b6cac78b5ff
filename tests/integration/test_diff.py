"""The Diff service on a real engine: Apply layer blobs onto mounts, Diff two trees into a blob."""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import zstandard
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd import types
from core.api.containerd.services.content import v1 as content
from core.api.containerd.services.diff import v1 as diff
from core.api.containerd.services.snapshots import v1 as snapshots
from core.client import Client
from tests.engine_proc import EngineProcess

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mounts, ownership)"),
]

OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = OCI_TAR + "+gzip"
OCI_ZSTD = OCI_TAR + "+zstd"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_tar(*entries: tuple[str, bytes | None, dict[str, object]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, attrs in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            info.mode = 0o644
            for key, value in attrs.items():
                setattr(info, key, value)
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def d(name: str, **attrs: object) -> tuple[str, None, dict[str, object]]:
    return name, None, {"type": tarfile.DIRTYPE, "mode": 0o755, **attrs}


def f(name: str, data: bytes = b"", **attrs: object) -> tuple[str, bytes, dict[str, object]]:
    return name, data, attrs


BASE = make_tar(
    d("etc/"),
    f("etc/passwd", b"root:x:0:0"),
    f("etc/motd", b"hello"),
    d("opt/"),
    f("opt/old", b"old"),
    ("bin/sh", None, {"type": tarfile.SYMTYPE, "linkname": "busybox"}),
    f("bin/busybox", b"bb", mode=0o4755, uid=3, gid=4),
)
UPPER = make_tar(
    f("etc/.wh.motd"),
    d("opt/"),
    f("opt/.wh..wh..opq"),
    f("opt/new", b"new"),
)


async def put_blob(client: Client, data: bytes, labels: dict[str, str] | None = None) -> str:
    digest = sha(data)
    WA = content.WriteAction
    requests = [
        content.WriteContentRequest(action=WA.WRITE, ref=f"layer-{digest}", offset=0, data=data),
        content.WriteContentRequest(
            action=WA.COMMIT,
            ref=f"layer-{digest}",
            total=len(data),
            expected=digest,
            offset=len(data),
            labels=labels or {},
        ),
    ]
    try:
        async for _ in client.content.write(requests):
            pass
    except GRPCError as exc:
        if exc.status != Status.ALREADY_EXISTS:
            raise
    return digest


def bind(path: Path, *options: str) -> list[types.Mount]:
    return [types.Mount(type="bind", source=str(path), options=[*(options or ("rw",)), "rbind"])]


async def apply(client: Client, data: bytes, media: str, mounts: list[types.Mount]):  # type: ignore[no-untyped-def]
    digest = await put_blob(client, data)
    desc = types.Descriptor(media_type=media, digest=digest, size=len(data))
    resp = await client.diff.apply(diff.ApplyRequest(diff=desc, mounts=mounts))
    return resp.applied


def listing(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes().decode(errors="replace")
    return out


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(
        subprocess.check_output(["mktemp", "-d", "/tmp/ctrdeck-difftest-XXXXXX"], text=True).strip()
    )
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(
    ("media", "pack"),
    [
        (OCI_GZIP, gzip.compress),
        (DOCKER_GZIP, gzip.compress),
        (OCI_ZSTD, lambda b: zstandard.ZstdCompressor().compress(b)),
        (OCI_TAR, lambda b: b),
    ],
)
async def test_apply_onto_bind_mount(client: Client, scratch: Path, media: str, pack) -> None:  # type: ignore[no-untyped-def]
    target = scratch / "rootfs"
    target.mkdir()
    applied = await apply(client, pack(BASE), media, bind(target))
    assert applied.media_type == OCI_TAR
    assert applied.digest == sha(BASE) and applied.size == len(BASE)
    applied = await apply(client, gzip.compress(UPPER), OCI_GZIP, bind(target))
    assert applied.digest == sha(UPPER)
    assert listing(target) == {
        "etc": "dir",
        "etc/passwd": "root:x:0:0",
        "opt": "dir",
        "opt/new": "new",
        "bin": "dir",
        "bin/sh": "-> busybox",
        "bin/busybox": "bb",
    }
    st = (target / "bin/busybox").lstat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o4755, 3, 4)


async def test_apply_errors(client: Client, scratch: Path) -> None:
    target = scratch / "rootfs"
    target.mkdir()
    missing = types.Descriptor(media_type=OCI_GZIP, digest=sha(b"nope"), size=4)
    with pytest.raises(GRPCError) as err:
        await client.diff.apply(diff.ApplyRequest(diff=missing, mounts=bind(target)))
    assert err.value.status == Status.NOT_FOUND

    digest = await put_blob(client, BASE)
    odd = types.Descriptor(media_type="application/x-nope", digest=digest, size=len(BASE))
    with pytest.raises(GRPCError) as err:
        await client.diff.apply(diff.ApplyRequest(diff=odd, mounts=bind(target)))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "application/x-nope" in (err.value.message or "")

    with pytest.raises(GRPCError) as err:
        await apply(client, BASE, OCI_TAR, bind(target, "ro"))
    assert err.value.status == Status.INVALID_ARGUMENT

    # A blob in another namespace is not this namespace's to apply.
    other = client.with_namespace("other")
    with pytest.raises(GRPCError) as err:
        desc = types.Descriptor(media_type=OCI_TAR, digest=digest, size=len(BASE))
        await other.diff.apply(diff.ApplyRequest(diff=desc, mounts=bind(target)))
    assert err.value.status == Status.NOT_FOUND


async def test_diff_id_label_is_checked(client: Client, scratch: Path) -> None:
    target = scratch / "rootfs"
    target.mkdir()
    layer = gzip.compress(make_tar(f("only", b"this")))
    digest = await put_blob(client, layer, {"containerd.io/uncompressed": sha(b"other")})
    desc = types.Descriptor(media_type=OCI_GZIP, digest=digest, size=len(layer))
    with pytest.raises(GRPCError) as err:
        await client.diff.apply(diff.ApplyRequest(diff=desc, mounts=bind(target)))
    assert err.value.status == Status.DATA_LOSS
    assert sha(b"other") in (err.value.message or "")


async def test_hostile_layer_is_refused(client: Client, scratch: Path) -> None:
    target, outside = scratch / "rootfs", scratch / "outside"
    target.mkdir()
    outside.mkdir()
    (outside / "keep").write_text("original")
    hostile = make_tar(
        ("esc", None, {"type": tarfile.SYMTYPE, "linkname": str(outside)}),
        f("esc/keep", b"overwritten"),
        f("esc/evil", b"x"),
    )
    with pytest.raises(GRPCError) as err:
        await apply(client, gzip.compress(hostile), OCI_GZIP, bind(target))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "esc/keep" in (err.value.message or "")
    assert listing(outside) == {"keep": "original"}

    for name in ("/tmp/evil-abs", "../evil-up"):
        with pytest.raises(GRPCError) as err:
            await apply(client, make_tar(f(name, b"x")), OCI_TAR, bind(target))
        assert err.value.status == Status.INVALID_ARGUMENT
    assert not Path("/tmp/evil-abs").exists() and not (scratch / "evil-up").exists()

    with pytest.raises(GRPCError) as err:
        link = ("pw", None, {"type": tarfile.LNKTYPE, "linkname": "/etc/passwd"})
        await apply(client, make_tar(link), OCI_TAR, bind(target))
    assert err.value.status == Status.INVALID_ARGUMENT


async def test_diff_between_two_dirs(client: Client, scratch: Path) -> None:
    lower, upper = scratch / "lower", scratch / "upper"
    lower.mkdir()
    upper.mkdir()
    await apply(client, BASE, OCI_TAR, bind(lower))
    await apply(client, BASE, OCI_TAR, bind(upper))
    await apply(client, UPPER, OCI_TAR, bind(upper))

    async with client.lease() as leased:
        resp = await leased.diff.diff(
            diff.DiffRequest(
                left=bind(lower, "ro"),
                right=bind(upper, "ro"),
                labels={"test.label": "yes"},
            )
        )
        desc = resp.diff
        assert desc is not None and desc.media_type == OCI_GZIP
        infos = []
        async for page in leased.content.list(content.ListContentRequest()):
            infos.extend(page.info)
        info = next(i for i in infos if i.digest == desc.digest)
        assert info.size == desc.size
        assert info.labels["test.label"] == "yes"

        blob = b"".join(
            [
                r.data
                async for r in leased.content.read(content.ReadContentRequest(digest=desc.digest))
            ]
        )
        raw = gzip.decompress(blob)
        assert info.labels["containerd.io/uncompressed"] == sha(raw)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            names = set(tar.getnames())
        assert {"etc/.wh.motd", "opt/.wh.old", "opt/new"} <= names
        assert "etc/passwd" not in names

        # The new blob applied onto the lower tree gives the upper tree.
        target = scratch / "replay"
        shutil.copytree(lower, target, symlinks=True)
        applied = await leased.diff.apply(diff.ApplyRequest(diff=desc, mounts=bind(target)))
        assert applied.applied.digest == sha(raw)
        assert listing(target) == listing(upper)

        zresp = await leased.diff.diff(
            diff.DiffRequest(left=[], right=bind(upper, "ro"), media_type=OCI_ZSTD)
        )
        assert zresp.diff.media_type == OCI_ZSTD
    with pytest.raises(GRPCError) as err:
        await client.diff.diff(
            diff.DiffRequest(left=[], right=bind(upper), media_type="application/x-nope")
        )
    assert err.value.status == Status.INVALID_ARGUMENT


async def unpack_chain(client: Client, snapshotter: str, layers: list[bytes]) -> str:
    """The unpack ctr does: Prepare, Apply, Commit per layer; returns the top snapshot."""
    parent = ""
    for i, layer in enumerate(layers):
        key = f"extract-{i}"
        prepared = await client.snapshots.prepare(
            snapshots.PrepareSnapshotRequest(snapshotter=snapshotter, key=key, parent=parent)
        )
        applied = await apply(client, gzip.compress(layer), OCI_GZIP, prepared.mounts)
        assert applied.digest == sha(layer)
        name = f"layer-{i}"
        await client.snapshots.commit(
            snapshots.CommitSnapshotRequest(snapshotter=snapshotter, name=name, key=key)
        )
        parent = name
    return parent


@pytest.mark.parametrize("snapshotter", ["overlayfs", "native"])
async def test_unpack_chain_into_snapshots(client: Client, snapshotter: str) -> None:
    sn = client.snapshots
    async with client.lease() as leased:
        top = await unpack_chain(leased, snapshotter, [BASE, UPPER])
        view = await sn.view(
            snapshots.ViewSnapshotRequest(snapshotter=snapshotter, key="view", parent=top)
        )
        where = Path(subprocess.check_output(["mktemp", "-d"], text=True).strip())
        try:
            for m in view.mounts:
                opts = ",".join(m.options)
                subprocess.run(
                    ["mount", "-t", m.type, "-o", opts, m.source, str(where)], check=True
                )
            try:
                assert listing(where) == {
                    "etc": "dir",
                    "etc/passwd": "root:x:0:0",
                    "opt": "dir",
                    "opt/new": "new",
                    "bin": "dir",
                    "bin/sh": "-> busybox",
                    "bin/busybox": "bb",
                }
            finally:
                subprocess.run(["umount", str(where)], check=True)
        finally:
            where.rmdir()
        await sn.remove(snapshots.RemoveSnapshotRequest(snapshotter=snapshotter, key="view"))


async def test_ctr_snapshots_diff(engine: EngineProcess, client: Client, ctr_bin: str) -> None:
    """`ctr snapshots diff` views both snapshots and calls Diff; it prints the gzip layer."""
    async with client.lease() as leased:
        top = await unpack_chain(leased, "overlayfs", [BASE, UPPER])
        proc = subprocess.run(
            [ctr_bin, "--address", str(engine.address), "snapshots", "diff", top],
            capture_output=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr.decode()
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(proc.stdout))) as tar:
            names = set(tar.getnames())
        assert names == {"etc", "etc/.wh.motd", "opt", "opt/new", "opt/.wh.old"}
