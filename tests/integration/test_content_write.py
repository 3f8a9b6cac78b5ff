"""Content.Write as ctr speaks it: offsets, resume after a client goes away,
verified atomic commits, and nothing visible before a commit succeeds."""

from __future__ import annotations

import asyncio
import os

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd.services.content import v1 as api
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.helpers import sha

WA = api.WriteAction


async def _listed(client: Client) -> list[str]:
    out = []
    async for resp in client.content.list(api.ListContentRequest()):
        out.extend(i.digest for i in resp.info)
    return out


async def _stream(
    client: Client, requests: list[api.WriteContentRequest]
) -> list[api.WriteContentResponse]:
    return [r async for r in client.content.write(requests)]


async def test_write_at_offsets_and_commit(client: Client) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    ref, digest = "layer-offsets", sha(data)
    half = len(data) // 2
    resps = await _stream(
        client,
        [
            api.WriteContentRequest(action=WA.STAT, ref=ref, total=len(data), expected=digest),
            api.WriteContentRequest(action=WA.WRITE, ref=ref, offset=0, data=data[:half]),
            api.WriteContentRequest(action=WA.WRITE, ref=ref, offset=half, data=data[half:]),
            api.WriteContentRequest(
                action=WA.COMMIT, ref=ref, total=len(data), expected=digest, offset=len(data)
            ),
        ],
    )
    assert [r.action for r in resps] == [WA.STAT, WA.WRITE, WA.WRITE, WA.COMMIT]
    assert resps[0].offset == 0 and resps[0].total == len(data)
    assert resps[0].digest == sha(b"")
    assert resps[1].offset == half
    assert resps[-1].digest == digest
    assert digest in await _listed(client)
    info = await client.content.info(api.InfoRequest(digest=digest))
    assert info.info.size == len(data)
    got = b"".join(
        [r.data async for r in client.content.read(api.ReadContentRequest(digest=digest))]
    )
    assert got == data


async def test_write_offset_mismatch_is_out_of_range(client: Client) -> None:
    with pytest.raises(GRPCError) as err:
        await _stream(
            client,
            [
                api.WriteContentRequest(action=WA.STAT, ref="bad-offset", total=10),
                api.WriteContentRequest(action=WA.WRITE, ref="bad-offset", offset=5, data=b"x"),
            ],
        )
    assert err.value.status == Status.OUT_OF_RANGE


async def test_resume_after_writer_disconnects(engine: EngineProcess, client: Client) -> None:
    data = os.urandom(2 * 1024 * 1024)
    ref, digest = "layer-resume", sha(data)
    half = len(data) // 2
    queue: asyncio.Queue[api.WriteContentRequest] = asyncio.Queue()
    acked = asyncio.Event()

    async def requests():  # type: ignore[no-untyped-def]
        while True:
            yield await queue.get()

    async def first_writer() -> None:
        async for resp in client.content.write(requests()):
            if resp.action == WA.WRITE:
                acked.set()

    await queue.put(
        api.WriteContentRequest(action=WA.STAT, ref=ref, total=len(data), expected=digest)
    )
    await queue.put(api.WriteContentRequest(action=WA.WRITE, ref=ref, offset=0, data=data[:half]))
    task = asyncio.create_task(first_writer())
    await asyncio.wait_for(acked.wait(), 10)
    task.cancel()  # the client goes away without committing
    await asyncio.gather(task, return_exceptions=True)

    status = None
    for _ in range(100):
        try:
            status = (await client.content.status(api.StatusRequest(ref=ref))).status
            break
        except GRPCError:
            await asyncio.sleep(0.05)
    assert status is not None and status.offset == half and status.expected == digest
    statuses = await client.content.list_statuses(api.ListStatusesRequest(filters=[""]))
    assert ref in [s.ref for s in statuses.statuses]
    assert digest not in await _listed(client)

    for _ in range(100):  # the old stream's lock is released once the server sees it end
        try:
            resps = await _stream(
                client,
                [
                    api.WriteContentRequest(
                        action=WA.STAT, ref=ref, total=len(data), expected=digest
                    ),
                    api.WriteContentRequest(
                        action=WA.WRITE, ref=ref, offset=half, data=data[half:]
                    ),
                    api.WriteContentRequest(
                        action=WA.COMMIT,
                        ref=ref,
                        total=len(data),
                        expected=digest,
                        offset=len(data),
                    ),
                ],
            )
            break
        except GRPCError as exc:
            assert exc.status == Status.UNAVAILABLE
            await asyncio.sleep(0.05)
    assert resps[0].offset == half
    assert resps[-1].digest == digest
    assert digest in await _listed(client)
    with pytest.raises(GRPCError) as err:
        await client.content.status(api.StatusRequest(ref=ref))
    assert err.value.status == Status.NOT_FOUND


