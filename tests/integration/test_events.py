"""Events: ctr events sees what other clients cause, filters narrow it, and
payloads carry containerd's bare type URLs so ctr can decode them."""

from __future__ import annotations

import asyncio
import subprocess
import time

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd import events
from core.api.containerd.services.events import v1 as api
from core.client import Client
from core.typeurl import pack
from tests.engine_proc import EngineProcess
from tests.helpers import ctr


def _events_proc(engine: EngineProcess, *filters: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["ctr", "--address", str(engine.address), "events", *filters],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _collect(proc: subprocess.Popen[str]) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out


def test_ctr_events_sees_namespace_create(engine: EngineProcess, ctr_bin: str) -> None:
    everything = _events_proc(engine)
    only_create = _events_proc(engine, "topic==/namespaces/create")
    time.sleep(1.0)
    ctr(engine.address, "namespaces", "create", "seen")
    ctr(engine.address, "namespaces", "label", "seen", "k=v")
    time.sleep(0.5)
    all_out = _collect(everything)
    create_out = _collect(only_create)
    assert "/namespaces/create" in all_out and "seen" in all_out
    assert "/namespaces/update" in all_out
    assert "/namespaces/create" in create_out
    assert "/namespaces/update" not in create_out
    assert '"name":"seen"' in create_out.replace(" ", "")


async def test_subscribe_filters_and_publish(client: Client) -> None:
    received: list[api.Envelope] = []

    async def listen() -> None:
        async for env in client.events.subscribe(
            api.SubscribeRequest(filters=['topic~="/custom/"', "namespace==other"])
        ):
            received.append(env)

    task = asyncio.create_task(listen())
    await asyncio.sleep(0.3)
    await client.events.publish(
        api.PublishRequest(topic="/custom/thing", event=pack(events.ContentDelete(digest="x")))
    )
    await client.with_namespace("other").events.publish(
        api.PublishRequest(topic="/ignored/x", event=pack(events.ContentDelete(digest="y")))
    )
    for _ in range(100):
        if len(received) >= 2:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    # Either filter suffices: the first by topic, the second by namespace.
    assert [e.topic for e in received] == ["/custom/thing", "/ignored/x"]
    assert received[0].event.type_url == "containerd.events.ContentDelete"
    assert received[0].namespace == "default"


async def test_publish_rejects_bad_topics(client: Client) -> None:
    for topic in ["", "nolead", "/", "/bad component/x"]:
        with pytest.raises(GRPCError) as err:
            await client.events.publish(
                api.PublishRequest(topic=topic, event=pack(events.ContentDelete(digest="x")))
            )
        assert err.value.status == Status.INVALID_ARGUMENT


async def test_subscribe_with_malformed_filter(client: Client) -> None:
    with pytest.raises(GRPCError) as err:
        async for _ in client.events.subscribe(api.SubscribeRequest(filters=["topic=="])):
            pass
    assert err.value.status == Status.INVALID_ARGUMENT
    assert "parse error" in err.value.message


async def _first(client: Client, request: api.SubscribeRequest, count: int) -> list[api.Envelope]:
    got: list[api.Envelope] = []
    async with asyncio.timeout(10):
        async for env in client.events.subscribe(request):
            got.append(env)
            if len(got) == count:
                break
    return got


async def test_subscribe_with_history_replays_recent_events_then_goes_live(
    client: Client,
) -> None:
    for i in range(5):
        await client.events.publish(
            api.PublishRequest(
                topic=f"/custom/past{i}", event=pack(events.ContentDelete(digest=f"d{i}"))
            )
        )
    await client.with_namespace("other").events.publish(
        api.PublishRequest(topic="/custom/elsewhere", event=pack(events.ContentDelete(digest="o")))
    )
    received: list[api.Envelope] = []

    async def listen() -> None:
        request = api.SubscribeRequest(filters=["namespace==default"], history=3)
        async for env in client.events.subscribe(request):
            received.append(env)

    task = asyncio.create_task(listen())
    for _ in range(100):
        if len(received) >= 3:
            break
        await asyncio.sleep(0.05)
    await client.events.publish(
        api.PublishRequest(topic="/custom/live", event=pack(events.ContentDelete(digest="l")))
    )
    for _ in range(100):
        if len(received) >= 4:
            break
        await asyncio.sleep(0.05)
    task.cancel()
    # The last three that match the filter, oldest first and marked; then the live one, unmarked.
    assert [(e.topic, e.from_history) for e in received] == [
        ("/custom/past2", True),
        ("/custom/past3", True),
        ("/custom/past4", True),
        ("/custom/live", False),
    ]
    assert received[0].event.type_url == "containerd.events.ContentDelete"
    assert received[0].timestamp < received[3].timestamp
    # More history than there is gives all of it.
    everything = await _first(client, api.SubscribeRequest(history=1000), 6)
    assert [e.topic for e in everything][-1] == "/custom/elsewhere"
    assert all(e.from_history for e in everything)


def test_ctr_events_gets_no_history(engine: EngineProcess, ctr_bin: str) -> None:
    # ctr never asks for history: its stream starts with what happens after it subscribed.
    ctr(engine.address, "namespaces", "create", "before")
    watcher = _events_proc(engine)
    time.sleep(1.0)
    ctr(engine.address, "namespaces", "create", "after")
    time.sleep(0.5)
    out = _collect(watcher)
    assert '"name":"after"' in out.replace(" ", "")
    assert '"name":"before"' not in out.replace(" ", "")
