"""`ctrdeck cri ...`: the commands, over Kubernetes' CRI (runtime.v1) on the engine's socket.

Their options and the command's description are `tui.cri_cli`'s. Everything from the
node is printed as plain text, never a control code.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path

import betterproto2
from grpclib import GRPCError
from grpclib.const import Status

from core.api.runtime import v1 as cri
from core.client import Client
from tui.plain import clean
from tui.pull_cli import human, short

CRI_LINE = re.compile(r"^(\S+) (stdout|stderr) ([FP]) ?(.*)$")


def _age(ns: int) -> str:
    seconds = max(0, int(time.time() - ns / 1e9))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _table(header: list[str], rows: list[list[str]]) -> None:
    cells = [[clean(c) for c in row] for row in [header, *rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for row in cells:
        print("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _state(value: betterproto2.Enum) -> str:
    return value.name.removeprefix("SANDBOX_").removeprefix("CONTAINER_")


async def _pods(client: Client, args: argparse.Namespace) -> int:
    items = (await client.cri_runtime.list_pod_sandbox(cri.ListPodSandboxRequest())).items
    rows = [
        [p.id[:13], _age(p.created_at), _state(p.state), p.metadata.name if p.metadata else "",
         p.metadata.namespace if p.metadata else "", str(p.metadata.attempt if p.metadata else 0)]
        for p in items
    ]  # fmt: skip
    _table(["POD ID", "CREATED", "STATE", "NAME", "NAMESPACE", "ATTEMPT"], rows)
    return 0


async def _ps(client: Client, args: argparse.Namespace) -> int:
    f = cri.ContainerFilter(pod_sandbox_id=args.pod)
    if not args.all:
        f.state = cri.ContainerStateValue(state=cri.ContainerState.CONTAINER_RUNNING)
    found = await client.cri_runtime.list_containers(cri.ListContainersRequest(filter=f))
    rows = [
        [c.id[:13], c.image.image if c.image else "", _age(c.created_at), _state(c.state),
         c.metadata.name if c.metadata else "", str(c.metadata.attempt if c.metadata else 0),
         c.pod_sandbox_id[:13]]
        for c in found.containers
    ]  # fmt: skip
    _table(["CONTAINER", "IMAGE", "CREATED", "STATE", "NAME", "ATTEMPT", "POD ID"], rows)
    return 0


async def _images(client: Client, args: argparse.Namespace) -> int:
    found = await client.cri_images.list_images(cri.ListImagesRequest())
    rows = []
    for image in found.images:
        tags = image.repo_tags or ["<none>:<none>"]
        for tag in tags:
            repo, _, name = tag.rpartition(":")
            rows.append([repo, name, short(image.id), human(image.size)])
    _table(["IMAGE", "TAG", "IMAGE ID", "SIZE"], rows)
    return 0


async def _container_id(client: Client, ref: str) -> str | None:
    found = await client.cri_runtime.list_containers(cri.ListContainersRequest())
    matches = [c.id for c in found.containers if c.id.startswith(ref)]
    return matches[0] if len(matches) == 1 else None


async def _pod_id(client: Client, ref: str) -> str | None:
    found = await client.cri_runtime.list_pod_sandbox(cri.ListPodSandboxRequest())
    matches = [p.id for p in found.items if p.id.startswith(ref)]
    return matches[0] if len(matches) == 1 else None


def _print_json(message: betterproto2.Message) -> None:
    print(
        clean(
            json.dumps(message.to_dict(include_default_values=True), indent=2),
            lines=True,
            limit=1 << 20,
        )
    )


async def _inspect(client: Client, args: argparse.Namespace) -> int:
    rt = client.cri_runtime
    if cid := await _container_id(client, args.id):
        _print_json(await rt.container_status(cri.ContainerStatusRequest(container_id=cid)))
        return 0
    if pid := await _pod_id(client, args.id):
        _print_json(await rt.pod_sandbox_status(cri.PodSandboxStatusRequest(pod_sandbox_id=pid)))
        return 0
    status = await client.cri_images.image_status(
        cri.ImageStatusRequest(image=cri.ImageSpec(image=args.id))
    )
    if status.image is not None:
        _print_json(status)
        return 0
    print(f"ctrdeck cri inspect: no container, pod or image {clean(args.id)}", file=sys.stderr)
    return 1


async def _logs(client: Client, args: argparse.Namespace) -> int:
    cid = await _container_id(client, args.id)
    if cid is None:
        print(f"ctrdeck cri logs: no container {clean(args.id)}", file=sys.stderr)
        return 1
    status = await client.cri_runtime.container_status(cri.ContainerStatusRequest(container_id=cid))
    path = status.status.log_path if status.status else ""
    if not path:
        print("ctrdeck cri logs: the container has no log path", file=sys.stderr)
        return 1
    lines = Path(path).read_text(errors="replace").splitlines()
    out: list[str] = []
    partial = ""
    for line in lines:
        m = CRI_LINE.match(line)
        if m is None:
            continue
        partial += m.group(4)
        if m.group(3) == "F":
            out.append(partial)
            partial = ""
    for line in out[-args.tail :] if args.tail else out:
        print(clean(line))
    return 0


async def _exec(client: Client, args: argparse.Namespace) -> int:
    cid = await _container_id(client, args.id) or args.id
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("ctrdeck cri exec: a command is needed", file=sys.stderr)
        return 2
    result = await client.cri_runtime.exec_sync(
        cri.ExecSyncRequest(container_id=cid, cmd=cmd, timeout=args.timeout)
    )
    sys.stdout.write(clean(result.stdout.decode(errors="replace"), lines=True))
    sys.stderr.write(clean(result.stderr.decode(errors="replace"), lines=True))
    return result.exit_code


async def _stop_or_rm(client: Client, args: argparse.Namespace) -> int:
    rt = client.cri_runtime
    stop = args.cri_command == "stop"
    if cid := await _container_id(client, args.id):
        if stop:
            await rt.stop_container(
                cri.StopContainerRequest(container_id=cid, timeout=args.timeout)
            )
        else:
            await rt.remove_container(cri.RemoveContainerRequest(container_id=cid))
        print(cid)
        return 0
    if pid := await _pod_id(client, args.id):
        if stop:
            await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=pid))
        else:
            await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=pid))
        print(pid)
        return 0
    print(f"ctrdeck cri {args.cri_command}: no container or pod {clean(args.id)}", file=sys.stderr)
    return 1


COMMANDS = {
    "pods": _pods, "ps": _ps, "images": _images, "inspect": _inspect, "logs": _logs,
    "exec": _exec, "stop": _stop_or_rm, "rm": _stop_or_rm,
}  # fmt: skip


async def _main(args: argparse.Namespace) -> int:
    from tui import launcher

    target = launcher.target(args)
    client = Client(target.address, "k8s.io", tls=target.tls)
    try:
        return await COMMANDS[args.cri_command](client, args)
    finally:
        client.close()


def run(args: argparse.Namespace) -> int:
    from tui.launcher import LaunchError

    try:
        return asyncio.run(_main(args))
    except GRPCError as exc:
        hint = " (does this engine serve the CRI?)" if exc.status == Status.UNIMPLEMENTED else ""
        print(f"ctrdeck cri {args.cri_command}: {clean(exc.message or '')}{hint}", file=sys.stderr)
        return 1
    except (OSError, ConnectionError, LaunchError) as exc:
        print(f"ctrdeck cri {args.cri_command}: {clean(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
