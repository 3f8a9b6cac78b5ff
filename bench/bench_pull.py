"""Pull benchmark: a cold pull and unpack beside Debian's containerd, both as whole CLI processes.

Two images, pushed to a docker-registry on 127.0.0.1:

* `random`: four gzip layers of files of seeded random bytes (tens of MB, gzip gains
  nothing), built with the test image builders;
* `os`: a Debian base image made with `mmdebstrap` (`bench/osimage.py`, built once into a
  cache directory): four gzip layers, about 8,700 entries, mostly small files.

In each round, for each image, in alternating order, a freshly started engine of each kind
pulls it with its own CLI as a whole process, so both sides pay the same client start-up:

* ctrdeck: `ctrdeck -a SOCK pull --plain-http REF` (server-side pull, unpack into overlayfs);
* containerd: `ctr -a SOCK image pull --plain-http REF` (unpack into overlayfs).

Each ctrdeck checkout's bytecode is written first (`compiled`), as an install has it.
Before each pull the engine is left to finish its start-up work (`settle`). The wall time
of the CLI process, its own CPU (utime + stime from `wait4`) and the engine process's CPU
(from `/proc/PID/stat`, before and after) are recorded, and two counts of the engine's work
that load does not move: its minor page faults (pages touched for the first time) and the
bytes its read(2)-like calls took in (`rchar` of `/proc/PID/io`, which counts read(2) on
any file but not recv(2): for ctrdeck, whose sockets use recv, the layers it reads back from
its own store; for containerd, whose Go reads sockets with read, also what `ctr` sends it,
since `ctr` downloads in the client and writes through the Content API). The baselines,
on the same disk under /tmp: for `random`, `curl` of every blob (concurrently) then
`tar -xzf` of each layer; for `os`, `tar -xzf` of each layer blob, in order, into one
directory (GNU tar, no download).

With `--tmpfs` every engine root and baseline directory is on a tmpfs mounted for the run
instead: on this machine's ext4 the cost of creating a file varies thirtyfold with recent
deletes anywhere on the disk (docs: perf notes), which swamps an unpack of small files.

Prints markdown tables of medians with the ctrdeck / containerd ratio (below 1 means ctrdeck
is faster). The disk is shared, so each round runs everything back to back after a `sync`.

    .venv/bin/python -m bench.bench_pull [--rounds 3] [--images random,os] [--tmpfs] [--cache DIR]
                                         [--before OLD_CHECKOUT] [--rtt MS]

With `--rtt MS` both engines (and the floor's curl) reach the registry through a delay line
of that round trip (`bench/delay_line.py`), as they would a registry on another host.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench import osimage
from bench.delay_line import DelayLine
from bench.stats import machine, table
from tests import engine_proc
from tests.registry import Built, build_image, file, make_layer, running_registry, single

FILE_SIZE = 1 << 20
TICK = os.sysconf("SC_CLK_TCK")


def build(layers: int, mb_per_layer: int) -> Built:
    rng = random.Random(20240601)
    built = []
    for i in range(layers):
        files = [
            file(f"layer{i}/data{j:03d}.bin", rng.randbytes(FILE_SIZE)) for j in range(mb_per_layer)
        ]
        built.append(make_layer(files))
    return single(build_image(built))


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def work(pid: int) -> tuple[int, int]:
    """Minor page faults and bytes read by read(2)-like calls of a process so far.

    Both count work, not time, so they compare two engines on a loaded machine where CPU
    seconds spread: a fault is a page touched for the first time, and what an engine reads
    back from its own store is bytes it had already handled once.
    """
    faults = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
    io = dict(line.split(": ") for line in Path(f"/proc/{pid}/io").read_text().splitlines())
    return faults, int(io["rchar"])


def ctrdeck_cmd(address: str, ref: str) -> list[str]:
    return [sys.executable, "-m", "tui.cli", "-a", address, "pull", "--plain-http", ref]


def ctr_cmd(address: str, ref: str) -> list[str]:
    return ["ctr", "-a", address, "image", "pull", "--plain-http", ref]


def settle(pid: int, quiet: float = 0.3, limit: float = 10.0) -> None:
    """Wait until the engine has used no CPU for `quiet` seconds (its start-up work is done).

    A freshly started ctrdeck engine imports its registry client in a worker thread (about
    0.1-0.3 s of CPU, more where the test extra's trio is installed, which httpcore then
    imports); a pull that arrives meanwhile waits for it. A cold pull means an image the
    engine has not got, not an engine still starting, so both engines get this wait.
    """
    deadline = time.monotonic() + limit
    last = cpu_seconds(pid)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pid)
        if now == last:
            return
        last = now


def compiled(root: Path) -> None:
    """Write the bytecode of a checkout's `core` and `tui`, as an install has it.

    pip compiles what it installs, and an editable checkout writes its bytecode on its
    first run, unless PYTHONDONTWRITEBYTECODE is set (as in some sandboxes and CI): then
    every CLI and engine start, and a fresh engine's first pull, compile their modules
    from source (~60 ms of a `ctrdeck pull`'s CPU), which containerd's Go never does.
    """
    for package in ("core", "tui"):
        compileall.compile_dir(root / package, quiet=1)


def timed_pull(
    running: engine_proc.Running, cmd: Callable[[str, str], list[str]], ref: str
) -> tuple[float, float, float, int, float]:
    """Wall seconds of the CLI process, its own CPU seconds, and the engine's CPU, minor
    faults and MiB read meanwhile."""
    env = dict(os.environ, PYTHONPATH=str(engine_proc.ROOT))
    settle(running.proc.pid)
    before = cpu_seconds(running.proc.pid)
    faults, read = work(running.proc.pid)
    start = time.perf_counter()
    proc = subprocess.Popen(
        cmd(str(running.address), ref), env=env, cwd=engine_proc.ROOT,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stderr is not None
    errors = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if status != 0:
        raise RuntimeError(f"{cmd(str(running.address), ref)} failed: {errors.decode()}")
    cpu = cpu_seconds(running.proc.pid) - before
    faults_after, read_after = work(running.proc.pid)
    cli = usage.ru_utime + usage.ru_stime
    return wall, cli, cpu, faults_after - faults, (read_after - read) / (1 << 20)


def curl_floor(registry_url: str, repo: str, built: Built, parent: str) -> float:
    """curl every blob concurrently, then gunzip and untar each layer in order."""
    image = built.images[0]
    work = Path(tempfile.mkdtemp(prefix="bench-floor-", dir=parent))
    try:
        start = time.perf_counter()
        digests = [built.descriptor.digest, image.config_descriptor.digest] + [
            layer.descriptor.digest for layer in image.layers
        ]
        kinds = ["manifests"] + ["blobs"] * (len(digests) - 1)
        procs = [
            subprocess.Popen(
                ["curl", "-sf", "-H", f"Accept: {built.descriptor.media_type}",
                 "-o", str(work / d.removeprefix("sha256:")),
                 f"{registry_url}/v2/{repo}/{kind}/{d}"]
            )
            for d, kind in zip(digests, kinds, strict=True)
        ]  # fmt: skip
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError("curl failed")
        root = work / "rootfs"
        root.mkdir()
        for layer in image.layers:
            blob = work / layer.descriptor.digest.removeprefix("sha256:")
            subprocess.run(["tar", "-xzf", str(blob), "-C", str(root)], check=True)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)


def tar_floor(blobs: list[Path], parent: str) -> float:
    """`tar -xzf` of each layer blob, in order, into one directory under `parent`."""
    work = Path(tempfile.mkdtemp(prefix="bench-tar-", dir=parent))
    try:
        start = time.perf_counter()
        for blob in blobs:
            subprocess.run(["tar", "-xzf", str(blob), "-C", str(work)], check=True)
        return time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--mb-per-layer", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", default="random,os", help="comma-separated: random, os")
    parser.add_argument("--cache", type=Path, default=osimage.DEFAULT_CACHE)
    parser.add_argument("--tmpfs", action="store_true", help="engines and baselines on a tmpfs")
    parser.add_argument(
        "--rtt",
        type=float,
        default=0.0,
        metavar="MS",
        help="reach the registry through a delay line of this round trip (bench/delay_line.py)",
    )
    parser.add_argument(
        "--before",
        type=Path,
        metavar="DIR",
        help="also run ctrdeck from this checkout (an older commit), interleaved with the rest",
    )
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        parent = stack.enter_context(tmpfs()) if args.tmpfs else "/tmp"
        run(args, parent)


@contextlib.contextmanager
def checkout(root: Path) -> Iterator[None]:
    """Engines and CLIs started meanwhile run the code of the checkout at `root`."""
    saved = engine_proc.ROOT
    engine_proc.ROOT = root.resolve()
    try:
        yield
    finally:
        engine_proc.ROOT = saved


@contextlib.contextmanager
def tmpfs(size: str = "4g") -> Iterator[str]:
    """A tmpfs mounted under /tmp for the block's duration, then unmounted and removed."""
    where = tempfile.mkdtemp(prefix="bench-tmpfs-", dir="/tmp")
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", where], check=True)
    try:
        yield where
    finally:
        # Something else walking /tmp can hold it a moment: detach it lazily then.
        if subprocess.run(["umount", "-R", where], check=False).returncode:
            subprocess.run(["umount", "-R", "-l", where], check=False)
        os.rmdir(where)


def run(args: argparse.Namespace, parent: str) -> None:
    kinds = [k for k in args.images.split(",") if k]
    built = build(args.layers, args.mb_per_layer) if "random" in kinds else None
    os_image = osimage.build(args.cache) if "os" in kinds else None
    samples: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        samples.setdefault(key, []).append(value)

    with contextlib.ExitStack() as stack:
        registry = stack.enter_context(running_registry())
        refs = {}
        if built is not None:
            refs["random"] = registry.push(built, "bench/pull")
        if os_image is not None:
            refs["os"] = osimage.push(os_image, registry.host, "bench/debian")
        url = registry.url
        if args.rtt:
            line = stack.enter_context(DelayLine(registry.port, args.rtt / 1000))
            host = f"127.0.0.1:{line.port}"
            url = f"http://{host}"
            refs = {kind: ref.replace(registry.host, host) for kind, ref in refs.items()}
        sides = ["containerd", "ctrdeck"] + (["before"] if args.before else [])
        for tree in [engine_proc.ROOT] + ([args.before] if args.before else []):
            compiled(tree)
        for round_ in range(args.rounds):
            for kind in kinds:
                turn = round_ % len(sides)
                order = sides[turn:] + sides[:turn]
                for name in order:
                    subprocess.run(["sync"], check=True)
                    if name == "containerd":
                        with engine_proc.containerd(parent=parent) as running:
                            wall, cli, cpu, faults, read = timed_pull(running, ctr_cmd, refs[kind])
                    else:
                        tree = args.before if name == "before" else engine_proc.ROOT
                        with checkout(tree), engine_proc.ctrdeck(parent=parent) as running:
                            wall, cli, cpu, faults, read = timed_pull(
                                running, ctrdeck_cmd, refs[kind]
                            )
                    add(f"{kind} {name} wall", wall)
                    add(f"{kind} {name} cli", cli)
                    add(f"{kind} {name} cpu", cpu)
                    add(f"{kind} {name} faults", faults)
                    add(f"{kind} {name} read", read)
                subprocess.run(["sync"], check=True)
                if kind == "random":
                    assert built is not None
                    add("random floor", curl_floor(url, "bench/pull", built, parent))
                else:
                    assert os_image is not None
                    add("os floor", tar_floor(os_image.blobs, parent))
    med = {k: statistics.median(v) for k, v in samples.items()}
    where = "tmpfs" if args.tmpfs else "the root disk (ext4) under /tmp"
    print(f"machine: {machine()}\nengines and baselines on {where}")
    if args.rtt:
        print(f"registry reached through a delay line of {args.rtt:g} ms round trip")
    print()
    rows = []
    notes = []
    if built is not None:
        size = sum(layer.descriptor.size for layer in built.images[0].layers)
        notes.append(f"random: {args.layers} gzip layers, {size / (1 << 20):.1f} MiB compressed")
        rows += [
            ("random: cold pull + unpack, CLI wall", med["random containerd wall"],
             med["random ctrdeck wall"], "s"),
            ("random: CLI CPU", med["random containerd cli"], med["random ctrdeck cli"], "s"),
            ("random: engine CPU", med["random containerd cpu"], med["random ctrdeck cpu"], "s"),
            ("random: engine minor faults", med["random containerd faults"],
             med["random ctrdeck faults"], ""),
            ("random: engine MiB read", med["random containerd read"], med["random ctrdeck read"],
             "MiB"),
            ("random floor: curl + tar -xzf", med["random floor"], med["random floor"], "s"),
        ]  # fmt: skip
    if os_image is not None:
        notes.append(
            f"os: mmdebstrap {osimage.SUITE} minbase, {len(os_image.blobs)} gzip layers, "
            f"{os_image.compressed / (1 << 20):.1f} MiB compressed, {os_image.entries} entries"
        )
        rows += [
            ("os: cold pull + unpack, CLI wall", med["os containerd wall"],
             med["os ctrdeck wall"], "s"),
            ("os: CLI CPU", med["os containerd cli"], med["os ctrdeck cli"], "s"),
            ("os: engine CPU", med["os containerd cpu"], med["os ctrdeck cpu"], "s"),
            ("os: engine minor faults", med["os containerd faults"], med["os ctrdeck faults"], ""),
            ("os floor: tar -xzf of the layers", med["os floor"], med["os floor"], "s"),
        ]  # fmt: skip
    print("\n".join(notes) + f"\n{args.rounds} rounds, medians\n")
    print(table(rows))
    if args.before:
        print(f"\nctrdeck from {args.before} (before), in the same rounds:\n")
        print(table([
            (f"{kind}: {what}", med[f"{kind} containerd {key}"], med[f"{kind} before {key}"],
             {"faults": "", "read": "MiB"}.get(key, "s"))
            for kind in kinds
            for what, key in (
                ("cold pull + unpack, CLI wall", "wall"), ("CLI CPU", "cli"), ("engine CPU", "cpu"),
                ("engine minor faults", "faults"), ("engine MiB read", "read"),
            )
        ]))  # fmt: skip
    for kind in kinds:
        floor = med[f"{kind} floor"]
        print(
            f"\n{kind}: ctrdeck / floor {med[f'{kind} ctrdeck wall'] / floor:.2f}x, "
            f"containerd / floor {med[f'{kind} containerd wall'] / floor:.2f}x"
        )
    print("\nall samples (s):")
    for key, values in samples.items():
        print(f"  {key}: {[round(v, 3) for v in values]}")


if __name__ == "__main__":
    main()
