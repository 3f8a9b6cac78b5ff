"""The engine's side of the monitor protocol: starting, telling and watching a monitor.

Every task process has its own monitor (`core/runtime/monitor.py`, a separate
standard-library-only program). The engine starts its interpreter early
(`start`), writes its config (`monitor.cfg`, marshal) and sends a go-ahead
byte, and reads one reply line: `ok <pid> <monitor pid>` or `error <text>`
(`spawn`). Afterwards it talks to the monitor through the control FIFO
(`control`: `close-stdin`, `resize`), and learns of its end through a pidfd
(`watch`); the exit status is in the file the monitor wrote. A pid is taken
for our monitor only while its command line names the process's config, so a
reused pid is never mistaken for one (`is_ours`).

Monitors are warm when they can be: one template process per engine state
directory (`monitor.py --template`, outside the engine's process tree, so it
survives engine restarts as monitors do) forks each monitor instead of a new
interpreter starting, which also leaves most of each monitor's pages shared.
The first Create starts the template; a template that does not answer is
replaced at once, and only if none can be started does a Create fall back to a
cold start. A warm monitor is sent its config's path as soon as the process's
directory exists, readies itself while the caller prepares the bundle, and is
told `go` after that (`spawn`'s `prepare`). A graceful engine stop removes the
socket, and the template ends soon after (`stop_template`).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import marshal
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

from core.errors import DeadlineExceeded, FailedPrecondition, NotFound, Unavailable
from core.runtime import bundle as bundles
from core.runtime.records import Process, Stdio
from core.runtime.runtimes import RuntimeFailed, kill_group

MONITOR = Path(__file__).with_name("monitor.py")
# The monitor is imported rather than run as a script so that Python loads its
# cached bytecode instead of compiling the source on every Tasks.Create. Its
# path stays on the command line (as argv[1]) so it is still plain to see.
MONITOR_BOOT = (
    "import sys; sys.path.insert(0, sys.argv[1].rpartition('/')[0]); import monitor; monitor.boot()"
)
TEMPLATE_SOCKET = "monitor-template.sock"
CONFIG_FORMAT = 2
# A Unix socket path must fit in sockaddr_un; longer state paths use cold monitors.
MAX_SOCKET_PATH = 107


class Warm:
    """A monitor still to be forked from the template at `path`, when `spawn` says go."""

    returncode = None

    def __init__(self, path: Path) -> None:
        self.path = path


Starting = asyncio.subprocess.Process | Warm


def console_args(stdio: Stdio) -> list[str]:
    # The monitor puts the real socket path in place of the placeholder.
    return ["--console-socket", "-"] if stdio.terminal else []


async def start(directory: Path, tasks_root: Path) -> Starting:
    """The monitor that will use `directory`: warm from the template of `tasks_root`, or cold.

    A cold one is an interpreter started now, which loads and then waits: a byte on its
    stdin says its config is written, end of file that it is not needed.
    """
    path = tasks_root / TEMPLATE_SOCKET
    if await _template(path):
        return Warm(path)
    return await _cold(directory)


async def _template(path: Path) -> bool:
    """Whether a template socket is there, starting a template if none is."""
    if len(str(path)) > MAX_SOCKET_PATH:
        return False
    if path.exists():
        return True
    path.parent.parent.mkdir(parents=True, exist_ok=True, mode=0o711)
    bundles.make_dir(path.parent, bundles.TASK_ROOT_MODE)
    await asyncio.to_thread(fresh_bytecode)
    starter = await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", MONITOR_BOOT, str(MONITOR), "--template", str(path),
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, process_group=0,
    )  # fmt: skip
    return await starter.wait() == 0 and path.exists()


def fresh_bytecode(source: Path = MONITOR) -> bool:
    """Make sure the monitor's cached bytecode matches its source; False if it cannot be.

    A template that finds it stale (a new checkout, an upgrade) compiles the module in its
    own process, and what the compiler allocated stays in its heap for good: 1.8 MiB more
    in the template, shared with every monitor it forks (0.2 MiB more PSS per monitor).
    """
    cached = Path(importlib.util.cache_from_source(str(source)))
    try:
        stat = source.stat()
        with open(cached, "rb") as fp:
            head = fp.read(16)
    except OSError:
        pass
    else:
        if head[:4] == importlib.util.MAGIC_NUMBER and (
            # Hash-based bytecode is the installer's, and import checks it itself.
            head[4:8] != bytes(4)
            or head[8:16]
            == ((int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
                + (stat.st_size & 0xFFFFFFFF).to_bytes(4, "little"))
        ):  # fmt: skip
            return True
    import py_compile  # only when stale: once per upgrade

    try:
        py_compile.compile(
            str(source), doraise=True, invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP
        )
    except (OSError, py_compile.PyCompileError):
        return False  # a read-only install: the template compiles for itself
    return True


def stop_template(tasks_root: Path) -> None:
    """Let the template go: it ends once it sees its socket gone."""
    with contextlib.suppress(OSError):
        (tasks_root / TEMPLATE_SOCKET).unlink()


async def _cold(directory: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", MONITOR_BOOT, str(MONITOR),
        str(directory / "monitor.cfg"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Its own process group for `kill_group`, but the engine's session: see `template`.
        process_group=0,
    )  # fmt: skip


async def abandon(monitor: Starting) -> None:
    """Let a monitor that was never told to go end, and reap it."""
    if isinstance(monitor, Warm) or monitor.returncode is not None:
        return
    assert monitor.stdin is not None
    monitor.stdin.close()
    await monitor.communicate()


async def spawn(
    proc: Process,
    argv: list[str],
    action: str,
    log_max: int,
    child: Starting | None = None,
    prepare: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Have a monitor for `proc` run `argv`; learn the pids or the runtime's error.

    `child` is a monitor `start` made ready ahead for `proc.dir`; without one,
    one is made ready now. `prepare` is the rest of the caller's work that the
    runtime command needs done (the bundle's rootfs and config): it runs while
    the monitor forks and readies itself, and the monitor is told to go after it.
    """
    proc.task.runtime.make_root(proc.task.namespace)
    control_fifo = proc.dir / "control"
    if not control_fifo.exists():
        os.mkfifo(control_fifo, 0o600)
    cfg = {
        "dir": str(proc.dir),
        "argv": argv,
        "action": action,
        "runtime_name": proc.task.runtime.name,
        "runtime_log": str(proc.dir / "runtime.log"),
        "terminal": proc.stdio.terminal,
        "console_socket_index": argv.index("--console-socket") + 1 if proc.stdio.terminal else -1,
        "stdin": proc.stdio.stdin,
        "stdout": proc.stdio.stdout,
        "stderr": proc.stdio.stderr,
        "log": str(proc.log_path),
        "cri_log": proc.stdio.cri_log,
        "log_max": log_max,
        "exit_file": str(proc.dir / "exit"),
        "pid_file": str(proc.dir / "pid"),
    }
    # marshal, not JSON: the monitor then needs no json (and re) import. Format 2, as
    # `monitor.config_bytes`: its keys load un-interned, so a monitor's lookups leave the
    # template's interned strings of those names alone.
    bundles.write_private(proc.dir / "monitor.cfg", marshal.dumps(cfg, CONFIG_FORMAT))
    if child is None:
        child = await start(proc.dir, proc.task.bundle.parent.parent)
    if isinstance(child, Warm):
        connection = await _connect(child.path)
        if connection is not None:
            return await _spawn_warm(proc, action, *connection, prepare)
        child = await _cold(proc.dir)
    runtime = proc.task.runtime
    try:
        if prepare is not None:
            await prepare()
        out, err = await asyncio.wait_for(child.communicate(b"\n"), runtime.timeout)
    except TimeoutError:
        # The monitor and the runtime command it runs share its process group.
        await asyncio.shield(kill_group(child))
        raise DeadlineExceeded(
            f"{runtime.name} {action} of {proc.id}: {runtime.binary} did not finish "
            f"within {runtime.timeout:g} seconds and was killed"
        ) from None
    except BaseException:
        await asyncio.shield(kill_group(child))
        raise
    lines = out.decode(errors="replace").splitlines()
    word, _, rest = (lines[0] if lines else "").partition(" ")
    if word == "error":
        raise RuntimeFailed(rest)
    pids = rest.split()
    if word != "ok" or len(pids) != 2 or not all(p.isdigit() for p in pids):
        detail = err.decode(errors="replace").strip() or f"exit status {child.returncode}"
        raise RuntimeFailed(f"the task monitor did not start: {detail}")
    proc.pid, proc.monitor_pid = int(pids[0]), int(pids[1])


