"""The per-process monitor: a small program that outlives the engine.

One monitor runs for each task process (the init process and every exec). It
is started by the engine as `python -I -S -c "<import this; boot()>"
<path of this file> <dir>/monitor.cfg` (a `marshal`led dict), uses only the
standard library and imports no more of it than the hot path needs (every
import is paid on each Tasks.Create). The engine starts it early, so it waits
for one byte on its stdin that says the config is written (end of file: give
up), then detaches from the engine at once. It then:

* becomes a child subreaper and runs `<runtime> create` (or `exec --detach`),
  so the container's process is re-parented to it and it can collect the real
  exit status;
* holds the process's stdio: output from the pipes (or the pseudo-terminal
  whose master the runtime hands over on a console socket) is written to the
  FIFOs the client passed and to a size-capped log file; input read from the
  stdin FIFO is forwarded;
* obeys a control FIFO (`close-stdin`, `resize W H`), which the engine writes;
* when the process exits, drains its output, closes the FIFOs so a client's
  copy loops end, and persists `{"status", "exited_at", "pid"}` (JSON)
  atomically to the exit file, then ends at once. The engine learns of the
  exit by watching the monitor's pid, or after a restart by reading that file.

The first line it writes on its stdout is the engine's answer:
`ok <process pid> <own pid>` or `error <message on one line>`.

Started with `--template <socket>` instead, it is the template of warm monitors: it
loads once, leaves the engine's tree, and forks a monitor for each config path sent on
the socket; such a monitor first answers `pid <own pid>`, readies itself while the engine
prepares the bundle (its files, its pipes, and the child forked to run the runtime
command, which waits for the line `go` itself and execs at once; end of file: both give
up), then goes on as above, answering on the socket.
"""

from __future__ import annotations

# The C module behind `signal`: the same calls and numbers without importing
# enum (and functools, collections) on every start.
import _signal as signal
import fcntl
import gc
import marshal
import os
import select
import struct
import sys
import termios
import time
from _functools import partial

# typing is not imported at run time: it alone costs milliseconds per start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import _socket
    from collections.abc import Callable
    from typing import Any

    Settle = Callable[[dict[str, Any], int, "Lines | None"], None]

PR_SET_CHILD_SUBREAPER = 36
READ_SIZE = 32 * 1024
# Output a slow or vanished client has not read yet is kept up to this many
# bytes per FIFO, then dropped (the log file still has it).
FIFO_BUFFER_MAX = 1 << 20
# After the process exits, its output is drained until EOF; processes it left
# behind outside a PID namespace may hold the pipes open, so give up then.
DRAIN_SECONDS = 2.0
# How often a template looks whether its socket is still the one the engine uses.
TEMPLATE_POLL = 2.0
# CPython 3.11 counts a function's first 8 runs in its code object, then rewrites its
# instructions: a function run fewer times in the template writes its code object in
# every monitor (40 KiB per monitor with one rehearsal).
REHEARSALS = 8
# What a runtime command's child says when no `go` came: no error message is empty.
GAVE_UP = b"\0"

# Each call of a builtin writes its reference count, and the builtins a monitor calls on
# its way to its steady state lie on a dozen of the template's pages (os's functions
# alone on four, with the os module, the signal module and their large int constants on
# others), which every monitor then copied. A partial's call does not touch the function
# it wraps, and these are made one after another at import, so the calls of a monitor's
# start write a page or two between them. The flags are ints made here for the same
# reason (os's own are spread over its module's pages).
os_read = partial(os.read)
os_write = partial(os.write)
os_open = partial(os.open)
os_close = partial(os.close)
os_lseek = partial(os.lseek)
os_pipe2 = partial(os.pipe2)
os_set_blocking = partial(os.set_blocking)
os_fork = partial(os.fork)
os_waitpid = partial(os.waitpid)
os_exitcode = partial(os.waitstatus_to_exitcode)
os_getpid = partial(os.getpid)
os_setpgid = partial(os.setpgid)
os_chdir = partial(os.chdir)
os_dup2 = partial(os.dup2)
os_stat = partial(os.stat)
select_ = partial(select.select)
set_wakeup_fd = partial(signal.set_wakeup_fd)
set_signal = partial(signal.signal)
marshal_loads = partial(marshal.loads)
decode = partial(bytes.decode)
encode = partial(str.encode)
find = partial(bytes.find)
to_int = partial(int)
gc_freeze = partial(gc.freeze)
# A template's accept on its listener, made here beside the others (`template` points it
# at the listener): the template calls it after each fork, and a page only it wrote there
# would be one more copy in every monitor.
template_accept = partial(int)
WRITE_APPEND = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
RDWR_NONBLOCK = os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC
NONBLOCK = os.O_NONBLOCK | os.O_CLOEXEC
CLOEXEC = os.O_CLOEXEC + 0  # a new int, beside the others
READ = os.O_RDONLY | os.O_CLOEXEC
RDWR = os.O_RDWR | os.O_CLOEXEC
DEVNULL = "/dev/null"


