"""Interleaved A/B of whole commands: each round runs every command once, in rotated order.

For comparing two trees (or two ways of starting) of the same CLI on one engine, where
the machine's load moves: each command's wall time and its process's own CPU
(utime + stime from `wait4`) are taken per round, and medians and minima printed.
Each command is a shell-split string; leading `NAME=VALUE` words set its environment
(e.g. `PYTHONPATH=/tmp/before`).

    .venv/bin/python -m bench.bench_ab --rounds 20 \\
        before 'PYTHONPATH=/tmp/before .venv/bin/python -m tui.cli -a SOCK pull REF' \\
        after '.venv/bin/python -m tui.cli -a SOCK pull REF'
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import time


def run_once(command: str) -> tuple[float, float]:
    """CPU and wall seconds of one run of `command`; raises if it fails."""
    words = shlex.split(command)
    env = dict(os.environ)
    while words and "=" in words[0]:
        name, value = words.pop(0).split("=", 1)
        env[name] = value
    started = time.perf_counter()
    proc = subprocess.Popen(
        words,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if status:
        raise SystemExit(f"{command!r} failed (wait status {status})")
    return usage.ru_utime + usage.ru_stime, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("pairs", nargs="+", metavar="LABEL COMMAND")
    args = parser.parse_args()
    if len(args.pairs) % 2:
        parser.error("give a label and a command for each side")
    sides = list(zip(args.pairs[::2], args.pairs[1::2], strict=True))
    cpu: dict[str, list[float]] = {label: [] for label, _ in sides}
    wall: dict[str, list[float]] = {label: [] for label, _ in sides}
    for number in range(args.rounds):
        turn = number % len(sides)
        for label, command in sides[turn:] + sides[:turn]:
            used, took = run_once(command)
            cpu[label].append(used)
            wall[label].append(took)
    print("| command | CPU p50 (min) ms | wall p50 (min) ms |\n|---|---|---|")
    for label, _ in sides:
        c, w = cpu[label], wall[label]
        print(
            f"| {label} | {statistics.median(c) * 1e3:.1f} ({min(c) * 1e3:.1f}) "
            f"| {statistics.median(w) * 1e3:.1f} ({min(w) * 1e3:.1f}) |"
        )


if __name__ == "__main__":
    main()
