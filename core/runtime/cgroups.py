"""A container's cgroup, read from cgroup v1 hierarchies or the cgroup v2 tree.

This module owns what the engine learns from cgroupfs rather than from a
runtime, and it is the one reader for `Tasks.Metrics`, the Prometheus gauges
and the CRI's stats. `detect` finds the host's layout once from
/proc/self/mountinfo, as containerd decides it: v1 controllers mounted
(legacy or hybrid) mean v1, else a cgroup2 mount means v2, else there are no
statistics to read and `Layout.reason` says why. `Cgroup.sample` returns
containerd's `io.containerd.cgroups.v1.Metrics` (memory, cpu and pids always
present, because `ctr`'s v1 printer dereferences `memory.usage` and
`cpu.usage`) or `io.containerd.cgroups.v2.Metrics` (pids, cpu, memory,
memory events, io and hugetlb, "max" read as 2^64-1 like containerd's),
already encoded, from files it keeps open until `close`
(`core/runtime/cgroup_sample.py`); `Cgroup.stats` is the same as a message.
Both raise rather than report zeros: `NotFound` for a cgroup that is not
there, `CgroupsUnavailable` when the host has neither kind. Everything here
is plain blocking file reading, meant to be called through `asyncio.to_thread`.
The processes of a container (`ListPids`) and an OOM watch through the v1
memory controller's `cgroup.event_control` live here too.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.api.io.containerd.cgroups import v1 as cg
from core.api.io.containerd.cgroups import v2 as cg2
from core.errors import FailedPrecondition, NotFound
from core.runtime.cgroup_sample import (
    V1_FILES,
    V2_URL,
    Gone,
    Memo,
    Sample,
    StatFiles,
    encode_v1,
    encode_v2,
    hugetlb_sizes,
    v2_files,
)

V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio", "freezer", "devices", "hugetlb")
# Any of these mounted as v1 makes the host v1 (hybrid included): containerd
# then reads v1, and runc puts the container's limits there.
_V1_DECIDING = ("memory", "cpuacct", "cpu", "pids")
UNAVAILABLE = "no cgroup v1 controllers and no cgroup2 hierarchy are mounted"

Stats = cg.Metrics | cg2.Metrics


class CgroupsUnavailable(FailedPrecondition):
    """The host has neither cgroup v1 controllers nor a cgroup2 tree to read."""


@dataclass(frozen=True)
class Layout:
    """Where this host keeps cgroups: v1 controller mounts, the cgroup2 mount, or nothing."""

    version: int
    v1: Mapping[str, Path] = field(default_factory=dict)
    unified: Path | None = None
    reason: str = ""


def layout_from_mountinfo(text: str, sysroot: Path = Path("/")) -> Layout:
    """The layout a mountinfo table describes; mount points are taken under `sysroot`."""
    v1: dict[str, Path] = {}
    unified: list[Path] = []
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3:
            continue
        where = sysroot / fields[4].lstrip("/")
        if extra[0] == "cgroup":
            for option in extra[2].split(","):
                if option in V1_CONTROLLERS:
                    v1.setdefault(option, where)
        elif extra[0] == "cgroup2":
            unified.append(where)
    # A hybrid host also mounts cgroup2 (at /sys/fs/cgroup/unified); prefer
    # the conventional place when there are several.
    unified.sort(key=lambda p: (p != sysroot / "sys/fs/cgroup", len(str(p))))
    first = unified[0] if unified else None
    if any(c in v1 for c in _V1_DECIDING):
        return Layout(1, v1, first)
    if first is not None:
        return Layout(2, {}, first)
    return Layout(0, {}, None, UNAVAILABLE)


def detect() -> Layout:
    """This host's layout, from /proc/self/mountinfo."""
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError as exc:
        return Layout(0, reason=f"cannot read /proc/self/mountinfo: {exc.strerror}")
    return layout_from_mountinfo(text)


def hierarchies() -> dict[str, Path]:
    """Controller name to the mount point of its v1 hierarchy on this host."""
    return dict(detect().v1)


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _table(path: Path) -> dict[str, int]:
    """A `key value` per line file (memory.stat, cpu.stat, memory.events...)."""
    table: dict[str, int] = {}
    for line in _text(path).splitlines():
        key, _, value = line.partition(" ")
        try:
            table[key] = int(value)
        except ValueError:
            continue
    return table


def _procs(directory: Path) -> list[int]:
    found: set[int] = set()
    for root, _, files in os.walk(directory):
        if "cgroup.procs" in files:
            text = _text(Path(root, "cgroup.procs"))
            found.update(int(p) for p in text.split() if p.isdigit())
    return sorted(found)


