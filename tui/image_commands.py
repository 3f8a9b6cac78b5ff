"""`ctrdeck pull` and `ctrdeck images ...`: image work from a shell, through the engine's API.

This module owns the shell side of pushing, importing, exporting, tagging and removing
images, and of pulling through a `tcp://` address (their options are `tui.pull_cli`'s; a
pull on a local socket is `tui.pull_wire`'s). Every command talks to the engine over gRPC
only (Images.Pull, Push, Import and Export are ctrdeck's own methods; tag and rm are
containerd's Get, Create and Delete, as ctr does them). Progress streams are shown by
`tui.progress`.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path

from grpclib import GRPCError

from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from core.errors import CtrdeckError
from tui import progress
from tui.progress import shown

CHUNK = 1 << 20


def _client(args: argparse.Namespace) -> Client:
    from tui import launcher

    target = launcher.target(args)
    return Client(target.address, args.namespace, tls=target.tls)


def _fail(command: str, exc: BaseException) -> int:
    message = exc.message if isinstance(exc, GRPCError) else str(exc) or type(exc).__name__
    print(f"ctrdeck {command}: {shown(message)}", file=sys.stderr)
    return 1


def _run(command: str, coro: object) -> int:
    from tui.launcher import LaunchError

    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except (GRPCError, OSError, ConnectionError, LaunchError, CtrdeckError) as exc:
        return _fail(command, exc)
    except KeyboardInterrupt:
        return 130


# -- pull and push --------------------------------------------------------------------------


async def _pull(args: argparse.Namespace) -> int:
    request = images_api.PullImageRequest(
        ref=args.ref,
        snapshotter=args.snapshotter or "",
        platform=args.platform or "",
        plain_http=args.plain_http,
        skip_unpack=args.skip_unpack,
        user=progress.registry_user(args.ref, args.user),
        all_platforms=args.all_platforms,
    )
    async with _client(args) as client:
        image = await progress.follow_async(client.images.pull(request))
    if image is not None and image.target is not None:
        print(f"{image.name}: {image.target.digest}")
    return 0


def pull(args: argparse.Namespace) -> int:
    return _run("pull", _pull(args))


async def _push(args: argparse.Namespace) -> int:
    request = images_api.PushImageRequest(
        name=args.name,
        ref=args.remote or "",
        platform=args.platform or "",
        plain_http=args.plain_http,
        user=progress.registry_user(args.remote or args.name, args.user),
    )
    async with _client(args) as client:
        await progress.follow_async(client.images.push(request))
    print(f"pushed {args.remote or args.name}")
    return 0


# -- import and export ----------------------------------------------------------------------


def _chunks(path: Path) -> Iterator[bytes]:
    with sys.stdin.buffer if str(path) == "-" else path.open("rb") as f:
        while data := f.read(CHUNK):
            yield data


async def _import(args: argparse.Namespace) -> int:
    def requests() -> Iterator[images_api.ImportImageRequest]:
        first = True
        for data in _chunks(args.archive):
            if first:
                first = False
                yield images_api.ImportImageRequest(
                    data=data,
                    base_name=args.base_name or "",
                    snapshotter=args.snapshotter or "",
                    platform=args.platform or "",
                    skip_unpack=args.skip_unpack,
                )
            else:
                yield images_api.ImportImageRequest(data=data)
        if first:
            yield images_api.ImportImageRequest(base_name=args.base_name or "")

    async with _client(args) as client:
        resp = await client.images.import_(requests())
    for image in resp.images:
        digest = image.target.digest if image.target else ""
        print(f"{image.name}: {digest}")
    return 0


async def _export(args: argparse.Namespace) -> int:
    request = images_api.ExportImageRequest(
        names=list(args.names),
        platform=args.platform or "",
        skip_docker_manifest=args.skip_docker_manifest,
    )
    async with _client(args) as client:
        target = args.archive
        out = sys.stdout.buffer if str(target) == "-" else None
        tmp = target.with_name(f".{target.name}.part") if out is None else None
        handle = out or tmp.open("wb")  # type: ignore[union-attr]
        try:
            async for chunk in client.images.export(request):
                handle.write(chunk.data)
        except BaseException:
            if tmp is not None:
                handle.close()
                tmp.unlink(missing_ok=True)
            raise
        if tmp is not None:
            handle.close()
            tmp.replace(target)
    return 0


# -- tag and rm, as ctr does them -------------------------------------------------------------


async def _tag(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        source = await client.images.get(images_api.GetImageRequest(name=args.source))
        assert source.image is not None
        for name in args.targets:
            image = images_api.Image(
                name=name, labels=source.image.labels, target=source.image.target
            )
            try:
                await client.images.create(images_api.CreateImageRequest(image=image))
            except GRPCError as exc:
                if not args.force or exc.status.name != "ALREADY_EXISTS":
                    raise
                await client.images.update(images_api.UpdateImageRequest(image=image))
            print(name)
    return 0


async def _rm(args: argparse.Namespace) -> int:
    failed = 0
    async with _client(args) as client:
        for name in args.names:
            try:
                await client.images.delete(images_api.DeleteImageRequest(name=name, sync=args.sync))
            except GRPCError as exc:
                failed = 1
                print(f"ctrdeck images rm: {name}: {exc.message}", file=sys.stderr)
                continue
            print(name)
    return failed


def images(args: argparse.Namespace) -> int:
    actions = {
        "push": _push,
        "import": _import,
        "export": _export,
        "tag": _tag,
        "rm": _rm,
    }
    return _run(f"images {args.images_command}", actions[args.images_command](args))