async def _connect(path: Path) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """A connection to the template at `path`; a template that has gone is started again."""
    for retry in (False, True):
        try:
            return await asyncio.open_unix_connection(str(path))
        except OSError:
            # Killed, or gone with its host: its socket file stays behind.
            stop_template(path.parent)
            if retry or not await _template(path):
                return None
    return None


async def _spawn_warm(
    proc: Process,
    action: str,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    prepare: Callable[[], Awaitable[None]] | None,
) -> None:
    runtime = proc.task.runtime
    pid = 0
    told = False
    try:
        writer.write(f"{proc.dir / 'monitor.cfg'}\n".encode())
        if prepare is not None:
            await prepare()
        writer.write(b"go\n")
        told = True
        async with asyncio.timeout(runtime.timeout):
            lines = []
            while line := (await reader.readline()).decode(errors="replace").strip():
                word, _, rest = line.partition(" ")
                if word == "pid" and rest.isdigit():
                    pid = int(rest)
                    continue
                lines.append(line)
                break
    except TimeoutError:
        _kill_group(pid)
        raise DeadlineExceeded(
            f"{runtime.name} {action} of {proc.id}: {runtime.binary} did not finish "
            f"within {runtime.timeout:g} seconds and was killed"
        ) from None
    except BaseException:
        if told:
            _kill_group(pid)
        else:
            # Not told to go, the monitor ends on its own once the connection closes;
            # wait for that, so that it no longer writes in the directory the caller
            # is about to remove.
            writer.write_eof()
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wait_for(reader.read(), runtime.timeout))
        raise
    finally:
        writer.close()
    word, _, rest = (lines[0] if lines else "").partition(" ")
    if word == "error":
        raise RuntimeFailed(rest)
    pids = rest.split()
    if word != "ok" or len(pids) != 2 or not all(p.isdigit() for p in pids):
        raise RuntimeFailed("the task monitor did not start: it ended without an answer")
    proc.pid, proc.monitor_pid = int(pids[0]), int(pids[1])


