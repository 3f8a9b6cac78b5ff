"""The monitor's parts: its log file, its FIFO sinks, and how it starts the runtime."""

from __future__ import annotations

import contextlib
import marshal
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import core.runtime.monitor as monitor_module
from core.runtime import monitor_protocol
from core.runtime.monitor import Log, Sink, become_subreaper, spawn


def test_log_rotates_at_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "log"
    log = Log(str(path), 4096)
    log.write(b"a" * 3000)
    log.write(b"b" * 2000)
    log.close()
    assert (tmp_path / "log.1").read_bytes() == b"a" * 3000
    assert path.read_bytes() == b"b" * 2000
    log = Log(str(path), 4096)
    log.write(b"c" * 10000)
    log.close()
    assert path.read_bytes() == b"c" * 4096
    assert (tmp_path / "log.1").read_bytes() == b"b" * 2000


def test_sink_buffers_when_nobody_reads(tmp_path: Path) -> None:
    fifo = tmp_path / "out"
    os.mkfifo(fifo)
    sink = Sink(str(fifo))
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        sink.write(b"x" * (1 << 17))
        assert sink.pending
        got = b""
        while len(got) < 1 << 17:
            try:
                got += os.read(reader, 1 << 16)
            except BlockingIOError:
                sink.flush()
        assert got == b"x" * (1 << 17)
    finally:
        sink.close()
        os.close(reader)


def test_a_config_loads_with_keys_of_its_own() -> None:
    """The engine's config format loads keys that are not the interned strings of the names."""
    cfg = monitor_module.stand_in_config("/run/x", ["runc", "create"])
    assert monitor_protocol.CONFIG_FORMAT == monitor_module.CONFIG_FORMAT
    loaded = marshal.loads(monitor_module.config_bytes(cfg))
    assert loaded == cfg
    for name in loaded:
        assert name is not sys.intern(name)
    # The monitor's own keys find the values, and are not the interned strings either.
    assert loaded[monitor_module.DIR] == "/run/x"
    assert loaded[monitor_module.ARGV] == ["runc", "create"]
    assert monitor_module.DIR == "dir" and monitor_module.DIR is not sys.intern("dir")


def test_lines_come_whole_whatever_the_reads(tmp_path: Path) -> None:
    """`Lines` splits at newlines across reads, and ends with an empty line at end of file."""
    read_end, write_end = os.pipe()
    lines = monitor_module.Lines(read_end)
    try:
        os.write(write_end, b"/a/path/monitor.cfg\ng")
        assert lines.next() == b"/a/path/monitor.cfg"
        os.write(write_end, b"o\n\nlast")
        assert lines.next() == b"go"
        assert lines.next() == b""
        os.close(write_end)
        assert lines.next() == b""
    finally:
        os.close(read_end)


def _run(argv: list[str]) -> tuple[int, bytes]:
    """Run `argv` through `spawn` with a pipe as its stdout: exit status and output."""
    out_r, out_w = os.pipe()
    devnull = os.open(os.devnull, os.O_RDWR)
    try:
        pid = spawn(argv, [devnull, out_w, devnull])
        os.close(out_w)
        chunks = []
        while chunk := os.read(out_r, 65536):
            chunks.append(chunk)
        _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), b"".join(chunks)
    finally:
        os.close(out_r)
        os.close(devnull)


def test_spawn_passes_stdio_environment_and_default_signals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MONITOR_SPAWN_TEST", "passed on")
    # The monitor ignores these; the runtime, and the container after it, must not.
    ignored = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGHUP, signal.SIGINT)
    before = [signal.signal(sig, signal.SIG_IGN) for sig in ignored]
    try:
        code, out = _run(["sh", "-c", 'echo "$MONITOR_SPAWN_TEST"; grep SigIgn /proc/self/status'])
    finally:
        for sig, handler in zip(ignored, before, strict=True):
            signal.signal(sig, handler)
    assert code == 0
    lines = out.decode().splitlines()
    assert lines[0] == "passed on"
    mask = int(lines[1].split()[1], 16)
    assert not [sig for sig in ignored if mask & (1 << (sig - 1))]


