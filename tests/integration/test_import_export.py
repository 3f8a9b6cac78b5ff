"""Import, export, push, tag and rm, through `ctrdeck images ...` and Debian's containerd.

An image exported by ctrdeck imports into a real containerd with `ctr image import`; one
exported by containerd (`ctr image export`) imports into ctrdeck, as an OCI layout and as a
plain docker-archive; a pushed image pulls back with the same digest and tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from core.images.handlers import chain_ids
from tests.engine_proc import ROOT, EngineProcess, containerd
from tests.helpers import ctr
from tests.integration.test_pull import expected_of, pull, snapshot_keys, view_tree
from tests.registry import Registry, layered_image, multiplatform_image

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root"),
    pytest.mark.skipif(shutil.which("containerd") is None, reason="Debian's containerd needed"),
]


def ctrdeck(engine: EngineProcess, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", *args[:2], "-a", str(engine.address), *args[2:]],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ctrdeck-archive-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_export_imports_into_containerd(
    engine: EngineProcess, client: Client, registry: Registry, workdir: Path, ctr_bin: str
) -> None:
    layered = registry.push(layered_image(), "test/layered")
    multi = registry.push(multiplatform_image(), "test/multi")
    for ref in (layered, multi):
        await pull(client, ref)
    archive = workdir / "out.tar"
    ctrdeck(engine, "images", "export", str(archive), layered, multi)
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert {"index.json", "manifest.json", "oci-layout"} <= set(names)

    with containerd() as cd:
        ctr(cd.address, "image", "import", str(archive), timeout=120)
        listed = ctr(cd.address, "images", "ls").stdout
        assert layered in listed and multi in listed
        checked = ctr(cd.address, "images", "check").stdout.splitlines()[1:]
        assert len(checked) == 2 and all("complete" in line for line in checked)
        chain = chain_ids([layer.diff_id for layer in layered_image().images[0].layers])
        assert chain[-1] in ctr(cd.address, "snapshots", "ls").stdout


async def test_containerd_export_imports_into_ctrdeck(
    engine: EngineProcess, client: Client, registry: Registry, workdir: Path, ctr_bin: str
) -> None:
    layered = registry.push(layered_image(), "test/layered")
    multi = registry.push(multiplatform_image(), "test/multi")
    archive = workdir / "from-containerd.tar"
    with containerd() as cd:
        for ref in (layered, multi):
            ctr(cd.address, "image", "pull", "--plain-http", ref, timeout=120)
        ctr(cd.address, "image", "export", str(archive), layered, multi)

    out = ctrdeck(engine, "images", "import", str(archive)).stdout
    assert f"{layered}: {layered_image().descriptor.digest}" in out
    assert f"{multi}: {multiplatform_image().descriptor.digest}" in out
    want = layered_image().images[0]
    chain = chain_ids([layer.diff_id for layer in want.layers])
    assert await view_tree(client, "overlayfs", chain[-1]) == expected_of(want.expected_tree())

    # The same archive without its OCI layout is a docker-archive: manifest.json only.
    docker = workdir / "docker.tar"
    with tarfile.open(archive) as src, tarfile.open(docker, "w") as dst:
        for member in src.getmembers():
            if member.name in ("index.json", "oci-layout"):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)
    for image in (await client.images.list(images_api.ListImagesRequest())).images:
        await client.images.delete(images_api.DeleteImageRequest(name=image.name, sync=True))
    assert await snapshot_keys(client, "overlayfs") == []
    out = ctrdeck(engine, "images", "import", str(docker)).stdout
    assert layered in out
    got = await client.images.get(images_api.GetImageRequest(name=layered))
    assert got.image is not None and got.image.target is not None
    assert got.image.target.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert await view_tree(client, "overlayfs", chain[-1]) == expected_of(want.expected_tree())


async def test_push_tag_rm_and_pull_back(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    layered = registry.push(layered_image(), "test/layered")
    await pull(client, layered)
    pushed = f"{registry.host}/test/pushed:v1"
    ctrdeck(engine, "images", "tag", layered, "local/copy:1")
    ctrdeck(engine, "images", "push", "--plain-http", "local/copy:1", pushed)
    ctrdeck(engine, "images", "rm", "--sync", layered, "local/copy:1")
    assert (await client.images.list(images_api.ListImagesRequest())).images == []
    assert await snapshot_keys(client, "overlayfs") == []

    image, _ = await pull(client, pushed)
    assert image.target is not None and image.target.digest == layered_image().descriptor.digest
    want = layered_image().images[0]
    chain = chain_ids([layer.diff_id for layer in want.layers])
    assert await view_tree(client, "overlayfs", chain[-1]) == expected_of(want.expected_tree())

    # An index pushes whole when every platform is present, else one platform at a time.
    multi = registry.push(multiplatform_image(), "test/multi")
    await pull(client, multi)
    refused = subprocess.run(
        [sys.executable, "-m", "tui.cli", "images", "push", "-a", str(engine.address),
         "--plain-http", multi, f"{registry.host}/test/multi-copy:v1"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert refused.returncode == 1 and "--platform" in refused.stderr
    ctrdeck(
        engine, "images", "push", "--plain-http", "--platform", "linux/amd64", multi,
        f"{registry.host}/test/multi-copy:v1",
    )  # fmt: skip
    amd64, _ = await pull(client, f"{registry.host}/test/multi-copy:v1")
    assert amd64.target is not None
    assert amd64.target.digest == multiplatform_image().image_for("amd64").descriptor.digest


def test_export_of_a_missing_image_fails_cleanly(engine: EngineProcess, workdir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tui.cli", "images", "export", "-a", str(engine.address),
         str(workdir / "x.tar"), "nope:latest"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "not found" in done.stderr
    assert not (workdir / "x.tar").exists()
    assert list(workdir.iterdir()) == []
