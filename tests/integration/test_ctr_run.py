"""Debian's `ctr` runs containers on the engine: `run`, `run -d`, and `task ...`.

The image is built here from the host's busybox (one uncompressed OCI layer)
and brought in with `ctr images import`, which unpacks it through Snapshots
and Diff; `ctr run` then creates the container, its snapshot and its task
exactly as it would against containerd.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import pty
import select
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.client import Client
from core.runtime.tasks import TASK_DIR
from tests.engine_proc import EngineProcess
from tests.helpers import ctr
from tests.integration.test_tasks import (
    cleanup_namespace,
    make_rootfs,
    monitors_of,
    mounts_under,
    remove_namespace_cgroups,
)

IMAGE = "docker.io/library/ctrdeck-busybox:test"
NS = "ctrrun"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="running containers needs root"),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox-static is not installed"),
    pytest.mark.skipif(shutil.which("ctr") is None, reason="ctr (containerd package) is missing"),
]


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def build_image(rootfs: Path, out: Path) -> None:
    """An OCI image archive with one uncompressed layer holding `rootfs`."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer_tar:
        for name in sorted(os.listdir(rootfs)):
            layer_tar.add(rootfs / name, arcname=name)
    layer = layer_buf.getvalue()
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": [_digest(layer)]},
        }
    ).encode()
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": _digest(config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": _digest(layer),
                    "size": len(layer),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": _digest(manifest),
                    "size": len(manifest),
                    "annotations": {"io.containerd.image.name": IMAGE},
                    "platform": {"architecture": "amd64", "os": "linux"},
                }
            ],
        }
    ).encode()
    with tarfile.open(out, "w") as archive:
        entries = [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)]
        entries += [(f"blobs/sha256/{_digest(b)[7:]}", b) for b in (layer, config, manifest)]
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def image_engine() -> Iterator[EngineProcess]:
    """An engine with the busybox image imported into namespace `ctrrun`."""
    if os.uname().machine != "x86_64":
        pytest.skip("the test image is built for linux/amd64")
    work = Path(tempfile.mkdtemp(prefix="ctrdeck-ctrrun-", dir="/tmp"))
    engine = EngineProcess().start()
    try:
        build_image(make_rootfs(work), work / "image.tar")
        ctr(engine.address, "images", "import", str(work / "image.tar"), namespace=NS)
        yield engine
    finally:
        shutil.rmtree(work, ignore_errors=True)
        engine.stop(cleanup=False)
        remove_namespace_cgroups(NS)
        leftovers = mounts_under(engine.base)
        shutil.rmtree(engine.base, ignore_errors=True)
        assert leftovers == []


@pytest.fixture
async def tidy(image_engine: EngineProcess) -> AsyncIterator[EngineProcess]:
    """Removes every task and container the test left in the namespace."""
    try:
        yield image_engine
    finally:
        c = Client(str(image_engine.address), NS)
        with contextlib.suppress(Exception):
            await cleanup_namespace(c)
        c.close()


def run(engine: EngineProcess, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return ctr(engine.address, *args, namespace=NS, check=check)


def task_status(engine: EngineProcess, cid: str) -> str:
    for line in run(engine, "task", "ls").stdout.splitlines()[1:]:
        words = line.split()
        if words and words[0] == cid:
            return words[2]
    return ""


def wait_for_status(engine: EngineProcess, cid: str, status: str, tries: int = 400) -> None:
    for _ in range(tries):
        if task_status(engine, cid) == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"task {cid} never became {status}")


def test_run_rm_prints_hello(tidy: EngineProcess) -> None:
    done = run(tidy, "run", "--rm", IMAGE, "t1", "echo", "hello")
    assert done.stdout == "hello\n"
    assert task_status(tidy, "t1") == ""
    assert "t1" not in run(tidy, "containers", "ls").stdout
    assert mounts_under(tidy.state / TASK_DIR) == []
    assert monitors_of(tidy.state) == []


def test_run_rm_passes_exit_code(tidy: EngineProcess) -> None:
    done = run(tidy, "run", "--rm", IMAGE, "t2", "sh", "-c", "echo out; echo err >&2; exit 3",
               check=False)  # fmt: skip
    assert done.returncode == 3
    assert done.stdout == "out\n"
    assert "err" in done.stderr


def test_task_commands(tidy: EngineProcess) -> None:
    script = 'trap "exit 9" TERM; sleep 1000 & wait'
    run(tidy, "run", "-d", IMAGE, "d1", "sh", "-c", script)
    assert task_status(tidy, "d1") == "RUNNING"
    run(tidy, "task", "pause", "d1")
    assert task_status(tidy, "d1") == "PAUSED"
    run(tidy, "task", "resume", "d1")
    assert task_status(tidy, "d1") == "RUNNING"

    execd = run(tidy, "task", "exec", "--exec-id", "second", "d1", "sh", "-c",
                "echo from-exec; exit 4", check=False)  # fmt: skip
    assert (execd.returncode, execd.stdout) == (4, "from-exec\n")

    metrics = run(tidy, "task", "metrics", "d1").stdout
    assert "memory.usage_in_bytes" in metrics and "cpuacct.usage" in metrics
    usage = next(line.split()[1] for line in metrics.splitlines() if "usage_in_bytes" in line)
    assert int(usage) > 0
    pids = run(tidy, "task", "ps", "d1").stdout
    assert len(pids.splitlines()) >= 2

    run(tidy, "task", "kill", "-s", "SIGTERM", "d1")
    wait_for_status(tidy, "d1", "STOPPED")
    deleted = run(tidy, "task", "delete", "d1")
    assert "exit code 9" in deleted.stderr
    assert task_status(tidy, "d1") == ""
    run(tidy, "containers", "rm", "d1")


def test_task_start_on_created_container(tidy: EngineProcess) -> None:
    run(tidy, "containers", "create", IMAGE, "c1", "sleep", "1000")
    run(tidy, "task", "start", "-d", "c1")
    assert task_status(tidy, "c1") == "RUNNING"
    refused = run(tidy, "containers", "rm", "c1", check=False)
    assert refused.returncode != 0
    run(tidy, "task", "kill", "-s", "SIGKILL", "c1")
    run(tidy, "task", "delete", "-f", "c1", check=False)
    run(tidy, "containers", "rm", "c1")


@pytest.mark.parametrize(
    ("flags", "binary"),
    [(["--runc-binary", "crun"], "crun"), (["--runtime", "io.containerd.runsc.v1"], "runsc")],
)
def test_run_with_other_runtimes(tidy: EngineProcess, flags: list[str], binary: str) -> None:
    if shutil.which(binary) is None:
        pytest.skip(f"{binary} is not installed (Debian package {binary})")
    done = run(tidy, "run", "--rm", *flags, IMAGE, f"rt-{binary}", "echo", f"hi from {binary}")
    assert done.stdout == f"hi from {binary}\n"


def test_run_with_terminal(tidy: EngineProcess) -> None:
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(
            ["ctr", "--address", str(tidy.address), "--namespace", NS, "run", "--rm", "-t",
             IMAGE, "tty1", "sh", "-c", "tty; exit 5"],
            stdin=secondary, stdout=secondary, stderr=secondary, start_new_session=True,
        )  # fmt: skip
        os.close(secondary)
        secondary = -1
        output = b""
        while True:
            ready, _, _ = select.select([primary], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        assert proc.wait(timeout=30) == 5
        assert b"/dev/pts/" in output
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
