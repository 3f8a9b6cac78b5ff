"""CLI start-up and an already-pulled image: `ctrdeck` beside `ctr`, both as whole processes.

What a user waits for before a pull does anything: the CLI's start (`--help`, which
parses the command line and exits) and a pull of an image the engine already has
(resolve, find every blob and snapshot present, record the image). Each side runs
against its own engine, freshly started, that has pulled the image once:

* ctrdeck: `python -m tui.cli -a SOCK pull --plain-http REF`, and `--help`, `pull --help`;
* containerd: `ctr -a SOCK image pull --plain-http REF`, and `ctr --help`.

Rounds alternate the order of the two sides. For each command the wall time and the
CLI process's own CPU (utime + stime from `wait4`) are recorded, and for the pulls
also the engine's CPU meanwhile. Prints a markdown table of medians with ctrdeck /
containerd ratios.

    .venv/bin/python -m bench.bench_cli_start [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time

from bench.bench_pull import compiled, cpu_seconds, ctr_cmd, ctrdeck_cmd
from bench.stats import machine, table
from tests import engine_proc
from tests.registry import build_image, file, make_layer, running_registry, single


def timed(cmd: list[str]) -> tuple[float, float]:
    """Wall seconds of a whole process and its own CPU seconds."""
    env = dict(os.environ, PYTHONPATH=str(engine_proc.ROOT))
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=engine_proc.ROOT, env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited with {proc.returncode}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(7)
    layers = [make_layer([file(f"l{i}/f", rng.randbytes(1 << 16))]) for i in range(4)]
    built = single(build_image(layers))
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    cli = [sys.executable, "-m", "tui.cli"]
    compiled(engine_proc.ROOT)
    with (
        running_registry() as registry,
        engine_proc.ctrdeck() as cx,
        engine_proc.containerd() as cd,
    ):
        ref = registry.push(built, "bench/warm")
        timed(ctrdeck_cmd(str(cx.address), ref))
        timed(ctr_cmd(str(cd.address), ref))
        for round_ in range(args.rounds):
            sides = ["containerd", "ctrdeck"] if round_ % 2 == 0 else ["ctrdeck", "containerd"]
            for side in sides:
                if side == "ctrdeck":
                    helps = (("help", [*cli, "--help"]), ("pull help", [*cli, "pull", "--help"]))
                    for what, cmd in helps:
                        wall, cpu = timed(cmd)
                        add(f"{what} ctrdeck wall", wall)
                        add(f"{what} ctrdeck cpu", cpu)
                    running, pull = cx, ctrdeck_cmd(str(cx.address), ref)
                else:
                    wall, cpu = timed(["ctr", "--help"])
                    for what in ("help", "pull help"):
                        add(f"{what} containerd wall", wall)
                        add(f"{what} containerd cpu", cpu)
                    running, pull = cd, ctr_cmd(str(cd.address), ref)
                before = cpu_seconds(running.proc.pid)
                wall, cpu = timed(pull)
                add(f"pull {side} wall", wall)
                add(f"pull {side} cpu", cpu)
                add(f"pull {side} engine", cpu_seconds(running.proc.pid) - before)
    med = {k: statistics.median(v) for k, v in samples.items()}
    measures = (
        ("`--help` wall (ctr --help)", "help", "wall"),
        ("`--help` CLI CPU", "help", "cpu"),
        ("`pull --help` wall (ctr --help)", "pull help", "wall"),
        ("already-pulled image: CLI wall", "pull", "wall"),
        ("already-pulled image: CLI CPU", "pull", "cpu"),
        ("already-pulled image: engine CPU", "pull", "engine"),
    )
    ms = 1000.0
    rows = [
        (what, med[f"{cmd} containerd {key}"] * ms, med[f"{cmd} ctrdeck {key}"] * ms, "ms")
        for what, cmd, key in measures
    ]
    print(f"machine: {machine()}\n{args.rounds} rounds, medians\n")
    print(table(rows))
    print("\nall samples (ms):")
    for key, values in samples.items():
        print(f"  {key}: {[round(v * ms, 1) for v in values]}")


if __name__ == "__main__":
    main()