def test_spawn_of_a_missing_command_raises_its_error(tmp_path: Path) -> None:
    with pytest.raises(OSError, match="No such file or directory"):
        spawn([str(tmp_path / "no-runtime"), "create"], [0, 1, 2])


def test_a_subreaper_collects_the_exit_of_an_orphan_below_it() -> None:
    """As a monitor does for the container's process, once the runtime has exited."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            become_subreaper()
            go_r, go_w = os.pipe()
            runtime = os.fork()
            if runtime == 0:
                if os.fork() == 0:
                    os.read(go_r, 1)  # the container's process, until its runtime is gone
                    os._exit(7)
                os._exit(0)
            os.waitpid(runtime, 0)
            os.write(go_w, b"x")
            _, status = os.waitpid(-1, 0)
            code = 0 if os.waitstatus_to_exitcode(status) == 7 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_a_rehearsal_runs_a_monitor_course_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """What a template does before it serves: stdin, stdout and stderr FIFOs, exit file."""
    directory = tmp_path / "rehearsal"
    probe = (
        f"import os, sys; sys.path.insert(0, {str(Path(monitor_module.__file__).parent)!r})\n"
        "import monitor\n"
        "seen = []\n"
        "write_exit = monitor.write_exit\n"
        "def record(path, *args):\n"
        "    seen.append(sorted(os.listdir(os.path.dirname(path))))\n"
        "    write_exit(path, *args)\n"
        "monitor.write_exit = record\n"
        f"monitor.rehearse({str(directory)!r})\n"
        "print(' '.join(seen[0]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert not directory.exists()
    assert {"stdin", "stdout", "stderr", "control", "log", "pid"} <= set(done.stdout.split())


def test_reaping_after_a_flood_of_wake_ups_collects_every_child(tmp_path: Path) -> None:
    """More pending wake-up bytes than one read takes: the next select wakes again."""
    os.mkfifo(tmp_path / "control")
    cfg = monitor_module.stand_in_config(str(tmp_path), ["true"])
    here = str(Path(monitor_module.__file__).parent)
    probe = (
        f"import os, select, sys; sys.path.insert(0, {here!r})\n"
        "import monitor\n"
        f"m = monitor.Monitor({cfg!r})\n"
        "pids = []\n"
        "for code in (3, 4, 5):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os._exit(code)\n"
        "    pids.append(pid)\n"
        "os.write(m.wake_w, bytes(20000))\n"
        "while not all(p in m.children for p in pids) or select.select([m.wake_r], [], [], 0)[0]:\n"
        "    select.select([m.wake_r], [], [], 1.0)\n"
        "    m._reap()\n"
        "print(*sorted(m.children.values()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["3", "4", "5"]


def test_a_rehearsal_answers_as_a_forked_monitor_and_closes_what_it_opened(
    tmp_path: Path,
) -> None:
    """A rehearsal runs `serve` and `run` (with `stay`); the template's fds stay as they were."""
    directory = tmp_path / "rehearsal"
    here = str(Path(monitor_module.__file__).parent)
    probe = (
        f"import os, signal, sys; sys.path.insert(0, {here!r})\n"
        "import monitor\n"
        "said = []\n"
        "say = monitor.say\n"
        "def record(fd, line):\n"
        "    said.append(line.split()[0])\n"
        "    say(fd, line)\n"
        "monitor.say = record\n"
        "before = sorted(os.listdir('/proc/self/fd'))\n"
        "cwd = os.getcwd()\n"
        f"monitor.rehearse({str(directory)!r})\n"
        f"monitor.rehearse({str(directory)!r})\n"
        "assert sorted(os.listdir('/proc/self/fd')) == before\n"
        "assert os.getcwd() == cwd and os.getpgid(0) == os.getpgid(os.getppid())\n"
        "assert signal.set_wakeup_fd(-1) == -1\n"
        "print(' '.join(said))\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["pid", "ok", "pid", "ok"]
    assert not directory.exists()


def test_a_runtime_command_that_is_its_process_gives_the_exit(tmp_path: Path) -> None:
    """`start` takes the status of a runtime command whose pid the pid file names."""
    os.mkfifo(tmp_path / "control")
    cfg = monitor_module.stand_in_config(
        str(tmp_path), ["sh", "-c", f"echo $$ > {tmp_path}/pid; exit 0"]
    )
    cfg["stdin"] = cfg["stdout"] = cfg["stderr"] = ""
    here = str(Path(monitor_module.__file__).parent)
    probe = (
        f"import signal, sys; sys.path.insert(0, {here!r})\n"
        "import monitor\n"
        f"m = monitor.Monitor({cfg!r})\n"
        "assert signal.getsignal(signal.SIGCHLD) is monitor.ignore\n"
        "m.start()\n"
        "print(m.exit_status, m.pid > 0, m.children)\n"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["0", "True", "{}"]


def test_a_cold_monitor_leaves_its_starter_and_reports_the_exit(tmp_path: Path) -> None:
    """`run` without a connection: `leave` detaches, the answer and the exit file come."""
    import json
    import marshal
    import time

    from core.runtime.monitor_protocol import MONITOR, MONITOR_BOOT

    os.mkfifo(tmp_path / "control")
    cfg = monitor_module.stand_in_config(
        str(tmp_path), ["sh", "-c", f"echo $$ > {tmp_path}/pid; echo hello"]
    )
    cfg["stdin"] = cfg["stdout"] = cfg["stderr"] = ""
    (tmp_path / "monitor.cfg").write_bytes(marshal.dumps(cfg))
    starter = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            MONITOR_BOOT,
            str(MONITOR),
            str(tmp_path / "monitor.cfg"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    out, _ = starter.communicate(b"\n", timeout=30)
    word, pid, monitor_pid = out.decode().split()
    assert word == "ok" and int(monitor_pid) != starter.pid
    deadline = time.monotonic() + 30
    while not (tmp_path / "exit").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    exit_record = json.loads((tmp_path / "exit").read_text())
    assert exit_record["status"] == 0 and exit_record["pid"] == int(pid)
    assert b"hello" in (tmp_path / "log").read_bytes()


def test_a_warm_monitor_keeps_the_templates_quiet_stdio_and_signals(tmp_path: Path) -> None:
    """A forked monitor's stdin and stdout are the template's /dev/null, its stderr its own
    file, SIGHUP and SIGINT stay ignored; it runs and reports as a cold one does."""
    import marshal
    import socket
    import time

    from core.runtime.monitor_protocol import MONITOR, MONITOR_BOOT, fresh_bytecode

    fresh_bytecode()
    sock = tmp_path / "template.sock"
    subprocess.run(
        [sys.executable, "-I", "-S", "-c", MONITOR_BOOT, str(MONITOR), "--template", str(sock)],
        check=True,
        start_new_session=True,
    )
    directory = tmp_path / "task"
    directory.mkdir()
    for name in ("control", "stdin", "stdout", "stderr"):
        os.mkfifo(directory / name)
    cfg = monitor_module.stand_in_config(
        str(directory), ["sh", "-c", f"sleep 1000 & echo $! > {directory}/pid"]
    )
    (directory / "monitor.cfg").write_bytes(marshal.dumps(cfg))
    monitor = 0
    try:
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(sock))
            conn.sendall(f"{directory}/monitor.cfg\ngo\n".encode())
            words = conn.makefile("rb").read().decode().split()
        ok = words.index("ok")
        process, monitor = int(words[ok + 1]), int(words[ok + 2])
        assert words[:2] == ["pid", str(monitor)]
        assert os.readlink(f"/proc/{monitor}/fd/0") == os.readlink(f"/proc/{monitor}/fd/1")
        assert os.readlink(f"/proc/{monitor}/fd/1") == "/dev/null"
        assert os.readlink(f"/proc/{monitor}/fd/2") == str(directory / "monitor.err")
        assert os.readlink(f"/proc/{monitor}/cwd") == str(directory)
        status = Path(f"/proc/{monitor}/status").read_text()
        ignored = int(
            next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16
        )
        assert ignored & (1 << (signal.SIGHUP - 1)) and ignored & (1 << (signal.SIGINT - 1))
        os.kill(process, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not (directory / "exit").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (directory / "exit").read_text().startswith('{"status": 137')
    finally:
        if monitor:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(monitor, signal.SIGKILL)
        sock.unlink(missing_ok=True)  # the template ends once it sees its socket gone


@pytest.fixture
def template_socket(tmp_path: Path) -> Iterator[Path]:
    """A running template of warm monitors; it ends once its socket is removed."""
    from core.runtime.monitor_protocol import MONITOR, MONITOR_BOOT, fresh_bytecode

    fresh_bytecode()
    sock = tmp_path / "template.sock"
    subprocess.run(
        [sys.executable, "-I", "-S", "-c", MONITOR_BOOT, str(MONITOR), "--template", str(sock)],
        check=True,
        start_new_session=True,
    )
    try:
        yield sock
    finally:
        sock.unlink(missing_ok=True)


def _task_dir(tmp_path: Path, argv: list[str], **cfg: object) -> Path:
    import marshal

    directory = tmp_path / "task"
    directory.mkdir()
    for name in ("control", "stdin", "stdout", "stderr"):
        os.mkfifo(directory / name)
    config = {**monitor_module.stand_in_config(str(directory), argv), **cfg}
    (directory / "monitor.cfg").write_bytes(marshal.dumps(config))
    return directory


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] == "Z"
    except OSError:
        return True


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "not within 30 seconds"
        time.sleep(0.02)


def test_a_warm_monitor_forks_ahead_and_runs_its_runtime_only_once_told_go(
    tmp_path: Path, template_socket: Path
) -> None:
    """The runtime command's child is there before `go`, but execs only after it."""
    import socket

    marker = tmp_path / "ran"
    directory = _task_dir(
        tmp_path, ["/bin/sh", "-c", f"touch {marker}; sleep 1000 & echo $! > {tmp_path}/task/pid"]
    )
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(template_socket))
        conn.sendall(f"{directory}/monitor.cfg\n".encode())
        reader = conn.makefile("rb")
        word, monitor = reader.readline().split()
        assert word == b"pid"
        try:
            _wait(lambda: _children(int(monitor)) != [])
            assert not marker.exists()
            conn.sendall(b"go\n")
            word, _, _ = reader.readline().split()
            assert word == b"ok" and marker.exists()
        finally:
            os.killpg(int(monitor), signal.SIGKILL)


def test_a_warm_monitor_the_engine_gave_up_on_ends_with_its_child(
    tmp_path: Path, template_socket: Path
) -> None:
    """End of file where `go` would come: no runtime command, no answer, nothing left."""
    import socket

    marker = tmp_path / "ran"
    directory = _task_dir(tmp_path, ["/bin/sh", "-c", f"touch {marker}"])
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(template_socket))
        conn.sendall(f"{directory}/monitor.cfg\n".encode())
        reader = conn.makefile("rb")
        _, monitor = reader.readline().split()
        _wait(lambda: _children(int(monitor)) != [])
        [child] = _children(int(monitor))
        conn.shutdown(socket.SHUT_WR)
        assert reader.read() == b""
    _wait(lambda: _gone(int(monitor)) and _gone(child))
    assert not marker.exists()