def key(name: str) -> str:
    """`name` as a string object of this module's, not the interned one of that value."""
    return (name + " ")[:-1]


# The config's keys a monitor reads on its way to its steady state. As literals they are
# interned strings, shared with the rest of the template (`dir` and `argv` are
# libpython's own), on half a dozen pages every lookup wrote in every monitor; the config
# is written with its keys not interned either (`config_bytes`).
DIR = key("dir")
ARGV = key("argv")
TERMINAL = key("terminal")
STDIN = key("stdin")
STDOUT = key("stdout")
STDERR = key("stderr")
LOG = key("log")
LOG_MAX = key("log_max")
CRI_LOG = key("cri_log")
PID_FILE = key("pid_file")
# The engine's too (`monitor_protocol.CONFIG_FORMAT`).
CONFIG_FORMAT = 2
# By name, so that no monitor reads it through the `_signal` module (its count too).
SIGCHLD = signal.SIGCHLD + 0


class Log:
    """An append-only log file that rotates to `<path>.1` when it reaches `limit`."""

    __slots__ = ("fd", "limit", "path", "size")

    def __init__(self, path: str, limit: int) -> None:
        self.path = path
        self.limit = limit if limit > 4096 else 4096
        self.fd = os_open(path, WRITE_APPEND, 0o640)
        # Its end is its size; lseek makes no stat_result, whose heap type is one more page.
        self.size = os_lseek(self.fd, 0, 2)

    def write(self, data: bytes) -> None:
        if self.size + len(data) > self.limit and self.size > 0:
            os.close(self.fd)
            os.replace(self.path, self.path + ".1")
            self.fd = os.open(
                self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o640
            )
            self.size = 0
        data = data[-self.limit :]
        try:
            os.write(self.fd, data)
            self.size += len(data)
        except OSError:
            pass

    def close(self) -> None:
        os.close(self.fd)


class CriLog:
    """Output in Kubernetes' CRI log format: `<RFC 3339 nano time> <stream> <F|P> <line>`.

    Full lines are tagged F; a line longer than `max_line` is cut into P
    records; what is left when the process ends is written as a full line.
    `reopen` (the control word `reopen-log`) starts a new file after rotation.
    """

    def __init__(self, path: str, max_line: int) -> None:
        self.path = path
        self.max_line = max(max_line, 256)
        self.pending: dict[str, bytes] = {}
        self.fd = -1
        self.reopen()

    def reopen(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o640)

    def _record(self, stream: str, tag: bytes, line: bytes) -> None:
        ns = time.time_ns()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 1_000_000_000))
        head = f"{stamp}.{ns % 1_000_000_000:09d}Z {stream} ".encode()
        try:  # noqa: SIM105 - contextlib is not imported, to start fast
            os.write(self.fd, head + tag + b" " + line + b"\n")
        except OSError:
            pass

    def write(self, stream: str, data: bytes) -> None:
        buf = self.pending.get(stream, b"") + data
        while True:
            cut = buf.find(b"\n")
            if cut < 0 or cut > self.max_line:
                if len(buf) < self.max_line:
                    break
                self._record(stream, b"P", buf[: self.max_line])
                buf = buf[self.max_line :]
                continue
            self._record(stream, b"F", buf[:cut])
            buf = buf[cut + 1 :]
        self.pending[stream] = buf

    def close(self) -> None:
        for stream, rest in self.pending.items():
            if rest:
                self._record(stream, b"F", rest)
        self.pending.clear()
        os.close(self.fd)
        self.fd = -1


