"""`ctrdeck record` against our engine and against Debian's containerd.

The recorder runs as its own process; meanwhile `ctr` pulls an image and
creates and runs containers in two namespaces. The file (read while it grows,
and again after a clean stop) holds a snapshot at the start, the rows and
events that followed in both namespaces (`--all-namespaces`), and the task's
metrics; played back, it shows the containers `ctr` made.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.engine_proc import ROOT, Running, containerd, ctrdeck, terminate
from tests.helpers import ctr
from tests.registry import Registry
from tests.tui.support import chatty_image
from tui import recording
from tui.player import Player
from tui.state import NodeState

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def our_engine() -> Iterator[Running]:
    with ctrdeck() as running:
        yield running


@contextlib.contextmanager
def debian_containerd() -> Iterator[Running]:
    if shutil.which("containerd") is None:
        pytest.skip("Debian's containerd is not installed")
    with containerd() as running:
        yield running


def wait_for(path: Path, predicate: Callable[[recording.Recording], bool]) -> recording.Recording:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if path.exists() and path.stat().st_size:
            rec = recording.read(path)
            if predicate(rec):
                return rec
        time.sleep(0.2)
    raise AssertionError(f"the recording never got there: {path}")


def kinds(rec: recording.Recording, kind: str, ns: str = "") -> list[dict]:
    return [r for r in rec.records if r["k"] == kind and (not ns or r.get("ns") == ns)]


@pytest.mark.parametrize("engine", [our_engine, debian_containerd], ids=["ctrdeck", "containerd"])
def test_record_a_node_while_ctr_works_on_it(
    engine: Callable[[], contextlib.AbstractContextManager[Running]],
    registry: Registry,
    tmp_path: Path,
) -> None:
    ref = registry.push(chatty_image(), "tools/recorded", "1")
    path = tmp_path / "node.rec"
    with engine() as running:
        address = str(running.address)
        ctr(address, "images", "pull", "--plain-http", ref, namespace="other")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tui.cli", "record", "-a", address, "-A", "-o", str(path)],
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            wait_for(
                path, lambda rec: {r["ns"] for r in kinds(rec, "snap")} >= {"default", "other"}
            )
            ctr(address, "images", "pull", "--plain-http", ref)
            ctr(address, "run", "-d", ref, "rec1")
            ctr(address, "containers", "create", ref, "rec2", namespace="other")
            rec = wait_for(
                path,
                lambda rec: (
                    any(r.get("key") == "rec2" for r in kinds(rec, "row", "other"))
                    and any(
                        "cpu" in r.get("set", {}) or "memory" in r.get("set", {})
                        for r in kinds(rec, "row", "default")
                    )
                ),
            )
        finally:
            ctr(address, "task", "kill", "-s", "SIGKILL", "rec1", check=False)
            time.sleep(0.5)
            ctr(address, "task", "rm", "-f", "rec1", check=False)
            ctr(address, "containers", "rm", "rec1", check=False)
            ctr(address, "containers", "rm", "rec2", namespace="other", check=False)
            proc.send_signal(signal.SIGINT)
            try:
                code = proc.wait(20)
            except subprocess.TimeoutExpired:
                code = terminate(proc)
        out, err = proc.communicate()
    assert code == 0, err
    assert "Traceback" not in err
    assert f"records in {path}" in out
    final = recording.read(path)
    assert final.cut == ""
    assert len(final.records) >= len(rec.records)
    topics = [r["line"]["topic"] for r in kinds(final, "log")]
    assert "/containers/create" in topics and "/tasks/start" in topics

    state = NodeState("default")
    player = Player(final, state, on_log=lambda line: None, on_reset_log=lambda lines: None)
    created = [r for r in kinds(final, "row", "other") if r.get("key") == "rec2" and "row" in r]
    player.seek(float(created[0]["t"]))
    assert state.containers["rec1"].status == "RUNNING"
    assert ref in state.images
    player.show_namespace("other")
    assert "rec2" in state.containers


def test_record_refuses_bad_options(tmp_path: Path) -> None:
    from tests.engine_proc import run_cli

    result = run_cli("record", "-a", "/nonexistent.sock", "--duration", "soon")
    assert result.returncode == 2 and "--duration" in result.stderr
    bad = tmp_path / "bad.rec"
    bad.write_bytes(b"not a recording")
    result = run_cli("record", "-a", "/nonexistent.sock", "-o", str(bad), "--duration", "1s")
    assert result.returncode == 2 and "not a ctrdeck recording" in result.stderr
    assert bad.read_bytes() == b"not a recording"
