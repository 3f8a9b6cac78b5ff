"""A pull's progress stream: byte counts are spaced out, but an urgent change cuts the wait short.

A caller of `Puller.pull` joins a running job (put in place by hand here, so no registry is
involved) and reads its messages. The interval between byte-count messages is set to an hour:
a state change, a phase change and the end of the pull must still arrive, each in its own
message, without waiting for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from core.descriptor import Descriptor
from core.images import pull as pull_module
from core.images.progress import DOWNLOADED, LayerProgress, PullJob, PullRequest
from core.images.pull import Puller
from core.metadata.images import Image

DIGEST = "sha256:" + "a" * 64
NS = "default"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"


async def test_an_urgent_change_is_sent_without_waiting_out_the_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pull_module, "PROGRESS_INTERVAL", 3600.0)
    request = PullRequest(ref="127.0.0.1:5000/app:1")
    puller = Puller(None, None, None, None, "")  # type: ignore[arg-type]
    job = PullJob(NS, request)
    job.layers[DIGEST] = LayerProgress(DIGEST, "application/vnd.oci.image.layer.v1.tar", 100)
    job.task = asyncio.get_running_loop().create_future()  # type: ignore[assignment]
    puller._jobs[(NS, request)] = job
    stream = puller.pull(NS, request)

    async def next_message() -> object:
        return await asyncio.wait_for(anext(stream), 30)

    async def reading_after(change: Callable[[], None]) -> asyncio.Future[object]:
        """The next message, read while `change` happens (the caller already waiting)."""
        reading = asyncio.ensure_future(next_message())
        for _ in range(10):
            await asyncio.sleep(0)
        change()
        for _ in range(10):
            await asyncio.sleep(0)
        return reading

    first = await (await reading_after(lambda: job.set_phase("fetching")))
    assert first.phase == "fetching"  # type: ignore[attr-defined]
    # A byte count: its message waits out the interval, so the state change that comes
    # meanwhile is sent at once, carrying both.
    reading = await reading_after(lambda: job.set_offset(DIGEST, 10))
    assert not reading.done()
    job.set_state(DIGEST, DOWNLOADED)
    second = await reading
    assert second.layers[0].state == DOWNLOADED  # type: ignore[attr-defined]
    assert second.layers[0].offset == 100  # type: ignore[attr-defined]
    # Likewise the end of the pull.
    reading = await reading_after(lambda: job.set_applied(DIGEST, 50))
    assert not reading.done()
    job.image = Image(request.ref, Descriptor(MANIFEST, DIGEST, 100))
    job.phase, job.done = "done", True
    job.changed(urgent=True)
    last = await reading
    assert last.phase == "done"  # type: ignore[attr-defined]
    with pytest.raises(StopAsyncIteration):
        await next_message()
