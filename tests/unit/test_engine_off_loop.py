"""The engine's heavy chores leave its event loop free.

On a real engine in this process (its own root under /tmp, real SQLite and real
blob files): garbage collection marks in a worker thread and unlinks blob files
in one, and the engine answers a gRPC call while the unlink is in progress; a blob that
something claims during the sweep (a Content.Write pin, a pull reusing it, a
commit starting) stays; a write landing during the mark sends the collection
back to marking, so it never removes what that write made reachable. The
content-bytes gauge is counted once and then kept by commits and deletes, so a
scrape never walks the blob directory, and a scrape reads the tasks' cgroup
files in a worker. A registry client builds an HTTPS
endpoint's TLS context in a worker thread.

How long the loop stalls is measured by `bench/bench_gc.py`, not asserted here.
"""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from core.api.io.containerd.cgroups.v2 import MemoryStat
from core.api.io.containerd.cgroups.v2 import Metrics as V2Metrics
from core.client import Client
from core.config import from_dict
from core.content.store import ContentStore
from core.descriptor import Descriptor
from core.engine import Engine
from core.errors import Unavailable
from core.images import hosts
from core.images.hosts import Hosts
from core.images.registry import RegistryClient, RetryPolicy
from core.metadata.images import Image
from core.runtime.cgroup_sample import V2_URL, Sample
from core.server import EngineServer, engine_metrics

NAMESPACE = "offloop"
SYSTEM_CA = "/etc/ssl/certs/ca-certificates.crt"


def blob(i: int) -> tuple[bytes, str]:
    data = f"off-loop blob {i}\n".encode()
    return data, "sha256:" + hashlib.sha256(data).hexdigest()


def store_blob(engine: Engine, i: int, *, owned: bool = True) -> str:
    data, digest = blob(i)
    writer = engine.content.open_writer(f"offloop-{i}", len(data), digest)
    writer.write(data)
    writer.commit(len(data), digest)
    if owned:
        engine.metadata.content.add(NAMESPACE, digest, len(data), {}, None)
    return digest


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-offloop-", dir="/tmp"))
    built = Engine(
        from_dict({"version": 2, "root": str(base / "root"), "state": str(base / "state")})
    )
    try:
        await built.start()
        yield built
    finally:
        await built.stop()
        built.close()
        shutil.rmtree(base, ignore_errors=True)


class _Hooked:
    """The sweep's lock, calling `after` once when a worker releases it after an unlink."""

    def __init__(self, inner: Any, after: Callable[[], None]) -> None:
        self.inner = inner
        self.after = after
        self.unlinked = False
        self.fired = False

    def __enter__(self) -> None:
        self.inner.acquire()

    def __exit__(self, *exc: object) -> None:
        self.inner.release()
        worker = threading.current_thread() is not threading.main_thread()
        if worker and self.unlinked and not self.fired:
            self.fired = True
            self.after()


def after_first_unlink(
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
    on_loop: Callable[[], Coroutine[Any, Any, None] | None],
) -> list[threading.Thread]:
    """Run `on_loop` on the engine's loop once the sweep has unlinked its first blob.

    The sweep then waits (in whatever thread it runs) until the loop has run
    `on_loop` (to its end, if it is a coroutine); a sweep running on the loop
    itself would wait for ever. Returns the threads every unlink ran in.
    """
    loop = asyncio.get_running_loop()
    threads: list[threading.Thread] = []
    answered = threading.Event()
    delete = engine.content.delete

    running: list[asyncio.Task[None]] = []

    async def finish(work: Coroutine[Any, Any, None]) -> None:
        await work
        answered.set()

    def run_on_loop() -> None:
        work = on_loop()
        if work is None:
            answered.set()
        else:
            running.append(loop.create_task(finish(work)))

    def wait_for_the_loop() -> None:
        loop.call_soon_threadsafe(run_on_loop)
        assert answered.wait(30), "the loop did not run while the sweep was unlinking"

    hooked = _Hooked(engine.gc.pins.lock, wait_for_the_loop)

    def deleting(digest: str) -> None:
        threads.append(threading.current_thread())
        delete(digest)
        hooked.unlinked = True

    monkeypatch.setattr(engine.content, "delete", deleting)
    monkeypatch.setattr(engine.gc.pins, "lock", hooked)
    return threads


@pytest.fixture
async def served() -> AsyncIterator[tuple[EngineServer, Client]]:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-offloop-", dir="/tmp"))
    config = from_dict(
        {
            "version": 2,
            "root": str(base / "root"),
            "state": str(base / "state"),
            "grpc": {"address": str(base / "state" / "ctrdeck.sock")},
        }
    )
    server = EngineServer(config)
    client = Client(config.grpc.address, NAMESPACE)
    try:
        await server.start()
        yield server, client
    finally:
        client.close()
        await server.stop()
        shutil.rmtree(base, ignore_errors=True)


