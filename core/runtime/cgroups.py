"""A container's cgroup, read from cgroup v1 hierarchies or the cgroup v2 tree.

This module owns what the engine learns from cgroupfs rather than from a
runtime, and it is the one reader for both `Tasks.Metrics` and the
Prometheus gauges. `detect` finds the host's layout once from
/proc/self/mountinfo, as containerd decides it: v1 controllers mounted
(legacy or hybrid) mean v1, else a cgroup2 mount means v2, else there are no
statistics to read and `Layout.reason` says why. `Cgroup.stats` returns
containerd's `io.containerd.cgroups.v1.Metrics` (memory, cpu and pids always
present, because `ctr`'s v1 printer dereferences `memory.usage` and
`cpu.usage`) or `io.containerd.cgroups.v2.Metrics` (pids, cpu, memory,
memory events, io and hugetlb, "max" read as 2^64-1 like containerd's), and
raises rather than report zeros: `NotFound` for a cgroup that is not there,
`CgroupsUnavailable` when the host has neither kind. Everything here is
plain blocking file reading, meant to be called through `asyncio.to_thread`.
The processes of a container (`ListPids`) and an OOM watch through the v1
memory controller's `cgroup.event_control` live here too.
"""

from __future__ import annotations

import asyncio
import os
import posixpath
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from core.api.io.containerd.cgroups import v1 as cg
from core.api.io.containerd.cgroups import v2 as cg2
from core.errors import FailedPrecondition, NotFound

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
V1_CONTROLLERS = ("cpu", "cpuacct", "memory", "pids", "blkio", "freezer", "devices", "hugetlb")
# Any of these mounted as v1 makes the host v1 (hybrid included): containerd
# then reads v1, and runc puts the container's limits there.
_V1_DECIDING = ("memory", "cpuacct", "cpu", "pids")
MAX_UINT64 = (1 << 64) - 1
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


def usage(stats: Stats) -> tuple[int | None, float | None]:
    """(memory bytes, CPU seconds) from either kind of statistics; None where absent."""
    if isinstance(stats, cg2.Metrics):
        memory = stats.memory.usage if stats.memory else None
        cpu = stats.cpu.usage_usec / 1e6 if stats.cpu else None
        return memory, cpu
    memory = stats.memory.usage.usage if stats.memory and stats.memory.usage else None
    cpu = stats.cpu.usage.total / 1e9 if stats.cpu and stats.cpu.usage else None
    return memory, cpu