class Cgroup:
    """One container's cgroup path (`linux.cgroupsPath`) in the host's layout."""

    def __init__(self, path: str, layout: Layout | None = None) -> None:
        # Rooted and cleaned the way runc cleans it, so ".." never leaves cgroupfs.
        self.path = posixpath.normpath("/" + path).lstrip("/")
        self.layout = layout if layout is not None else detect()
        self._lock = threading.Lock()
        self._files: StatFiles | None = None
        self._sizes: list[str] = []
        self._memo = Memo()

    def dir(self, controller: str) -> Path | None:
        """The cgroup's directory for a v1 controller (the one v2 directory on v2)."""
        if self.layout.version == 2 and self.layout.unified is not None:
            return self.layout.unified / self.path
        base = self.layout.v1.get(controller)
        return None if base is None else base / self.path

    def _dirs(self) -> list[Path]:
        if self.layout.version == 2:
            return [d for d in (self.dir(""),) if d is not None]
        return [d for c in _V1_DECIDING if (d := self.dir(c)) is not None]

    def exists(self) -> bool:
        return any(d.is_dir() for d in self._dirs())

    def pids(self) -> list[int]:
        """Every process in the cgroup and below."""
        for d in (self.dir("pids"), self.dir("memory")):
            if d is not None and d.is_dir():
                return _procs(d)
        return []

    def sample(self) -> Sample:
        """The cgroup's statistics now; NotFound or CgroupsUnavailable instead of zeros.

        The first read opens the files and later ones re-read them (`StatFiles`);
        a cgroup found removed has its files closed and is looked for again.
        """
        if self.layout.version == 0:
            raise CgroupsUnavailable(f"cgroup statistics are unavailable: {self.layout.reason}")
        with self._lock:
            if self._files is None:
                if not self.exists():
                    raise NotFound(f"cgroup {self.path} does not exist")
                self._files = self._open()
                self._memo = Memo()
            try:
                texts = self._files.read()
            except Gone:
                self._files.close()
                self._files = None
                raise NotFound(f"cgroup {self.path} does not exist") from None
            if self.layout.version == 2:
                return encode_v2(texts, self._sizes, time.time_ns(), self._memo)
            return encode_v1(texts, time.time_ns(), self._memo)

    def stats(self) -> Stats:
        """`sample` as a Metrics message, for callers that want its fields."""
        found = self.sample()
        return (cg2.Metrics if found.type_url == V2_URL else cg.Metrics).parse(found.data)

    def close(self) -> None:
        """Close the stat files kept open between samples (the task is gone)."""
        with self._lock:
            if self._files is not None:
                self._files.close()
                self._files = None

    def _open(self) -> StatFiles:
        if self.layout.version == 2:
            d = self.dir("") or Path("/nonexistent")
            self._sizes = hugetlb_sizes(d)
            return StatFiles([d / name for name in v2_files(self._sizes)])
        none = Path("/nonexistent")
        return StatFiles([(self.dir(c) or none) / name for c, name in V1_FILES])

    def oom_kills(self) -> int:
        if self.layout.version == 2:
            return _table((self.dir("") or Path()) / "memory.events").get("oom_kill", 0)
        d = self.dir("memory")
        return 0 if d is None else _table(d / "memory.oom_control").get("oom_kill", 0)


class OomWatch:
    """Calls `on_oom` each time the kernel OOM-kills in the cgroup, via an eventfd (v1)."""

    def __init__(self, cgroup: Cgroup, on_oom: Callable[[], None]) -> None:
        self.cgroup = cgroup
        self.on_oom = on_oom
        self.efd: int | None = None
        self.seen = 0

    def start(self) -> bool:
        if self.cgroup.layout.version != 1:
            return False
        d = self.cgroup.dir("memory")
        if d is None or not (d / "cgroup.event_control").exists():
            return False
        try:
            efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
            control = os.open(d / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                (d / "cgroup.event_control").write_text(f"{efd} {control}")
            finally:
                os.close(control)
        except OSError:
            return False
        self.efd = efd
        self.seen = self.cgroup.oom_kills()
        asyncio.get_running_loop().add_reader(efd, self._fired)
        return True

    def _fired(self) -> None:
        assert self.efd is not None
        try:
            os.eventfd_read(self.efd)
        except OSError:
            return
        # The eventfd also fires when the cgroup goes away; only a real kill counts.
        if not self.check() and not self.cgroup.exists():
            self.stop()

    def check(self) -> bool:
        """Report a kill the counter shows and `on_oom` has not heard of; whether there was one.

        The task's exit can be handled before the eventfd's wakeup is read: the
        engine checks once more before it stops watching an exited task.
        """
        kills = self.cgroup.oom_kills()
        if kills <= self.seen:
            return False
        self.seen = kills
        self.on_oom()
        return True

    def stop(self) -> None:
        if self.efd is not None:
            asyncio.get_running_loop().remove_reader(self.efd)
            os.close(self.efd)
            self.efd = None
