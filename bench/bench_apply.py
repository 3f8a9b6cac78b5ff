"""Applying layer blobs onto a directory: ctrdeck's applier against GNU `tar -xzf`, same disk.

The layers are the Debian base image's (`bench/osimage.py`, built once into a cache
directory) unless blobs are named. In each round, in rotating order, each side extracts
every layer, in order, into one fresh directory on the same filesystem, as a whole process:

* `after`: this checkout's `core.diff.apply.apply_layer` (overlay mode, as an overlayfs
  snapshot gets it), in a fresh interpreter;
* `before` (with `--before DIR`): the same from another checkout;
* `tar`: `tar -xzf BLOB -C DIR` per layer.

Recorded: the wall time and CPU (utime + stime from `wait4`, every thread and reaped child
included: tar's gzip, the applier's inflate thread) of the whole process, and for the
applier sides also the wall and CPU of the applies alone, inside the process (so the
interpreter's start and imports are out). The applier also makes each layer durable (a
syncfs or exact fsyncs) as a pull does; tar does not. `--check` compares the trees of all
sides once (kind, mode, owner, size, content hash, link target, xattrs, mtime) and fails
on any difference. `--profile` instead runs this checkout's applier once under cProfile,
in this process, and prints the functions by own time.

    .venv/bin/python -m bench.bench_apply [--rounds 5] [--tmpfs] [--before DIR] [--check]
                                          [--profile] [--cache DIR] [BLOB ...]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import hashlib
import json
import os
import pstats
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import osimage
from bench.bench_pull import tmpfs
from bench.stats import machine

ROOT = Path(__file__).resolve().parent.parent

# Run in a fresh interpreter whose sys.path starts at the checkout: applies the blobs in
# order into the directory, then prints the applies' own wall and CPU seconds.
_CHILD = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from core.diff.apply import Mode, apply_layer
from core.diff.compression import OCI_LAYER_GZIP
dest = Path(sys.argv[2])
wall, cpu = time.perf_counter(), time.process_time()
for blob in sys.argv[3:]:
    with open(blob, "rb") as f:
        apply_layer(f, OCI_LAYER_GZIP, dest, Mode.OVERLAY)
print(json.dumps([time.perf_counter() - wall, time.process_time() - cpu]))
"""


def run_side(side: str, tree: Path | None, blobs: list[Path], dest: Path) -> dict[str, float]:
    """Extract the blobs into `dest` with one side; its timings."""
    if tree is None:
        into = shlex.quote(str(dest))
        script = "; ".join(f"tar -xzf {shlex.quote(str(b))} -C {into}" for b in blobs)
        cmd = ["sh", "-e", "-c", script]
    else:
        cmd = [sys.executable, "-c", _CHILD, str(tree), str(dest), *map(str, blobs)]
    with tempfile.TemporaryFile() as errors:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errors)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        # Reaped by wait4 (for its resource usage), so Popen must not wait for it again.
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        if proc.returncode:
            errors.seek(0)
            raise RuntimeError(f"{side} failed: {errors.read().decode()}")
    result = {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime}
    if tree is not None:
        result["apply wall"], result["apply cpu"] = json.loads(out)
    return result