class Sink:
    """A client FIFO the monitor writes output into, without ever blocking."""

    __slots__ = ("fd", "pending")

    def __init__(self, path: str) -> None:
        # O_RDWR never blocks on a FIFO and never fails for want of a reader,
        # so a client that opens its end late still gets everything.
        self.fd: int | None = os_open(path, RDWR_NONBLOCK)
        self.pending = bytearray()

    def write(self, data: bytes) -> None:
        if self.fd is None:
            return
        self.pending += data
        if len(self.pending) > FIFO_BUFFER_MAX:
            del self.pending[: len(self.pending) - FIFO_BUFFER_MAX]
        self.flush()

    def flush(self) -> None:
        while self.fd is not None and self.pending:
            try:
                n = os.write(self.fd, self.pending)
            except BlockingIOError:
                return
            except OSError:
                self.pending.clear()
                return
            del self.pending[:n]

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class Monitor:
    # Slots, not an instance dict: making an instance with a dict also takes a reference
    # to its class's shared keys, on a page of the template's. So with `Log`, `Sink` and
    # `Lines`.
    __slots__ = (
        "cfg",
        "children",
        "control",
        "control_buf",
        "cri_log",
        "dir",
        "exit_status",
        "exited_at",
        "log",
        "master",
        "pid",
        "sinks",
        "sources",
        "stdin_fifo",
        "stdin_target",
        "streams",
        "terminal",
        "wake_r",
        "wake_w",
    )

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.dir: str = cfg[DIR]
        self.terminal: bool = cfg[TERMINAL]
        self.children: dict[int, int] = {}
        self.pid = 0
        self.exit_status: int | None = None
        self.exited_at = 0
        self.log = Log(cfg[LOG], to_int(cfg[LOG_MAX]))
        self.cri_log = (
            CriLog(cfg[CRI_LOG], int(cfg.get("cri_log_line", 16384))) if cfg[CRI_LOG] else None
        )
        self.streams: dict[int, str] = {}
        self.sinks: list[Sink] = []
        self.sources: dict[int, Sink | None] = {}
        self.stdin_fifo: int | None = None
        self.stdin_target: int | None = None
        self.master: int | None = None
        self.control = os_open(f"{self.dir}/control", RDWR_NONBLOCK)
        self.control_buf = b""
        self.wake_r, self.wake_w = os_pipe2(NONBLOCK)
        set_wakeup_fd(self.wake_w)
        set_signal(SIGCHLD, ignore)

    # --- starting the process -------------------------------------------------

    def _sink(self, name: str) -> Sink | None:
        # Every key is in a config (`monitor_protocol.spawn`); an empty path is no FIFO.
        path = self.cfg[name]
        return Sink(path) if path else None

    def start(self, lines: Lines | None = None) -> None:
        """Run the runtime command and learn its process; with `lines`, once told `go`."""
        stdout, stderr = self._sink(STDOUT), self._sink(STDERR)
        if self.cfg[STDIN]:
            self.stdin_fifo = os_open(self.cfg[STDIN], RDWR_NONBLOCK)
        devnull = os_open(DEVNULL, RDWR)
        argv = [*self.cfg[ARGV]]
        child_fds = [devnull, devnull, devnull]
        close_after = [devnull]
        listener = None
        dirfd = -1
        if self.terminal:
            # Only terminals need sockets; the C module, since Python's socket module
            # alone would cost each cold monitor's start, and a template's memory.
            import _socket

            listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
            dirfd = os.open(self.dir, os.O_PATH | os.O_CLOEXEC)
            # Unix socket paths are limited to 108 bytes and bundle paths are
            # not; a path through our own fd table is always short.
            listener.bind(f"/proc/self/fd/{dirfd}/console.sock")
            listener.listen(1)
            argv[self.cfg["console_socket_index"]] = f"/proc/{os.getpid()}/fd/{dirfd}/console.sock"
        else:
            out_r, out_w = os_pipe2(CLOEXEC)
            err_r, err_w = os_pipe2(CLOEXEC)
            os_set_blocking(out_r, False)
            os_set_blocking(err_r, False)
            self.sources[out_r] = stdout
            self.sources[err_r] = stderr
            self.streams = {out_r: "stdout", err_r: "stderr"}
            child_fds[1], child_fds[2] = out_w, err_w
            close_after += [out_w, err_w]
            if self.stdin_fifo is not None:
                in_r, in_w = os_pipe2(CLOEXEC)
                child_fds[0] = in_r
                close_after += [in_r]
                self.stdin_target = in_w
        # No comprehension: each is a function made and called, its code object written.
        for sink in (stdout, stderr):
            if sink is not None:
                self.sinks += [sink]
        runtime_pid = spawn(argv, child_fds, lines)
        for fd in close_after:
            os_close(fd)
        if listener is not None:
            self._receive_console(listener, runtime_pid, stdout)
            os.close(dirfd)
        status = self._wait_for(runtime_pid)
        if status != 0:
            raise RuntimeError(self._runtime_error(status))
        self.pid = to_int(read_file(self.cfg[PID_FILE]))
        if self.pid in self.children:
            # A short exec can be over before the runtime has even returned, and a
            # rehearsal's runtime command is its process.
            self.exit_status = self.children[self.pid]
            del self.children[self.pid]
            self.exited_at = time.time_ns()
        if runtime_pid in self.children:
            del self.children[runtime_pid]

    def _receive_console(
        self, listener: _socket.socket, runtime_pid: int, out: Sink | None
    ) -> None:
        import _socket

        listener.setblocking(False)
        while True:
            ready, _, _ = select.select([listener, self.wake_r], [], [])
            self._reap()
            if listener not in ready and runtime_pid in self.children:
                # The runtime connects before it exits, so a connection that
                # is not queued now will never come.
                ready, _, _ = select.select([listener], [], [], 0)
            if listener in ready:
                conn = _socket.socket(fileno=listener._accept()[0])
                conn.setblocking(True)
                _, ancillary, _, _ = conn.recvmsg(4096, _socket.CMSG_SPACE(4))
                conn.close()
                listener.close()
                fds = [
                    int.from_bytes(data[:4], sys.byteorder)
                    for level, kind, data in ancillary
                    if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS and len(data) >= 4
                ]
                if not fds:
                    raise RuntimeError("the runtime sent no terminal on the console socket")
                self.master = fds[0]
                os.set_blocking(self.master, False)
                self.sources[self.master] = out
                if self.stdin_fifo is not None:
                    self.stdin_target = self.master
                return
            if runtime_pid in self.children:
                listener.close()
                return

    def _wait_for(self, pid: int) -> int:
        """The exit status of child `pid`, which stays among `children` for `start`."""
        while pid not in self.children:
            select_([self.wake_r], [], [], 1.0)
            self._reap()
        return self.children[pid]

    def _runtime_error(self, status: int) -> str:
        import json  # only failures parse the runtime's log

        messages: list[str] = []
        try:
            with open(self.cfg["runtime_log"], errors="replace") as fp:
                for line in fp:
                    try:
                        entry = json.loads(line)
                    except ValueError:
                        if line.strip():
                            messages.append(line.strip())
                        continue
                    if isinstance(entry, dict) and entry.get("level") in ("error", "fatal"):
                        messages.append(str(entry.get("msg", "")))
        except OSError:
            pass
        for fd in list(self.sources):
            try:
                data = os.read(fd, READ_SIZE)
            except OSError:
                data = b""
            if data.strip():
                messages.append(data.decode(errors="replace").strip())
        detail = "; ".join(m for m in messages if m) or f"exit status {status}"
        prefix = f"{self.cfg['runtime_name']} {self.cfg['action']} failed"
        return detail if detail.startswith(prefix) else f"{prefix}: {detail}"

    # --- children -------------------------------------------------------------

    def _reap(self) -> None:
        # One read empties the pipe but for a flood of signals, which wakes us again;
        # reading until it raises would raise on every turn.
        try:  # noqa: SIM105 - contextlib is not imported, to start fast
            os_read(self.wake_r, 4096)
        except BlockingIOError:
            pass
        while True:
            try:
                pid, status = os_waitpid(-1, 1)  # WNOHANG
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os_exitcode(status)
            if pid == self.pid and self.exit_status is None:
                self.exit_status = 128 - code if code < 0 else code
                self.exited_at = time.time_ns()
            else:
                self.children[pid] = 128 - code if code < 0 else code

    # --- the copy loop ----------------------------------------------------------

    def _read_source(self, fd: int) -> bool:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            return True
        except OSError:
            data = b""
        if not data:
            self.sources.pop(fd)
            if fd != self.master:
                os.close(fd)
            return False
        self.log.write(data)
        if self.cri_log is not None:
            self.cri_log.write(self.streams.get(fd, "stdout"), data)
        sink = self.sources[fd]
        if sink is not None:
            sink.write(data)
        return True

    def _forward_stdin(self) -> bool:
        """Move one read of input along; False when there was nothing to move."""
        assert self.stdin_fifo is not None
        try:
            data = os.read(self.stdin_fifo, READ_SIZE)
        except BlockingIOError:
            return False
        if not data or self.stdin_target is None:
            return False
        try:
            os.write(self.stdin_target, data)
        except OSError:
            self._close_stdin()
            return False
        return True

    def _close_stdin(self) -> None:
        if self.stdin_fifo is not None:
            os.close(self.stdin_fifo)
            self.stdin_fifo = None
        if self.stdin_target is not None:
            if self.stdin_target != self.master:
                os.close(self.stdin_target)
            elif self.master is not None:
                # A terminal has no half-close: send the EOF character instead.
                try:  # noqa: SIM105 - contextlib is not imported, to start fast
                    os.write(self.master, b"\x04")
                except OSError:
                    pass
            self.stdin_target = None

    def _control(self) -> None:
        try:
            self.control_buf += os.read(self.control, 4096)
        except BlockingIOError:
            return
        *lines, self.control_buf = self.control_buf.split(b"\n")
        for line in lines:
            words = line.decode(errors="replace").split()
            if words == ["close-stdin"]:
                # Input the client wrote before asking to close still goes in.
                while self.stdin_fifo is not None and self._forward_stdin():
                    pass
                self._close_stdin()
            elif words == ["reopen-log"] and self.cri_log is not None:
                self.cri_log.reopen()
            elif len(words) == 3 and words[0] == "resize" and self.master is not None:
                width, height = int(words[1]), int(words[2])
                winsize = struct.pack("HHHH", height, width, 0, 0)
                try:  # noqa: SIM105 - contextlib is not imported, to start fast
                    fcntl.ioctl(self.master, termios.TIOCSWINSZ, winsize)
                except OSError:
                    pass

    def run(self) -> None:
        drain_deadline: float | None = None
        while True:
            if self.exit_status is not None and drain_deadline is None:
                drain_deadline = time.monotonic() + DRAIN_SECONDS
            if drain_deadline is not None and (
                not self.sources or time.monotonic() > drain_deadline
            ):
                break
            readers = [self.wake_r, self.control, *self.sources]
            if self.stdin_fifo is not None:
                readers += [self.stdin_fifo]
            # A loop, not a comprehension (a function made and called on every turn).
            writers = []
            for sink in self.sinks:
                if sink.pending and sink.fd is not None:
                    writers += [sink.fd]
            timeout = None if drain_deadline is None else 0.1
            try:
                readable, writable, _ = select_(readers, writers, [], timeout)
            except InterruptedError:
                continue
            for fd in readable:
                if fd == self.wake_r:
                    self._reap()
                elif fd == self.control:
                    self._control()
                elif fd == self.stdin_fifo:
                    self._forward_stdin()
                elif fd in self.sources:
                    self._read_source(fd)
            for sink in self.sinks:
                if sink.fd in writable:
                    sink.flush()
        self.finish()

    def finish(self) -> None:
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            pending = [s.fd for s in self.sinks if s.pending and s.fd is not None]
            if not pending:
                break
            _, writable, _ = select.select([], pending, [], 0.1)
            for sink in self.sinks:
                if sink.fd in writable:
                    sink.flush()
        for sink in self.sinks:
            sink.close()
        self._close_stdin()
        if self.master is not None:
            os.close(self.master)
        self.log.close()
        if self.cri_log is not None:
            self.cri_log.close()
        status = self.exit_status if self.exit_status is not None else 255
        write_exit(self.cfg["exit_file"], status, self.exited_at or time.time_ns(), self.pid)


