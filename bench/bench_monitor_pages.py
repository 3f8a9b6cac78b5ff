"""Monitor memory page by page: a template and N warm monitors over a stand-in runtime.

Starts `core/runtime/monitor.py --template` as the engine does (its bytecode made fresh
first), has it fork N monitors over `sh -c 'sleep 1000 & echo $! > pid'` with stdin,
stdout and stderr FIFOs, and prints per monitor (the template's share counted): RSS,
PSS and private dirty memory from smaps_rollup; "own PSS", each page divided among the
template and monitors that map it and no other process (from /proc/PID/pagemap: unlike
PSS it does not move with what else runs on the host); and how many of a monitor's
private pages hold the same bytes in every monitor, or as the template's page. Every
monitor, its process and the template end before it returns. Needs root (page frames).

    .venv/bin/python -m bench.bench_monitor_pages [--monitors N] [--python PATH]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.runtime.monitor import config_bytes, stand_in_config
from core.runtime.monitor_protocol import MONITOR, MONITOR_BOOT, fresh_bytecode

PAGE = 4096
SETTLE = 1.0
"""Seconds to let the monitors reach their steady memory before reading it."""


def rollup(pid: int) -> dict[str, int]:
    """smaps_rollup's sizes in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0])
    return out


def frames(pid: int) -> dict[int, int]:
    """Virtual page address -> physical frame of every present page of `pid`."""
    out = {}
    with open(f"/proc/{pid}/pagemap", "rb") as pagemap:
        for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
            if line.endswith("[vsyscall]"):
                continue
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            pagemap.seek(lo // PAGE * 8)
            entries = struct.iter_unpack("Q", pagemap.read((hi - lo) // PAGE * 8))
            for i, (entry,) in enumerate(entries):
                if entry >> 63:
                    out[lo + i * PAGE] = entry & ((1 << 55) - 1)
    return out


def page(pid: int, address: int) -> bytes | None:
    with open(f"/proc/{pid}/mem", "rb") as mem:
        mem.seek(address)
        try:
            return mem.read(PAGE)
        except OSError:
            return None


def start_monitor(socket_path: Path, directory: Path) -> tuple[int, int]:
    """A warm monitor over the stand-in runtime: (monitor pid, process pid)."""
    directory.mkdir()
    for name in ("control", "stdin", "stdout", "stderr"):
        os.mkfifo(directory / name)
    # The shell by its full path, as the engine names a runtime.
    shell = shutil.which("sh") or "sh"
    cfg = stand_in_config(str(directory), [shell, "-c", f"sleep 1000 & echo $! > {directory}/pid"])
    (directory / "monitor.cfg").write_bytes(config_bytes(cfg))
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(socket_path))
        conn.sendall(f"{directory}/monitor.cfg\ngo\n".encode())
        lines = conn.makefile("rb").read().decode().split()
    if "ok" not in lines:
        raise RuntimeError(f"the monitor did not start: {' '.join(lines)}")
    ok = lines.index("ok")
    return int(lines[ok + 2]), int(lines[ok + 1])


def template_pid(socket_path: Path) -> int:
    for entry in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            cmdline = (entry / "cmdline").read_bytes()
            if str(socket_path).encode() in cmdline and os.readlink(entry / "cwd") == "/":
                return int(entry.name)
    raise RuntimeError("the template is not running")


def mapping_names(pid: int) -> list[tuple[int, int, str]]:
    """(start, end, short name) of each mapping of `pid`: a file's name, `[heap]`, `[anon]`."""
    out = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        out.append((lo, hi, Path(fields[5]).name if len(fields) > 5 else "[anon]"))
    return out


def measure(template: int, monitors: list[int]) -> dict[str, float]:
    procs = [template, *monitors]
    n = len(monitors)
    total: dict[str, int] = collections.Counter()
    for pid in procs:
        total.update(rollup(pid))
    maps = {pid: frames(pid) for pid in procs}
    sharers = collections.Counter(f for pid in procs for f in set(maps[pid].values()))
    own = sum(PAGE / 1024 / sharers[f] for pid in procs for f in set(maps[pid].values()))
    first = monitors[0]
    private = [a for a, f in maps[first].items() if sharers[f] == 1]
    same_everywhere = same_as_template = 0
    mappings = mapping_names(first)
    by_mapping: dict[str, int] = collections.Counter()
    for address in private:
        by_mapping[next(n for lo, hi, n in mappings if lo <= address < hi)] += 1
        mine = page(first, address)
        if all(page(pid, address) == mine for pid in monitors[1:]):
            same_everywhere += 1
        if address in maps[template] and page(template, address) == mine:
            same_as_template += 1
    return {
        "RSS": total["Rss"] / n,
        "PSS": total["Pss"] / n,
        "private dirty": total["Private_Dirty"] / n,
        "own PSS": own / n,
        "monitor private dirty": rollup(first)["Private_Dirty"],
        # One monitor moves by a page or two with where the template's clock tick fell.
        "monitor private dirty, mean of all": sum(rollup(m)["Private_Dirty"] for m in monitors) / n,
        "template private dirty": rollup(template)["Private_Dirty"],
        "monitor private pages": len(private),
        "of which the same in every monitor": same_everywhere,
        "of which the same as the template's": same_as_template,
        **{f"  in {name}": count for name, count in by_mapping.most_common()},
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--monitors", type=int, default=10)
    parser.add_argument("--python", default=sys.executable, help="the template's interpreter")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("page frames need root")
    if args.python == sys.executable and not fresh_bytecode():
        print("warning: the monitor's bytecode could not be written; the template compiles it")
    work = Path(tempfile.mkdtemp(prefix="bench-pages-", dir="/tmp"))
    socket_path = work / "template.sock"
    started: list[tuple[int, int]] = []
    try:
        subprocess.run(
            [args.python, "-I", "-S", "-c", MONITOR_BOOT, str(MONITOR), "--template",
             str(socket_path)],
            check=True, start_new_session=True,
        )  # fmt: skip
        for i in range(args.monitors):
            started.append(start_monitor(socket_path, work / f"m{i}"))
        time.sleep(SETTLE)
        figures = measure(template_pid(socket_path), [m for m, _ in started])
    finally:
        for monitor, _ in started:
            # The monitor leads the session its runtime command and process run in.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(monitor, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()  # the template ends once it sees its socket gone
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.monitors} monitors and their template, {args.python}")
    for key, value in figures.items():
        unit = "" if "pages" in key or "the same" in key or " in " in key else " KiB"
        per = " per monitor" if key in ("RSS", "PSS", "private dirty", "own PSS") else ""
        print(f"  {key}{per}: {value:,.0f}{unit}")


if __name__ == "__main__":
    main()
