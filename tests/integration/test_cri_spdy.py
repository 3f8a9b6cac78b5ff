"""CRI streaming over SPDY/3.1 (exec, resize, attach, port-forward) and Attach over WebSocket.

The client is the tests' own (tests/spdy_client.py): it upgrades a real TCP
connection to the engine's streaming server as crictl and kubelet do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from pathlib import Path

import aiohttp
import pytest

from core.api.runtime import v1 as cri
from tests.integration import test_cri
from tests.integration.test_cri import HOST_NETWORK, container_config, pod_config
from tests.spdy_client import connect, read_all

# The engine in the host's network that test_cri.py's streaming tests use.
host_node = test_cri.host_node


async def _running(rt: cri.RuntimeServiceStub, tmp_path: Path, name: str, *cmd: str, **kw) -> str:  # type: ignore[no-untyped-def]
    pod = pod_config(name, tmp_path, linux=HOST_NETWORK)
    pod_id = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    created = await rt.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=pod, config=container_config(name, *cmd, **kw),
    ))  # fmt: skip
    await rt.start_container(cri.StartContainerRequest(container_id=created.container_id))
    return created.container_id


async def test_exec_over_spdy(host_node: cri.RuntimeServiceStub, tmp_path: Path) -> None:
    rt = host_node
    cid = await _running(rt, tmp_path, "spdyexec", "sleep", "100000")
    script = "read x; echo out:$x; echo err >&2; exit 3"
    url = (await rt.exec(cri.ExecRequest(
        container_id=cid, cmd=["sh", "-c", script], stdin=True, stdout=True, stderr=True,
    ))).url  # fmt: skip
    async with connect(url, "v4.channel.k8s.io", "channel.k8s.io") as (session, protocol):
        assert protocol == "v4.channel.k8s.io"
        error = await session.open({"streamType": "error"})
        stdin = await session.open({"streamType": "stdin"})
        stdout = await session.open({"streamType": "stdout"})
        stderr = await session.open({"streamType": "stderr"})
        stdin.write(b"typed\n")
        stdin.close()
        out, err, status = await asyncio.wait_for(
            asyncio.gather(read_all(stdout), read_all(stderr), read_all(error)), 30
        )
    assert (out, err) == (b"out:typed\n", b"err\n")
    doc = json.loads(status)
    assert doc["status"] == "Failure" and doc["details"]["causes"][0]["message"] == "3"

    url = (await rt.exec(cri.ExecRequest(container_id=cid, cmd=["true"], stdout=True))).url
    async with connect(url, "v4.channel.k8s.io") as (session, _):
        error = await session.open({"streamType": "error"})
        stdout = await session.open({"streamType": "stdout"})
        assert json.loads(await asyncio.wait_for(read_all(error), 30))["status"] == "Success"

    # Output larger than a frame arrives whole, in order.
    cmd = ["dd", "if=/dev/zero", "bs=1024", "count=1024"]
    url = (await rt.exec(cri.ExecRequest(container_id=cid, cmd=cmd, stdout=True))).url
    async with connect(url, "v4.channel.k8s.io") as (session, _):
        error = await session.open({"streamType": "error"})
        stdout = await session.open({"streamType": "stdout"})
        out = await asyncio.wait_for(read_all(stdout), 30)
        assert json.loads(await asyncio.wait_for(read_all(error), 30))["status"] == "Success"
    assert out == bytes(1 << 20)

    # Only protocols kubelet speaks are agreed to.
    url = (await rt.exec(cri.ExecRequest(container_id=cid, cmd=["true"], stdout=True))).url
    with pytest.raises(ConnectionRefusedError, match="403"):
        async with connect(url, "v9.channel.k8s.io"):
            pass


async def test_exec_resize_over_spdy(host_node: cri.RuntimeServiceStub, tmp_path: Path) -> None:
    rt = host_node
    cid = await _running(rt, tmp_path, "spdytty", "sleep", "100000")
    url = (await rt.exec(cri.ExecRequest(
        container_id=cid, cmd=["sh", "-c", "while read x; do stty size; done"],
        tty=True, stdin=True, stdout=True,
    ))).url  # fmt: skip
    async with connect(url, "v4.channel.k8s.io") as (session, _):
        error = await session.open({"streamType": "error"})
        stdin = await session.open({"streamType": "stdin"})
        stdout = await session.open({"streamType": "stdout"})
        resize = await session.open({"streamType": "resize"})
        resize.write(b'{"Width":100,"Height":33}\n')
        seen = b""
        for _ in range(50):  # the resize and the input travel on different streams
            stdin.write(b"\n")
            with contextlib.suppress(TimeoutError):
                while b"33 100" not in seen:
                    seen += await asyncio.wait_for(stdout.read(), 0.5)
            if b"33 100" in seen:
                break
        assert b"33 100" in seen
        stdin.close()
        await asyncio.wait_for(read_all(stdout), 30)
        assert json.loads(await asyncio.wait_for(read_all(error), 30))["status"] == "Success"


async def test_attach_over_spdy_and_websocket(
    host_node: cri.RuntimeServiceStub, tmp_path: Path
) -> None:
    rt = host_node
    script = "i=0; while [ ! -e /tmp/go ]; do echo tick $i; i=$((i+1)); sleep 0.1; done; exit 4"
    cid = await _running(rt, tmp_path, "attached", "sh", "-c", script)
    request = cri.AttachRequest(container_id=cid, stdout=True, stderr=True)

    url = (await rt.attach(request)).url
    assert "/attach/" in url
    async with connect(url, "v4.channel.k8s.io") as (session, _):
        await session.open({"streamType": "error"})
        stdout = await session.open({"streamType": "stdout"})
        await session.open({"streamType": "stderr"})
        seen = b""
        while b"tick" not in seen:
            seen += await asyncio.wait_for(stdout.read(), 30)

    url = (await rt.attach(request)).url
    seen, status = b"", {}
    async with (
        aiohttp.ClientSession() as client,
        client.ws_connect(url, protocols=("v4.channel.k8s.io",)) as ws,
    ):
        async for msg in ws:
            channel, data = msg.data[0], msg.data[1:]
            if channel == 1:
                seen += data
                if b"tick" in seen and b"released" not in seen:
                    seen += b"released"
                    await rt.exec_sync(
                        cri.ExecSyncRequest(container_id=cid, cmd=["touch", "/tmp/go"], timeout=10)
                    )
            elif channel == 3:
                status = json.loads(data)
    assert b"tick" in seen
    assert status["details"]["causes"][0]["message"] == "4"


async def test_attach_writes_the_containers_stdin(
    host_node: cri.RuntimeServiceStub, tmp_path: Path
) -> None:
    rt = host_node
    script = "while read x; do echo got:$x; done; echo stdin-closed; exit 5"
    cid = await _running(rt, tmp_path, "stdin", "sh", "-c", script, stdin=True, stdin_once=True)
    url = (await rt.attach(cri.AttachRequest(container_id=cid, stdin=True, stdout=True))).url
    async with connect(url, "v4.channel.k8s.io") as (session, _):
        error = await session.open({"streamType": "error"})
        stdin = await session.open({"streamType": "stdin"})
        stdout = await session.open({"streamType": "stdout"})
        stdin.write(b"hello\n")
        seen = b""
        while b"got:hello" not in seen:
            seen += await asyncio.wait_for(stdout.read(), 30)
        # stdin_once: the end of this client's input is the end of the container's.
        stdin.close()
        seen += await asyncio.wait_for(read_all(stdout), 30)
        status = json.loads(await asyncio.wait_for(read_all(error), 30))
    assert b"stdin-closed" in seen
    assert status["details"]["causes"][0]["message"] == "5"


async def test_port_forward_over_spdy(host_node: cri.RuntimeServiceStub, tmp_path: Path) -> None:
    rt = host_node
    port = 20000 + secrets.randbelow(20000)
    pod = pod_config("spdyforward", tmp_path, linux=HOST_NETWORK)
    pod_id = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=pod))).pod_sandbox_id
    created = await rt.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=pod_id, sandbox_config=pod, config=container_config(
        "web", "sh", "-c",
        f"mkdir -p /tmp/w && echo forwarded > /tmp/w/index.html && "
        f"exec httpd -f -p 127.0.0.1:{port} -h /tmp/w",
    )))  # fmt: skip
    await rt.start_container(cri.StartContainerRequest(container_id=created.container_id))
    url = (await rt.port_forward(cri.PortForwardRequest(pod_sandbox_id=pod_id, port=[port]))).url
    answer, problem = b"", b""
    async with connect(url, "portforward.k8s.io") as (session, protocol):
        assert protocol == "portforward.k8s.io"
        for request_id in range(50):  # httpd may still be starting: one connection each try
            headers = {"port": str(port), "requestID": str(request_id)}
            error = await session.open({"streamType": "error", **headers})
            data = await session.open({"streamType": "data", **headers})
            data.write(b"GET / HTTP/1.0\r\n\r\n")
            data.close()
            answer, problem = await asyncio.wait_for(
                asyncio.gather(read_all(data), read_all(error)), 30
            )
            if b"forwarded" in answer:
                break
            await asyncio.sleep(0.1)
    assert b"200 OK" in answer and b"forwarded" in answer, problem