def _text(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def _int(path: Path, unlimited: int = 0) -> int:
    text = _text(path).strip()
    if text == "max":
        return unlimited
    try:
        return int(text.split()[0]) if text else 0
    except ValueError:
        return 0


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

    def stats(self) -> Stats:
        """The cgroup's statistics; NotFound or CgroupsUnavailable instead of zeros."""
        if self.layout.version == 0:
            raise CgroupsUnavailable(f"cgroup statistics are unavailable: {self.layout.reason}")
        if not self.exists():
            raise NotFound(f"cgroup {self.path} does not exist")
        return _v2(self.dir("") or Path()) if self.layout.version == 2 else self._v1()

    def oom_kills(self) -> int:
        if self.layout.version == 2:
            return _table((self.dir("") or Path()) / "memory.events").get("oom_kill", 0)
        d = self.dir("memory")
        return 0 if d is None else _table(d / "memory.oom_control").get("oom_kill", 0)

    def _v1(self) -> cg.Metrics:
        none = Path("/nonexistent")
        mem = self.dir("memory") or none
        acct = self.dir("cpuacct") or none
        cpu_dir = self.dir("cpu") or none
        pids_dir = self.dir("pids") or none

        def entry(prefix: str) -> cg.MemoryEntry:
            return cg.MemoryEntry(
                usage=_int(mem / f"{prefix}usage_in_bytes"),
                max=_int(mem / f"{prefix}max_usage_in_bytes"),
                limit=_int(mem / f"{prefix}limit_in_bytes"),
                failcnt=_int(mem / f"{prefix}failcnt"),
            )

        stat = _table(mem / "memory.stat")
        memory = cg.MemoryStat(
            cache=stat.get("cache", 0),
            rss=stat.get("rss", 0),
            rss_huge=stat.get("rss_huge", 0),
            mapped_file=stat.get("mapped_file", 0),
            dirty=stat.get("dirty", 0),
            writeback=stat.get("writeback", 0),
            pg_pg_in=stat.get("pgpgin", 0),
            pg_pg_out=stat.get("pgpgout", 0),
            pg_fault=stat.get("pgfault", 0),
            pg_maj_fault=stat.get("pgmajfault", 0),
            inactive_anon=stat.get("inactive_anon", 0),
            active_anon=stat.get("active_anon", 0),
            inactive_file=stat.get("inactive_file", 0),
            active_file=stat.get("active_file", 0),
            unevictable=stat.get("unevictable", 0),
            hierarchical_memory_limit=stat.get("hierarchical_memory_limit", 0),
            hierarchical_swap_limit=stat.get("hierarchical_memsw_limit", 0),
            total_cache=stat.get("total_cache", 0),
            total_rss=stat.get("total_rss", 0),
            total_rss_huge=stat.get("total_rss_huge", 0),
            total_mapped_file=stat.get("total_mapped_file", 0),
            total_dirty=stat.get("total_dirty", 0),
            total_writeback=stat.get("total_writeback", 0),
            total_pg_pg_in=stat.get("total_pgpgin", 0),
            total_pg_pg_out=stat.get("total_pgpgout", 0),
            total_pg_fault=stat.get("total_pgfault", 0),
            total_pg_maj_fault=stat.get("total_pgmajfault", 0),
            total_inactive_anon=stat.get("total_inactive_anon", 0),
            total_active_anon=stat.get("total_active_anon", 0),
            total_inactive_file=stat.get("total_inactive_file", 0),
            total_active_file=stat.get("total_active_file", 0),
            total_unevictable=stat.get("total_unevictable", 0),
            usage=entry("memory."),
            swap=entry("memory.memsw."),
            kernel=entry("memory.kmem."),
            kernel_tcp=entry("memory.kmem.tcp."),
        )
        ticks = _table(acct / "cpuacct.stat")
        throttle = _table(cpu_dir / "cpu.stat")
        cpu = cg.CpuStat(
            usage=cg.CpuUsage(
                total=_int(acct / "cpuacct.usage"),
                # cpuacct.stat counts clock ticks; containerd reports nanoseconds.
                user=ticks.get("user", 0) * (1_000_000_000 // _TICKS),
                kernel=ticks.get("system", 0) * (1_000_000_000 // _TICKS),
                per_cpu=[int(v) for v in _text(acct / "cpuacct.usage_percpu").split()],
            ),
            throttling=cg.Throttle(
                periods=throttle.get("nr_periods", 0),
                throttled_periods=throttle.get("nr_throttled", 0),
                throttled_time=throttle.get("throttled_time", 0),
            ),
        )
        oom = _table(mem / "memory.oom_control")
        return cg.Metrics(
            pids=cg.PidsStat(
                current=_int(pids_dir / "pids.current"), limit=_int(pids_dir / "pids.max")
            ),
            cpu=cpu,
            memory=memory,
            memory_oom_control=cg.MemoryOomControl(
                oom_kill_disable=oom.get("oom_kill_disable", 0),
                under_oom=oom.get("under_oom", 0),
                oom_kill=oom.get("oom_kill", 0),
            ),
        )


# memory.stat keys that are also MemoryStat field names, as containerd copies them.
_V2_MEMORY_KEYS = (
    "anon", "file", "kernel_stack", "slab", "sock", "shmem", "file_mapped", "file_dirty",
    "file_writeback", "anon_thp", "inactive_anon", "active_anon", "inactive_file",
    "active_file", "unevictable", "slab_reclaimable", "slab_unreclaimable", "pgfault",
    "pgmajfault", "workingset_refault", "workingset_activate", "workingset_nodereclaim",
    "pgrefill", "pgscan", "pgsteal", "pgactivate", "pgdeactivate", "pglazyfree",
    "pglazyfreed", "thp_fault_alloc", "thp_collapse_alloc",
)  # fmt: skip


def _v2(d: Path) -> cg2.Metrics:
    stat = _table(d / "memory.stat")
    # Kernels from 5.8 split workingset_refault into _anon and _file.
    for key in ("workingset_refault", "workingset_activate"):
        if key not in stat:
            stat[key] = stat.get(f"{key}_anon", 0) + stat.get(f"{key}_file", 0)
    memory = cg2.MemoryStat(
        **{key: stat.get(key, 0) for key in _V2_MEMORY_KEYS},
        usage=_int(d / "memory.current"),
        usage_limit=_int(d / "memory.max", MAX_UINT64),
        swap_usage=_int(d / "memory.swap.current"),
        swap_limit=_int(d / "memory.swap.max", MAX_UINT64),
    )
    cpu = _table(d / "cpu.stat")
    events = _table(d / "memory.events")
    return cg2.Metrics(
        pids=cg2.PidsStat(current=_int(d / "pids.current"), limit=_int(d / "pids.max", MAX_UINT64)),
        cpu=cg2.CpuStat(
            usage_usec=cpu.get("usage_usec", 0),
            user_usec=cpu.get("user_usec", 0),
            system_usec=cpu.get("system_usec", 0),
            nr_periods=cpu.get("nr_periods", 0),
            nr_throttled=cpu.get("nr_throttled", 0),
            throttled_usec=cpu.get("throttled_usec", 0),
        ),
        memory=memory,
        memory_events=cg2.MemoryEvents(
            low=events.get("low", 0),
            high=events.get("high", 0),
            max=events.get("max", 0),
            oom=events.get("oom", 0),
            oom_kill=events.get("oom_kill", 0),
        ),
        io=cg2.IoStat(usage=_io_entries(d / "io.stat")),
        hugetlb=_hugetlb(d),
    )


def _io_entries(path: Path) -> list[cg2.IoEntry]:
    """io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` per device."""
    entries = []
    for line in _text(path).splitlines():
        device, *pairs = line.split()
        major, _, minor = device.partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        values: dict[str, int] = {}
        for pair in pairs:
            key, _, value = pair.partition("=")
            if value.isdigit():
                values[key] = int(value)
        entries.append(
            cg2.IoEntry(
                major=int(major),
                minor=int(minor),
                rbytes=values.get("rbytes", 0),
                wbytes=values.get("wbytes", 0),
                rios=values.get("rios", 0),
                wios=values.get("wios", 0),
            )
        )
    return entries


def _hugetlb(d: Path) -> list[cg2.HugeTlbStat]:
    try:
        names = sorted(
            n for n in os.listdir(d) if n.startswith("hugetlb.") and n.endswith(".current")
        )
    except OSError:
        return []
    found = []
    for name in names:
        size = name[len("hugetlb.") : -len(".current")]
        if "." in size:
            continue  # hugetlb.<size>.rsvd.current and the like
        found.append(
            cg2.HugeTlbStat(
                current=_int(d / name),
                max=_int(d / f"hugetlb.{size}.max", MAX_UINT64),
                pagesize=size,
            )
        )
    return found


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
