"""From `go` to a warm monitor's `ok`, over a stand-in runtime, for two trees interleaved.

What a warm monitor puts between the engine's go-ahead and its answer: its wake-up, the
fork and exec of the runtime command, the command's exit, the reaping and the answer.
The runtime is `/bin/sh -c 'echo $$ > pid'` (it is its own process and exits at once),
so what is timed is the monitor's part, not runc's. Each round connects to a tree's
template, sends the config path, waits for `pid`, lets `--prepare` milliseconds pass (the
engine's preparation of the bundle, ~5-10 ms, during which a monitor readies itself),
then sends `go` and times until `ok`. The trees' templates run side by side and take
rounds in turn, in alternating order. Needs root only if the trees' state needs it; it
leaves nothing behind.

    .venv/bin/python -m bench.bench_monitor_go --before /path/to/old/checkout [--rounds 200]
"""

from __future__ import annotations

import argparse
import contextlib
import marshal
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.runtime.monitor import stand_in_config
from core.runtime.monitor_protocol import MONITOR_BOOT, fresh_bytecode


def go_to_ok(socket_path: Path, directory: Path, prepare: float) -> float:
    directory.mkdir()
    for name in ("control", "stdin", "stdout", "stderr"):
        os.mkfifo(directory / name)
    cfg = stand_in_config(str(directory), ["/bin/sh", "-c", f"echo $$ > {directory}/pid"])
    (directory / "monitor.cfg").write_bytes(marshal.dumps(cfg))
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(str(socket_path))
        conn.sendall(f"{directory}/monitor.cfg\n".encode())
        reader = conn.makefile("rb")
        if not reader.readline().startswith(b"pid "):
            raise RuntimeError("the monitor did not answer pid")
        time.sleep(prepare)
        start = time.perf_counter()
        conn.sendall(b"go\n")
        answer = reader.readline()
        took = time.perf_counter() - start
        if not answer.startswith(b"ok "):
            raise RuntimeError(f"the monitor did not start: {answer!r}")
        reader.read()
    return took


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", type=Path, required=True, help="a checkout to compare with")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--prepare", type=float, default=8.0, help="milliseconds before go")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": Path(__file__).resolve().parents[1]}
    work = Path(tempfile.mkdtemp(prefix="bench-go-", dir="/tmp"))
    sockets = {k: work / f"{k}.sock" for k in trees}
    samples: dict[str, list[float]] = {k: [] for k in trees}
    try:
        for k, tree in trees.items():
            monitor = tree / "core/runtime/monitor.py"
            fresh_bytecode(monitor)
            subprocess.run(
                [sys.executable, "-I", "-S", "-c", MONITOR_BOOT, str(monitor), "--template",
                 str(sockets[k])],
                check=True, start_new_session=True,
            )  # fmt: skip
        order = list(trees)
        for i in range(args.rounds + 5):
            for k in order:
                took = go_to_ok(sockets[k], work / f"{k}-{i}", args.prepare / 1000)
                if i >= 5:
                    samples[k].append(took)
            order.reverse()
    finally:
        for path in sockets.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # the template ends once it sees its socket gone
        shutil.rmtree(work, ignore_errors=True)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"`go` to `ok`, {args.rounds} interleaved rounds, {args.prepare:g} ms before go; "
          f"load {load}\n")  # fmt: skip
    print("| tree | p25 | p50 | p75 |\n|---|---|---|---|")
    for k, xs in samples.items():
        q = statistics.quantiles(xs, n=4)
        print(f"| {k} | {q[0] * 1e3:.3f} ms | {q[1] * 1e3:.3f} ms | {q[2] * 1e3:.3f} ms |")
    ratios = [a / b for a, b in zip(samples["after"], samples["before"], strict=True)]
    print(f"\nmedian per-round ratio after / before: {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