def _kill_group(pid: int) -> None:
    # The monitor leads its own process group; the runtime command under it is in it too.
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def control(proc: Process, line: str, doing: str) -> None:
    """Tell the monitor something; an error when no monitor is there to hear it.

    The monitor holds the control FIFO open for reading as long as it
    runs, so opening it without a reader (ENXIO) or finding it missing
    means the process is gone, whatever the engine recorded so far.
    """
    what = f"{doing} process {proc.id}"
    if proc.exit is not None:
        raise NotFound(f"cannot {what}: it has already exited")
    if not proc.monitor_pid:
        raise FailedPrecondition(f"cannot {what}: it is not started")
    try:
        fd = os.open(proc.dir / "control", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise NotFound(f"cannot {what}: its monitor is gone ({exc.strerror})") from None
    try:
        os.write(fd, (line + "\n").encode())
    except BlockingIOError:
        raise Unavailable(f"cannot {what}: its monitor is not keeping up; try again") from None
    except OSError as exc:
        raise NotFound(f"cannot {what}: its monitor is gone ({exc.strerror})") from None
    finally:
        os.close(fd)


def is_ours(proc: Process) -> bool:
    """Whether `proc.monitor_pid` is still the monitor of `proc` (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{proc.monitor_pid}/cmdline").read_bytes()
        if str(proc.dir / "monitor.cfg").encode() in cmdline:
            return True
        # A warm monitor has the template's command line and works in its own directory.
        return b"--template" in cmdline and os.readlink(f"/proc/{proc.monitor_pid}/cwd") == str(
            proc.dir
        )
    except OSError:
        return False


def watch(proc: Process, gone: Callable[[Process], None]) -> bool:
    """Call `gone(proc)` on the loop when its monitor ends; False if it already has."""
    try:
        pidfd = os.pidfd_open(proc.monitor_pid)
    except (ProcessLookupError, OSError):
        return False
    if not is_ours(proc):
        os.close(pidfd)
        return False
    proc.pidfd = pidfd
    asyncio.get_running_loop().add_reader(pidfd, gone, proc)
    return True


def unwatch(proc: Process) -> None:
    if proc.pidfd is not None:
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(proc.pidfd)
        os.close(proc.pidfd)
        proc.pidfd = None