@pytest.mark.parametrize("wrong", ["digest", "size"])
async def test_bad_commit_is_refused_and_invisible(client: Client, wrong: str) -> None:
    data = b"the real bytes"
    expected = sha(b"other bytes") if wrong == "digest" else sha(data)
    total = len(data) + (5 if wrong == "size" else 0)
    with pytest.raises(GRPCError) as err:
        await _stream(
            client,
            [
                api.WriteContentRequest(action=WA.STAT, ref=f"bad-{wrong}", total=total),
                api.WriteContentRequest(action=WA.WRITE, ref=f"bad-{wrong}", data=data),
                api.WriteContentRequest(
                    action=WA.COMMIT, ref=f"bad-{wrong}", total=total, expected=expected
                ),
            ],
        )
    assert err.value.status == Status.FAILED_PRECONDITION
    assert "expected" in err.value.message
    assert await _listed(client) == []
    await client.content.abort(api.AbortRequest(ref=f"bad-{wrong}"))
    assert (await client.content.list_statuses(api.ListStatusesRequest())).statuses == []


async def test_existing_blob_is_already_exists_on_first_stat(client: Client) -> None:
    data = b"dup"
    await client.write_content("dup-1", data, sha(data))
    with pytest.raises(GRPCError) as err:
        await _stream(
            client, [api.WriteContentRequest(action=WA.STAT, ref="dup-2", expected=sha(data))]
        )
    assert err.value.status == Status.ALREADY_EXISTS


async def test_blob_shared_across_namespaces_needs_only_a_commit(client: Client) -> None:
    data = b"shared bytes"
    await client.write_content("s-1", data, sha(data))
    other = client.with_namespace("other")
    resps = await _stream(
        other,
        [
            api.WriteContentRequest(action=WA.STAT, ref="s-2", total=len(data), expected=sha(data)),
            api.WriteContentRequest(
                action=WA.COMMIT, ref="s-2", total=len(data), expected=sha(data), offset=len(data)
            ),
        ],
    )
    assert resps[0].offset == len(data)
    assert sha(data) in await _listed(other)


async def test_commit_under_lease_belongs_to_it(client: Client) -> None:
    from core.api.containerd.services.leases import v1 as leases

    data = b"leased"
    async with client.lease() as leased:
        await leased.write_content("l-1", data, sha(data))
        res = await client.leases.list_resources(leases.ListResourcesRequest(id=leased.lease_id))
        assert [(r.type, r.id) for r in res.resources] == [("content", sha(data))]
    # With the lease gone and nothing else holding it, the blob is collected.
    for _ in range(100):
        if sha(data) not in await _listed(client):
            break
        await asyncio.sleep(0.05)
    assert sha(data) not in await _listed(client)


async def test_read_ranges_and_errors(client: Client) -> None:
    data = bytes(range(256)) * 10
    digest = await client.write_content("r-1", data, sha(data))
    part = b"".join(
        [
            r.data
            async for r in client.content.read(
                api.ReadContentRequest(digest=digest, offset=100, size=50)
            )
        ]
    )
    assert part == data[100:150]
    with pytest.raises(GRPCError) as err:
        async for _ in client.content.read(
            api.ReadContentRequest(digest=digest, offset=len(data) + 1)
        ):
            pass
    assert err.value.status == Status.OUT_OF_RANGE
    with pytest.raises(GRPCError) as err:
        await client.content.info(api.InfoRequest(digest=sha(b"missing")))
    assert err.value.status == Status.NOT_FOUND


async def test_read_on_both_sides_of_the_inline_limit(client: Client) -> None:
    """Small blobs are read on the event loop, larger ones in a thread: the same bytes."""
    from core.services.content import INLINE_READ_MAX

    for size in (INLINE_READ_MAX, INLINE_READ_MAX + 1):
        data = os.urandom(size)
        digest = await client.write_content(f"edge-{size}", data, sha(data))
        whole = [r async for r in client.content.read(api.ReadContentRequest(digest=digest))]
        assert b"".join(r.data for r in whole) == data
        assert whole[0].offset == 0
        tail = b"".join(
            [
                r.data
                async for r in client.content.read(
                    api.ReadContentRequest(digest=digest, offset=size - 10)
                )
            ]
        )
        assert tail == data[-10:]


async def test_update_labels_with_mask(client: Client) -> None:
    from core.api.google.protobuf import FieldMask

    data = b"labelled"
    digest = await client.write_content("u-1", data, sha(data), labels={"keep": "1", "drop": "2"})
    resp = await client.content.update(
        api.UpdateRequest(
            info=api.Info(digest=digest, labels={"containerd.io/gc.ref.content.m.0": sha(b"x")}),
            update_mask=FieldMask(paths=["labels.containerd.io/gc.ref.content.m.0", "labels.drop"]),
        )
    )
    assert resp.info.labels == {"keep": "1", "containerd.io/gc.ref.content.m.0": sha(b"x")}
    with pytest.raises(GRPCError) as err:
        await client.content.update(
            api.UpdateRequest(info=api.Info(digest=digest), update_mask=FieldMask(paths=["size"]))
        )
    assert err.value.status == Status.INVALID_ARGUMENT