def test_a_warm_monitor_answers_a_failure_before_its_fork_once_told_go(
    tmp_path: Path, template_socket: Path
) -> None:
    """A stdout FIFO that is not there fails before the fork: the answer waits for `go`,
    and end of file instead of `go` gets none."""
    import socket

    directory = _task_dir(tmp_path, ["/bin/true"], stdout=str(tmp_path / "no-such-fifo"))
    for told in (b"", b"go\n"):
        with socket.socket(socket.AF_UNIX) as conn:
            conn.connect(str(template_socket))
            conn.sendall(f"{directory}/monitor.cfg\n".encode() + told)
            conn.shutdown(socket.SHUT_WR)
            words = conn.makefile("rb").read().decode().split()
        assert words[0] == "pid"
        assert words[2:3] == (["error"] if told else [])
        if told:
            assert "no-such-fifo" in " ".join(words)


def test_a_warm_monitor_reports_a_runtime_that_cannot_be_run(
    tmp_path: Path, template_socket: Path
) -> None:
    import socket

    directory = _task_dir(tmp_path, [str(tmp_path / "no-runtime"), "create"])
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(template_socket))
        conn.sendall(f"{directory}/monitor.cfg\ngo\n".encode())
        words = conn.makefile("rb").read().decode()
    assert "error" in words and "No such file or directory" in words
    _, monitor = words.split()[:2]
    _wait(lambda: _gone(int(monitor)))