def picture(root: Path) -> dict[str, tuple[object, ...]]:
    """Every path below `root` with what a layer can say about it."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            names = os.listxattr(p, follow_symlinks=False)
            xattrs = tuple(sorted((k, os.getxattr(p, k, follow_symlinks=False)) for k in names))
            detail: object = None
            if p.is_symlink():
                detail = os.readlink(p)
            elif p.is_file():
                detail = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (
                st.st_mode, st.st_uid, st.st_gid, st.st_size if detail else 0, st.st_rdev,
                detail, xattrs, st.st_mtime_ns, st.st_nlink,
            )  # fmt: skip
    return out


def check(sides: dict[str, Path | None], blobs: list[Path], parent: str) -> None:
    """Extract once with every side and compare the trees; SystemExit on a difference."""
    pictures = {}
    for side, tree in sides.items():
        dest = Path(tempfile.mkdtemp(prefix=f"bench-apply-{side}-", dir=parent))
        try:
            if tree is None:
                for blob in blobs:
                    subprocess.run(
                        ["tar", "--xattrs", "--xattrs-include=*", "--same-owner", "-xpzf",
                         str(blob), "-C", str(dest)],
                        check=True,
                    )  # fmt: skip
            else:
                run_side(side, tree, blobs, dest)
            pictures[side] = picture(dest)
        finally:
            shutil.rmtree(dest, ignore_errors=True)
    first, *rest = pictures
    for other in rest:
        a, b = pictures[first], pictures[other]
        diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
        if diff:
            for k in diff[:10]:
                print(f"  {k}: {first} {a.get(k)} / {other} {b.get(k)}")
            raise SystemExit(f"{first} and {other} differ in {len(diff)} paths")
    print(f"trees identical across {', '.join(pictures)}: {len(pictures[first])} paths")


def profile(blobs: list[Path], parent: str, top: int) -> None:
    """cProfile this checkout's applier over the blobs, in this process."""
    from core.diff.apply import Mode, apply_layer
    from core.diff.compression import OCI_LAYER_GZIP

    dest = Path(tempfile.mkdtemp(prefix="bench-apply-profile-", dir=parent))
    prof = cProfile.Profile()
    try:
        for blob in blobs:
            with blob.open("rb") as f:
                prof.runcall(apply_layer, f, OCI_LAYER_GZIP, dest, Mode.OVERLAY)
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    pstats.Stats(prof).sort_stats("tottime").print_stats(top)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("blobs", nargs="*", type=Path, help="gzip layer blobs, in order")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tmpfs", action="store_true", help="extract onto a tmpfs")
    parser.add_argument("--before", type=Path, metavar="DIR", help="also this checkout")
    parser.add_argument("--check", action="store_true", help="compare the trees once first")
    parser.add_argument("--profile", action="store_true", help="cProfile this checkout, only")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--cache", type=Path, default=osimage.DEFAULT_CACHE)
    args = parser.parse_args()
    blobs = args.blobs or osimage.build(args.cache).blobs
    with contextlib.ExitStack() as stack:
        parent = stack.enter_context(tmpfs("2g")) if args.tmpfs else "/tmp"
        if args.profile:
            profile(blobs, parent, args.top)
            return
        sides: dict[str, Path | None] = {"after": ROOT}
        if args.before:
            sides["before"] = args.before.resolve()
        sides["tar"] = None
        if args.check:
            check(sides, blobs, parent)
        samples: dict[str, list[float]] = {}
        loads = [os.getloadavg()[0]]
        names = list(sides)
        for round_ in range(args.rounds):
            turn = round_ % len(names)
            for side in names[turn:] + names[:turn]:
                subprocess.run(["sync"], check=True)
                dest = Path(tempfile.mkdtemp(prefix=f"bench-apply-{side}-", dir=parent))
                try:
                    for key, value in run_side(side, sides[side], blobs, dest).items():
                        samples.setdefault(f"{side} {key}", []).append(value)
                finally:
                    shutil.rmtree(dest, ignore_errors=True)
            loads.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in samples.items()}
    where = "tmpfs" if args.tmpfs else "the root disk under /tmp"
    print(f"machine: {machine()}\non {where}; {len(blobs)} layers; {args.rounds} rounds, medians")
    print(f"load average (1 min) per round: {', '.join(f'{x:.1f}' for x in loads)}\n")
    print("| side | wall | CPU | apply wall | apply CPU | wall / tar | CPU / tar |")
    print("|---|---|---|---|---|---|---|")
    for side in names:
        wall, cpu = med[f"{side} wall"], med[f"{side} cpu"]
        inner = (
            f"{med[f'{side} apply wall']:.3f} s | {med[f'{side} apply cpu']:.3f} s"
            if f"{side} apply wall" in med
            else "- | -"
        )
        print(
            f"| {side} | {wall:.3f} s | {cpu:.3f} s | {inner} | "
            f"{wall / med['tar wall']:.2f}x | {cpu / med['tar cpu']:.2f}x |"
        )
    print("\nper round (wall / CPU):")
    for side in names:
        pairs = zip(samples[f"{side} wall"], samples[f"{side} cpu"], strict=True)
        print(f"  {side}: " + ", ".join(f"{w:.2f}/{c:.2f}" for w, c in pairs))


if __name__ == "__main__":
    main()
