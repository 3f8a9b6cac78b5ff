"""Runtime commands through posix_spawn and a pidfd: output, errors, timeouts, no leaks."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from core.errors import FailedPrecondition
from core.runtime import command
from core.runtime.runtimes import Runtime, RuntimeFailed


def _fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def _children() -> list[int]:
    found = []
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if stat.rpartition(")")[2].split()[1] == me:
            found.append(int(entry))
    return found


def _script(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


async def test_output_exit_code_and_stderr_are_returned() -> None:
    done = await command.run(["/bin/sh", "-c", "echo out; echo err >&2; exit 3"], 10)
    assert done == command.Finished(3, b"out\n", b"err\n")


async def test_output_larger_than_a_pipe_buffer_is_read_whole() -> None:
    done = await command.run(["/bin/sh", "-c", "head -c 300000 /dev/zero; exit 0"], 10)
    assert done.returncode == 0 and done.stdout == bytes(300000)


async def test_stdin_is_empty_and_signals_are_at_their_defaults() -> None:
    done = await command.run(
        ["/bin/sh", "-c", "cat; grep -E '^(SigIgn|SigBlk)' /proc/self/status"], 10
    )
    assert done.returncode == 0
    lines = done.stdout.decode().splitlines()
    ignored = int(lines[0].split()[1], 16)
    # SIGPIPE (13) is ignored by the engine's interpreter, and must not be by its commands.
    assert not ignored & (1 << 12)


async def test_the_command_leads_its_own_process_group_in_our_session() -> None:
    done = await command.run(["/bin/sh", "-c", "echo $$; ps -o pgid=,sid= -p $$"], 10)
    pid, pgid, sid = done.stdout.split()
    assert pid == pgid
    assert int(sid) == os.getsid(0)


async def test_a_missing_binary_raises_its_exec_error(tmp_path: Path) -> None:
    before = _fds()
    with pytest.raises(FileNotFoundError):
        await command.run([str(tmp_path / "not-here"), "x"], 10)
    assert _fds() == before


async def test_many_commands_leave_no_descriptor_or_child() -> None:
    before = _fds()
    results = await asyncio.gather(
        *(command.run(["/bin/sh", "-c", f"echo {i}; echo e{i} >&2"], 10) for i in range(200))
    )
    assert [r.stdout for r in results] == [f"{i}\n".encode() for i in range(200)]
    assert [r.stderr for r in results] == [f"e{i}\n".encode() for i in range(200)]
    assert _fds() == before
    assert _children() == []


async def test_a_timeout_kills_the_group_even_when_a_grandchild_holds_the_pipes(
    tmp_path: Path,
) -> None:
    before = _fds()
    # The shell ends at once; the sleep it leaves behind keeps stdout open.
    with pytest.raises(TimeoutError):
        await command.run(["/bin/sh", "-c", "sleep 424242 & echo started"], 0.5)
    assert _fds() == before
    assert _children() == []
    for _ in range(100):
        if not any(
            "424242" in Path(f"/proc/{p}/cmdline").read_text(errors="replace")
            for p in os.listdir("/proc")
            if p.isdigit() and Path(f"/proc/{p}/cmdline").exists()
        ):
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the grandchild outlived the timeout")


def _runtime(tmp_path: Path, binary: Path) -> Runtime:
    return Runtime(name="fake", runtime_type="io.containerd.runc.v2", binary=str(binary),
                   state_root=tmp_path / "state", flavour="runc", timeout=10)  # fmt: skip


async def test_a_failing_runtime_command_reports_its_stderr(tmp_path: Path) -> None:
    binary = _script(
        tmp_path, "runc-fails",
        'echo \'{"level":"error","msg":"container \\"c1\\" does not exist"}\' >&2\nexit 1\n',
    )  # fmt: skip
    with pytest.raises(RuntimeFailed, match=r'fake start: container "c1" does not exist'):
        await _runtime(tmp_path, binary).run("ns", "start", "c1")
    silent = _script(tmp_path, "runc-silent", "exit 7\n")
    with pytest.raises(RuntimeFailed, match="exit status 7"):
        await _runtime(tmp_path, silent).run("ns", "kill", "c1", "9")


async def test_a_runtime_binary_gone_since_start_up_is_a_typed_error(tmp_path: Path) -> None:
    binary = _script(tmp_path, "runc-removed", "exit 0\n")
    runtime = _runtime(tmp_path, binary)
    assert await runtime.run("ns", "state", "c1") == ""
    binary.unlink()
    with pytest.raises(FailedPrecondition, match="runc-removed"):
        await runtime.run("ns", "start", "c1")
    binary.write_text("not a program")
    binary.chmod(0o644)
    with pytest.raises(FailedPrecondition, match="runc-removed"):
        await runtime.run("ns", "start", "c1")