async def test_the_sweep_unlinks_in_a_worker_while_the_engine_answers(
    served: tuple[EngineServer, Client], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client = served
    engine = server.engine
    digests = [store_blob(engine, i) for i in range(50)]
    seen: list[str] = []

    async def a_call() -> None:
        # A real gRPC call over the engine's socket, answered mid-sweep.
        seen.append((await client.server_version()).version)

    threads = after_first_unlink(engine, monkeypatch, a_call)
    marked_in: list[threading.Thread] = []
    mark = engine.gc.marker.mark

    def marking(md: Any) -> Any:
        marked_in.append(threading.current_thread())
        return mark(md)

    monkeypatch.setattr(engine.gc.marker, "mark", marking)

    result = await engine.gc.collect(wait=True)

    assert result is not None and len(result.content_removed) == 50
    assert marked_in and threading.main_thread() not in marked_in
    assert len(threads) == 50 and threading.main_thread() not in threads
    assert seen, "the engine answered a call in the middle of the sweep"
    assert not any(engine.content.exists(d) for d in digests)


async def test_a_blob_claimed_during_the_sweep_stays(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests = [store_blob(engine, i, owned=False) for i in range(20)]
    claimed: list[str] = []

    def claim() -> None:
        # A Content.Write that found a blob stored, and a pull that reuses one.
        pinned, reused = [d for d in digests if engine.content.exists(d)][:2]
        claimed.extend([pinned, reused])
        assert engine.gc.pins.pin(pinned)
        size = engine.content.info(reused).size
        desc = Descriptor("application/octet-stream", reused, size)
        assert engine.blobs.own(NAMESPACE, None, desc, {})

    after_first_unlink(engine, monkeypatch, claim)
    removed = await engine.gc.sweep_blobs()

    pinned, reused = claimed
    assert removed == 18
    assert engine.content.exists(pinned) and engine.content.exists(reused)
    assert engine.metadata.content.has(NAMESPACE, reused)
    engine.gc.pins.unpin(pinned)
    assert await engine.gc.sweep_blobs() == 1 and not engine.content.exists(pinned)


async def test_a_commit_starting_stops_the_sweep_until_it_is_done(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests = [store_blob(engine, i, owned=False) for i in range(20)]

    def commit_starts() -> None:
        engine.gc.pins.commit_started()

    after_first_unlink(engine, monkeypatch, commit_starts)
    removed = await engine.gc.sweep_blobs()

    assert removed == 1, "the sweep stopped at the commit"
    assert sum(engine.content.exists(d) for d in digests) == 19
    engine.gc.pins.commit_finished()
    assert await engine.gc.sweep_blobs() == 19


async def test_a_write_during_the_mark_sends_it_back_to_marking(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = store_blob(engine, 1)
    loop = asyncio.get_running_loop()
    mark = engine.gc.marker.mark
    marks = 0

    def image_now() -> None:
        # Made while the first mark reads: it makes `kept` reachable.
        engine.metadata.images.create(
            NAMESPACE, Image(name="late:1", target=Descriptor("application/octet-stream", kept, 16))
        )

    def marking(md: Any) -> Any:
        nonlocal marks
        marks += 1
        plan = mark(md)
        if marks == 1:
            done = threading.Event()
            loop.call_soon_threadsafe(lambda: (image_now(), done.set()))
            assert done.wait(30)
        return plan

    monkeypatch.setattr(engine.gc.marker, "mark", marking)
    result = await engine.gc.collect(wait=True)

    assert marks == 2
    assert result is not None and result.content_removed == []
    assert engine.metadata.content.has(NAMESPACE, kept) and engine.content.exists(kept)


def test_the_byte_count_is_kept_without_walking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ContentStore(tmp_path / "content")
    data, digest = blob(0)
    writer = store.open_writer("first", len(data), digest)
    writer.write(data)
    writer.commit(len(data), digest)
    assert store.total_bytes() == len(data)

    def no_walk() -> Any:
        raise AssertionError("total_bytes walked the blob directory again")

    monkeypatch.setattr(store, "walk", no_walk)
    more, second = b"x" * 1000, "sha256:" + hashlib.sha256(b"x" * 1000).hexdigest()
    writer = store.open_writer("second", len(more), second)
    writer.write(more)
    writer.commit(len(more), second)
    assert store.total_bytes() == len(data) + len(more)
    store.delete(digest)
    assert store.total_bytes() == len(more)


async def test_tls_settings_are_built_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_in: list[threading.Thread] = []
    ssl_context = hosts.Endpoint.ssl_context

    def building(self: hosts.Endpoint) -> Any:
        built_in.append(threading.current_thread())
        return ssl_context(self)

    monkeypatch.setattr(hosts.Endpoint, "ssl_context", building)
    host = tmp_path / "certs.d" / "127.0.0.1:1"
    host.mkdir(parents=True)
    (host / "hosts.toml").write_text(
        f'server = "https://127.0.0.1:1"\n[host."https://127.0.0.1:1"]\nca = "{SYSTEM_CA}"\n'
    )
    client = RegistryClient(
        Hosts(config_path=str(tmp_path / "certs.d")), retry=RetryPolicy(attempts=1)
    )
    async with client:
        with pytest.raises(Unavailable):
            await client.resolve("127.0.0.1:1/app:v1")
    assert built_in and threading.main_thread() not in built_in


async def test_a_scrape_reads_cgroup_files_in_a_worker(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    readers: list[threading.Thread] = []

    class Cgroup:
        def sample(self) -> Sample:
            readers.append(threading.current_thread())
            return Sample(V2_URL, bytes(V2Metrics(memory=MemoryStat(usage=4096))), 4096, 0, 0, 0)

    class Task:
        namespace, id, cgroup = NAMESPACE, "scraped", Cgroup()

    monkeypatch.setattr(engine.tasks, "list", lambda: [Task()])
    metrics = engine_metrics(engine)
    body = await metrics.scrape()
    assert readers and threading.main_thread() not in readers
    assert (
        f'container_memory_usage_bytes{{container="scraped",namespace="{NAMESPACE}"}} 4096.0'
        in body.decode()
    )
