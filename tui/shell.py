"""A shell in a running container, on the operator's own terminal, through Tasks.Exec with a pty.

As `ctr task exec -t` does, the console makes two FIFOs on this host (stdin and
stdout; a terminal has no separate stderr), asks the engine for an exec with
`terminal` set and the container's own process spec (user, cwd, env) with
the shell as its arguments, and starts it. `open_shell` does all of that
before the console steps aside, so a container without the shell fails with
a message in the console instead of a blank screen. `attach` then puts the
terminal in raw mode and copies bytes both ways on the event loop, follows
SIGWINCH with `Tasks.ResizePty`, and returns the shell's exit status once it
exits; `close` deletes the exec and the FIFOs. The FIFOs only work where the
engine can open them: the console and the engine share a host, as on a node
reached over SSH.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import tempfile
import termios
import tty
from dataclasses import dataclass
from pathlib import Path

from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.tasks import v1 as tasks_api
from core.api.google.protobuf import Any as AnyMessage
from core.client import Client, is_tcp
from tui.operations import ConsoleError, engine_call

DEFAULT_SHELL = ("/bin/sh",)
PROCESS_URL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
READ_SIZE = 1 << 16
# The words a runtime uses when the program to exec is not in the container.
MISSING = ("no such file", "not found", "executable file not found")


@dataclass
class ShellSession:
    client: Client
    container_id: str
    exec_id: str
    argv: tuple[str, ...]
    directory: Path
    stdin_fd: int
    stdout_fd: int
    exited: bool = False


def new_exec_id() -> str:
    return f"ctrdeck-shell-{secrets.token_hex(4)}"


def fifo_parent() -> str | None:
    """Where the FIFOs go: /run when this user may write there (a root on a node), else /tmp."""
    return "/run" if os.access("/run", os.W_OK) else None


def terminal_size(fd: int) -> tuple[int, int]:
    """(columns, rows) of the terminal on `fd`; 80x24 when it is none."""
    try:
        size = os.get_terminal_size(fd)
    except OSError:
        return 80, 24
    return size.columns, size.lines


def exec_process(spec: dict[str, object] | None, argv: tuple[str, ...], term: str) -> AnyMessage:
    """The container's process spec with `argv` and a terminal, as ctr builds an exec's."""
    process = dict((spec or {}).get("process") or {})  # type: ignore[call-overload]
    process["args"] = list(argv)
    process["terminal"] = True
    env = [str(e) for e in process.get("env") or []]
    if not any(e.startswith("TERM=") for e in env):
        env.append(f"TERM={term}")
    process["env"] = env
    process.setdefault("cwd", "/")
    process.setdefault("user", {"uid": 0, "gid": 0})
    return AnyMessage(type_url=PROCESS_URL, value=json.dumps(process).encode())


async def open_shell(
    client: Client, container_id: str, argv: tuple[str, ...], size: tuple[int, int], term: str
) -> ShellSession:
    """Exec `argv` with a terminal in the container and start it; `ConsoleError` says why not."""
    if is_tcp(client.address):
        raise ConsoleError(
            f"a shell needs the engine on this host (its FIFOs are local files); {client.address} "
            "is remote: ssh to the node and run ctrdeck there"
        )
    with engine_call("Containers", f"shell in {container_id}"):
        found = await client.containers.get(containers_api.GetContainerRequest(id=container_id))
    spec = None
    if found.container is not None and found.container.spec is not None:
        with contextlib.suppress(ValueError):
            spec = json.loads(found.container.spec.value)
    directory = Path(tempfile.mkdtemp(prefix="ctrdeck-shell-", dir=fifo_parent()))
    stdin_path, stdout_path = directory / "stdin", directory / "stdout"
    os.mkfifo(stdin_path, stat.S_IRUSR | stat.S_IWUSR)
    os.mkfifo(stdout_path, stat.S_IRUSR | stat.S_IWUSR)
    # Both ends open before the engine's: reading never blocks, writing never fails for want
    # of a reader.
    stdin_fd = os.open(stdin_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    stdout_fd = os.open(stdout_path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    session = ShellSession(
        client, container_id, new_exec_id(), argv, directory, stdin_fd, stdout_fd
    )
    try:
        with engine_call("Tasks", f"shell in {container_id}"):
            await client.tasks.exec(
                tasks_api.ExecProcessRequest(
                    container_id=container_id,
                    exec_id=session.exec_id,
                    stdin=str(stdin_path),
                    stdout=str(stdout_path),
                    terminal=True,
                    spec=exec_process(spec, argv, term),
                )
            )
        try:
            with engine_call("Tasks", f"start {argv[0]} in {container_id}"):
                await client.tasks.start(
                    tasks_api.StartRequest(container_id=container_id, exec_id=session.exec_id)
                )
        except ConsoleError as exc:
            if any(word in exc.message.lower() for word in MISSING):
                raise ConsoleError(
                    f"{container_id} has no {argv[0]}: pick another command with :sh CMD "
                    f"(the runtime said: {exc.message})"
                ) from None
            raise
        await resize(session, *size)
    except BaseException:
        await close(session)
        raise
    return session


async def resize(session: ShellSession, cols: int, rows: int) -> None:
    with contextlib.suppress(ConsoleError), engine_call("Tasks", "resize the shell's terminal"):
        await session.client.tasks.resize_pty(
            tasks_api.ResizePtyRequest(
                container_id=session.container_id,
                exec_id=session.exec_id,
                width=cols,
                height=rows,
            )
        )


async def attach(session: ShellSession, tty_in: int, tty_out: int) -> int:
    """Run the shell on the terminal `tty_in`/`tty_out` until it exits; its exit status."""
    loop = asyncio.get_running_loop()
    saved = termios.tcgetattr(tty_in) if os.isatty(tty_in) else None
    pending_resize: set[asyncio.Task[None]] = set()

    def keys() -> None:
        try:
            data = os.read(tty_in, READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            with contextlib.suppress(BlockingIOError):
                os.write(session.stdin_fd, data)

    def output() -> None:
        while True:
            try:
                data = os.read(session.stdout_fd, READ_SIZE)
            except BlockingIOError:
                return
            if not data:
                return
            _write_all(tty_out, data)

    def resized() -> None:
        task = loop.create_task(resize(session, *terminal_size(tty_out)))
        pending_resize.add(task)
        task.add_done_callback(pending_resize.discard)

    waiter = session.client.tasks.wait(
        tasks_api.WaitRequest(container_id=session.container_id, exec_id=session.exec_id)
    )
    if saved is not None:
        tty.setraw(tty_in)
    blocking = os.get_blocking(tty_in)
    os.set_blocking(tty_in, False)
    loop.add_reader(tty_in, keys)
    loop.add_reader(session.stdout_fd, output)
    loop.add_signal_handler(signal.SIGWINCH, resized)
    try:
        # The size may have changed while the shell started.
        resized()
        with engine_call("Tasks", f"wait for the shell in {session.container_id}"):
            resp = await waiter
        session.exited = True
        # What the shell wrote last is still in the FIFO.
        output()
        return resp.exit_status
    finally:
        loop.remove_signal_handler(signal.SIGWINCH)
        loop.remove_reader(session.stdout_fd)
        loop.remove_reader(tty_in)
        os.set_blocking(tty_in, blocking)
        if saved is not None:
            termios.tcsetattr(tty_in, termios.TCSADRAIN, saved)
        for task in list(pending_resize):
            task.cancel()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            continue
        view = view[n:]


async def close(session: ShellSession) -> None:
    """End the shell if it still runs, delete its exec and the FIFOs: nothing stays behind."""
    tasks = session.client.tasks
    ids = {"container_id": session.container_id, "exec_id": session.exec_id}
    if not session.exited:
        with contextlib.suppress(ConsoleError), engine_call("Tasks", "end the shell"):
            await tasks.kill(tasks_api.KillRequest(signal=signal.SIGKILL, **ids))
            await asyncio.wait_for(tasks.wait(tasks_api.WaitRequest(**ids)), 10)
    with contextlib.suppress(ConsoleError), engine_call("Tasks", "delete the shell's exec"):
        await tasks.delete_process(
            tasks_api.DeleteProcessRequest(
                container_id=session.container_id, exec_id=session.exec_id
            )
        )
    for fd in (session.stdin_fd, session.stdout_fd):
        with contextlib.suppress(OSError):
            os.close(fd)
    shutil.rmtree(session.directory, ignore_errors=True)
