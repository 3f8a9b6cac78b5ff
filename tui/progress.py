"""What `ctrdeck pull` and `images push` show and send from a shell: progress, and the user.

A progress stream (the engine's `PullImageProgress` messages, from the generated stubs or
`tui.pull_wire`'s decoder, which have the same fields) is drawn as rich progress bars on a
terminal, and as one plain line per change of phase or layer state otherwise, so scripts
can read them. `registry_user` is the registry credential a request carries. Nothing heavy
is imported here until it is used: the plain lines need neither Rich nor gRPC.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterable
from typing import IO, Any

from tui.pull_cli import human, short


class PlainReport:
    """One line per phase change and per layer state change."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self.phase = ""
        self.states: dict[str, str] = {}

    def update(self, progress: Any) -> None:
        if progress.phase and progress.phase != self.phase:
            self.phase = progress.phase
            line = f"{progress.phase}: {progress.message}" if progress.message else progress.phase
            print(line, file=self.out, flush=True)
        for layer in progress.layers:
            if self.states.get(layer.digest) != layer.state:
                self.states[layer.digest] = layer.state
                print(
                    f"{layer.digest}: {layer.state} {human(layer.offset)}/{human(layer.size)}",
                    file=self.out,
                    flush=True,
                )

    def close(self) -> None:
        pass


class RichReport:
    """A progress bar per layer, with bytes, speed and state."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TransferSpeedColumn,
        )

        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[state]}"),
        )
        self.tasks: dict[str, object] = {}
        self.phase = ""
        self.progress.start()

    def update(self, progress: Any) -> None:
        if progress.phase and progress.phase != self.phase:
            self.phase = progress.phase
            line = f"{progress.phase}: {progress.message}" if progress.message else progress.phase
            self.progress.console.print(shown(line), markup=False, highlight=False)
        for layer in progress.layers:
            task = self.tasks.get(layer.digest)
            if task is None:
                task = self.tasks[layer.digest] = self.progress.add_task(
                    short(layer.digest), total=layer.size or None, state=layer.state
                )
            done = layer.size if layer.state in ("downloaded", "unpacked", "exists") else None
            if layer.state == "unpacking":
                # The bar follows the unpack: how much of the blob has been applied.
                done = layer.applied
            self.progress.update(
                task,  # type: ignore[arg-type]
                completed=done if done is not None else layer.offset,
                state=layer.state,
            )

    def close(self) -> None:
        self.progress.stop()


def reporter(out: IO[str] = sys.stdout) -> PlainReport | RichReport:
    return RichReport() if out.isatty() else PlainReport(out)


def follow(stream: Iterable[Any]) -> Any:
    """Show a progress stream as it comes; the image its messages named last, or None."""
    report = reporter()
    image = None
    try:
        for progress in stream:
            report.update(progress)
            if progress.image is not None:
                image = progress.image
    finally:
        report.close()
    return image


async def follow_async(stream: AsyncIterator[Any]) -> Any:
    """`follow` for the generic client's stream."""
    report = reporter()
    image = None
    try:
        async for progress in stream:
            report.update(progress)
            if progress.image is not None:
                image = progress.image
    finally:
        report.close()
    return image


def shown(text: str) -> str:
    """A registry's or an engine's words for the operator's terminal: no control codes."""
    from tui.plain import clean

    return clean(text, lines=True)


def registry_user(ref: str, user: str | None) -> str:
    """The request's `user`: from `--user`, else from Docker's config.json, else none.

    A `--user` without a password prompts for it, as ctr does.
    """
    from core.errors import CtrdeckError
    from core.images.credentials import (
        docker_config_dir,
        docker_credentials,
        parse_user,
        wire_user,
    )

    if user:
        return wire_user(parse_user(user))
    if not (docker_config_dir() / "config.json").exists():
        return ""  # the common case: parsing the reference (dataclasses, re) can wait
    from core.images.reference import parse

    try:
        domain = parse(ref).domain
    except CtrdeckError:
        return ""  # the engine names what is wrong with the reference
    found = docker_credentials(domain)
    return wire_user(found) if found else ""
