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
"""

from __future__ import annotations

import asyncio
import contextlib
import marshal
import os
import sys
from collections.abc import Callable
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


def console_args(stdio: Stdio) -> list[str]:
    # The monitor puts the real socket path in place of the placeholder.
    return ["--console-socket", "-"] if stdio.terminal else []


async def start(directory: Path) -> asyncio.subprocess.Process:
    """Start the interpreter of the monitor that will use `directory`.

    It loads and then waits: a byte on its stdin says its config is
    written, end of file that it is not needed.
    """
    return await asyncio.create_subprocess_exec(
        sys.executable, "-I", "-S", "-c", MONITOR_BOOT, str(MONITOR),
        str(directory / "monitor.cfg"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip


async def abandon(monitor: asyncio.subprocess.Process) -> None:
    """Let a monitor that was never told to go end, and reap it."""
    if monitor.returncode is not None:
        return
    assert monitor.stdin is not None
    monitor.stdin.close()
    await monitor.communicate()


async def spawn(
    proc: Process,
    argv: list[str],
    action: str,
    log_max: int,
    child: asyncio.subprocess.Process | None = None,
) -> None:
    """Have a monitor for `proc` run `argv`; learn the pids or the runtime's error.

    `child` is a monitor `start` started ahead for `proc.dir`; without one,
    one is started now.
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
        "log_max": log_max,
        "exit_file": str(proc.dir / "exit"),
        "pid_file": str(proc.dir / "pid"),
    }
    # marshal, not JSON: the monitor then needs no json (and re) import.
    bundles.write_private(proc.dir / "monitor.cfg", marshal.dumps(cfg))
    if child is None:
        child = await start(proc.dir)
    runtime = proc.task.runtime
    try:
        out, err = await asyncio.wait_for(child.communicate(b"\n"), runtime.timeout)
    except TimeoutError:
        # The monitor and the runtime command it runs share its session.
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
    except OSError:
        return False
    return str(proc.dir / "monitor.cfg").encode() in cmdline


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