def ignore(*_: object) -> None:
    """SIGCHLD's handler: the wake-up fd carries the news. One function, not one per monitor."""


class GaveUp(Exception):
    """The engine gave up on this process before it was created: no `go` came."""


def spawn(argv: list[str], stdio: list[int], lines: Lines | None = None) -> int:
    """Start `argv` with `stdio` as its fds 0-2, and this process's environment; its pid.

    With `lines`, the child forked for it waits for `go` on them, and execs the moment it
    comes: a warm monitor forks while the engine still prepares the bundle, so neither
    the fork nor the monitor's own wake-up is on the way from `go` to the runtime
    command. End of file instead raises `GaveUp`.

    fork and exec rather than posix_spawn, which converts an environment dict for every
    call: its strings are on a dozen of the template's pages, which every monitor then
    copied (50 KiB each). exec passes the environment no Python object holds. A failed
    exec is raised here, with the message posix_spawn would give.
    """
    failed_r, failed_w = os_pipe2(CLOEXEC)
    pid = os_fork()
    if pid == 0:
        try:
            for i, fd in enumerate(stdio):
                os.dup2(fd, i)
            for sig in (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            if lines is not None and lines.next() != b"go":
                os.write(failed_w, GAVE_UP)
                os._exit(1)
            os.execvp(argv[0], argv)
        except BaseException as exc:
            os.write(failed_w, str(exc).encode(errors="replace"))
        finally:
            os._exit(127)
    if lines is not None:
        lines.handed_on = True
    os_close(failed_w)
    try:
        # End of file once exec has closed the pipe: the command runs.
        failure = os_read(failed_r, 4096)
    finally:
        os_close(failed_r)
    if failure:
        os.waitpid(pid, 0)
        if failure == GAVE_UP:
            raise GaveUp
        raise OSError(failure.decode(errors="replace"))
    return pid


def write_exit(path: str, status: int, exited_at: int, pid: int) -> None:
    """Persist the exit for an engine that restarts; the rename makes it all-or-nothing.

    There is no fsync: the file only has to outlive the engine, not the host,
    and after a host crash the container is gone and reported as lost anyway.
    """
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o640)
    try:
        os.write(fd, f'{{"status": {status}, "exited_at": {exited_at}, "pid": {pid}}}'.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_file(path: str) -> bytes:
    """A small file's bytes, read with bare system calls (see `template` for why)."""
    fd = os_open(path, READ)
    data = b""
    try:
        while chunk := os_read(fd, 65536):
            data += chunk
    finally:
        os_close(fd)
    return data


_prctl: Any = None


def prctl() -> Any:
    """libc's prctl, looked up once per process (a template does so before it forks).

    Through the C module alone: ctypes' Python layer is 220 KiB of a template's memory,
    and a function that returns an int needs none of it.
    """
    global _prctl
    if _prctl is None:
        import _ctypes

        class Function(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL

        class Libc:
            _handle = _ctypes.dlopen(None)

        _prctl = Function(("prctl", Libc))
    return _prctl


def become_subreaper() -> None:
    """Orphans below us are re-parented to us, so the container's exit status is ours to read."""
    prctl()(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def detach() -> None:
    """Leave the engine's process tree: the engine reaps our parent at once."""
    if os.fork() > 0:
        os._exit(0)
    become_subreaper()
    os.chdir("/")


def say(fd: int, line: str) -> None:
    """Answer the engine; an engine that went away meanwhile is no reason to stop."""
    try:  # noqa: SIM105 - contextlib is not imported, to start fast
        os_write(fd, encode(line))
    except BrokenPipeError:
        pass


def main(argv: list[str]) -> int:
    # The engine starts the interpreter before the config is written, so that
    # the two overlap; one byte on stdin says go, end of file says give up.
    if not os.read(0, 1):
        return 1
    return run(argv[-1], os.dup(1))


class Lines:
    """Lines the engine sends on a warm monitor's connection, read with bare system calls."""

    __slots__ = ("buf", "fd", "handed_on")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""
        # Whether a child forked to run the runtime command reads the rest (`spawn`).
        self.handed_on = False

    def next(self) -> bytes:
        """The next line without its end; empty at end of file."""
        # 10 is b"\n": a small int is the interpreter's, a bytes constant one more page.
        while 10 not in self.buf:
            chunk = os_read(self.fd, 4096)
            if not chunk:
                return b""
            self.buf += chunk
        end = find(self.buf, 10)
        line, self.buf = self.buf[:end], self.buf[end + 1 :]
        return line


def run(
    cfg_path: str, report: int, lines: Lines | None = None, settle: Settle | None = None
) -> int:
    """Load the config, detach, start the process and report, then watch it to its end.

    A warm monitor (`lines` from its connection) readies itself while the engine
    prepares the bundle, and runs the runtime command once told `go`. `settle` is what
    leaves the caller's process group, directory and stdio (`leave`); a template's
    rehearsal, which stays, runs the same course with `stay`.
    """
    cfg = marshal_loads(read_file(cfg_path))
    (settle or leave)(cfg, report, lines)
    try:
        monitor = Monitor(cfg)
        monitor.start(lines)
    except GaveUp:
        return 1
    except Exception as exc:  # every failure must reach the engine as a message
        # The engine reads answers once it has said go; a child forked for the runtime
        # command has taken it, else it is still to come.
        if lines is not None and not lines.handed_on and lines.next() != b"go":
            return 1
        message = " ".join((str(exc) or type(exc).__name__).split())
        say(report, f"error {message}\n")
        os.close(report)
        return 1
    say(report, f"ok {monitor.pid} {os_getpid()}\n")
    os_close(report)
    monitor.run()
    return 0


def leave(cfg: dict[str, Any], report: int, lines: Lines | None) -> None:
    """Leave the engine's process tree or the template's group and directory, and stdio."""
    if lines is not None:
        # Forked from the template, it leads a process group of its own, so the engine
        # can end the monitor and the runtime command under it together; it stays in
        # the template's session, as a new session is a new scheduler autogroup that
        # `runc create` would wait in. It works in its process's directory: the engine
        # recognises it by that, since its command line is the template's.
        os_setpgid(0, 0)
        become_subreaper()
        os_chdir(cfg[DIR])
        say(report, f"pid {os_getpid()}\n")
    else:
        detach()
        # Our own stdin and stdout go nowhere the engine waits on: a monitor must never
        # block on, or die with, the engine's pipes. A template's are /dev/null already,
        # and it ignores SIGHUP and SIGINT already.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    errors_fd = os_open(f"{cfg[DIR]}/monitor.err", WRITE_APPEND, 0o640)
    os_dup2(errors_fd, 2)


def stay(cfg: dict[str, Any], report: int, lines: Lines | None) -> None:
    """A rehearsal's `settle`: it stays where the template is, and answers as a monitor."""
    say(report, f"pid {os_getpid()}\n")


def serve(conn: int, settle: Settle | None = None) -> int:
    """A monitor just forked from the template: its config's path comes first on `conn`."""
    lines = Lines(conn)
    path = lines.next()
    if not path:
        return 1
    return run(decode(path), conn, lines, settle)


def config_bytes(cfg: dict[str, Any]) -> bytes:
    """A config as the monitor reads it: marshal's format 2, whose strings load un-interned.

    Format 4 would mark the keys interned, and loading them would take a reference to
    the template's interned strings of those names (see `DIR`).
    """
    return marshal.dumps(cfg, CONFIG_FORMAT)


def stand_in_config(directory: str, argv: list[str]) -> dict[str, object]:
    """A task monitor's config over a stand-in runtime command, its files in `directory`.

    The keys and paths are a task's (stdin included), as `monitor_protocol.spawn` writes
    them, so a monitor run on it takes a real monitor's course.
    """
    return {
        "dir": directory,
        "argv": argv,
        "action": "create",
        "runtime_name": "sh",
        "runtime_log": f"{directory}/runtime.log",
        "terminal": False,
        "console_socket_index": -1,
        "stdin": f"{directory}/stdin",
        "stdout": f"{directory}/stdout",
        "stderr": f"{directory}/stderr",
        "log": f"{directory}/log",
        "cri_log": "",
        "log_max": 1 << 20,
        "exit_file": f"{directory}/exit",
        "pid_file": f"{directory}/pid",
    }


def rehearse(directory: str) -> None:
    """Run a monitor's course in the template, on a process that ends at once.

    CPython writes a function's code object on its first runs (warm-up counters,
    specialised instructions) and fills lookup caches and memory pools as it goes: done
    here once, before any fork, those pages stay shared instead of every monitor
    writing its own copy. The course is a forked monitor's, from `serve` on, over a
    connection, but for `stay` in place of `leave`. A rehearsal that fails leaves the
    template as it was; whatever it opened is closed.
    """
    import _socket

    clear(directory)
    before = set(os.listdir("/proc/self/fd"))
    engine, monitor = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        os.mkdir(directory, 0o700)
        for name in ("control", "stdin", "stdout", "stderr"):
            os.mkfifo(f"{directory}/{name}", 0o600)
        cfg = stand_in_config(
            directory, ["sh", "-c", f"echo $$ > {directory}/pid; echo out; echo err >&2"]
        )
        fd = os.open(f"{directory}/monitor.cfg", os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, config_bytes(cfg))
        os.close(fd)
        engine.sendall(f"{directory}/monitor.cfg\ngo\n".encode())
        # serve closes the connection, as a monitor does once it has answered.
        serve(monitor.detach(), stay)
    except Exception:
        pass  # a template that could not rehearse still works, only less shared
    finally:
        signal.set_wakeup_fd(-1)
        monitor.close()
        engine.close()
        # What the monitor left open (its control FIFO and wake-up pipe, and more if it
        # failed): a monitor's process ends, a template goes on.
        for fd in set(os.listdir("/proc/self/fd")) - before:
            try:  # noqa: SIM105 - contextlib is not imported: each module is template memory
                os.close(int(fd))
            except OSError:
                pass  # the directory's own descriptor, closed already
        clear(directory)


def clear(directory: str) -> None:
    """Remove a flat directory and what is in it, if it is there."""
    try:
        for name in os.listdir(directory):
            os.unlink(f"{directory}/{name}")
        os.rmdir(directory)
    except FileNotFoundError:
        pass


def template(path: str) -> int:
    """Serve warm monitors: each connection sends a config path, and gets a forked monitor.

    The template listens on `path` (mode 0600), leaves the engine's process tree (so it
    outlives engine restarts, as monitors do) and forks a monitor per request: no
    interpreter start, and the pages it loaded stay shared with every monitor. It ends
    when `path` is removed or replaced (a graceful engine stop, another template).

    A page stays shared only until either side writes it, and in CPython a write is
    also every reference count taken and every first run of a function (its warm-up
    counters live in its code object). So the template imports only C modules beyond
    what a monitor runs, rehearses a monitor's course `REHEARSALS` times (`rehearse`),
    runs a loop of bare system calls between forks and freezes its objects out of the
    cyclic collector's reach right before each fork; and a monitor reads and answers with
    bare system calls too, not Python's io and socket layers, and imports nothing. The
    engine compiles this module's bytecode for it (`monitor_protocol.fresh_bytecode`).
    """
    import _socket

    with_umask = os.umask(0o177)
    listener = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:  # noqa: SIM105 - contextlib is not imported: each module is template memory
        os.unlink(path)
    except FileNotFoundError:
        pass
    listener.bind(path)
    os.umask(with_umask)
    listener.listen(64)
    ident = os.stat(path).st_ino
    if os.fork() > 0:
        return 0  # the engine waits for this: the socket is ready
    # A process group of its own, but the engine's session: a session of its own is a
    # scheduler autogroup of its own, in which every `runc create` of its monitors waited
    # on a loaded host (run-queue wait 6-10 ms at p50 against 2.4-3.4 in the engine's).
    os.setpgid(0, 0)
    os.chdir("/")
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    prctl()
    for _ in range(REHEARSALS):
        rehearse(f"{path}.rehearsal")
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped by the kernel
    listener.setblocking(False)
    fileno = listener.fileno()
    # What the loop writes after a fork, the monitor just forked keeps a copy of: so it
    # calls what a monitor calls too (the stand-ins above). A partial's state is its
    # function, its arguments, its keywords and its attributes.
    template_accept.__setstate__((listener._accept, (), None, None))
    while True:
        ready, _, _ = select_([fileno], [], [], TEMPLATE_POLL)
        if not ready:
            try:
                if os_stat(path).st_ino != ident:
                    return 0
            except FileNotFoundError:
                return 0
            continue
        try:
            conn, _ = template_accept()
        except OSError:
            continue  # the client left before we took it
        gc_freeze()
        if os_fork() == 0:
            code = 1
            try:
                os_close(fileno)
                set_signal(SIGCHLD, 0)  # SIG_DFL
                code = serve(conn)
            finally:
                os._exit(code)
        os_close(conn)


def boot() -> None:
    """The program's entry point; the engine calls it after importing this module."""
    # os._exit skips the interpreter's teardown: the exit file is written and
    # every descriptor that matters is closed, and the engine learns of the
    # exit only when this process is gone.
    if sys.argv[2:3] == ["--template"]:
        os._exit(template(sys.argv[-1]))
    os._exit(main(sys.argv))
