"""A container's cgroup, read from the cgroup v1 hierarchies.

This module owns what the engine learns from cgroupfs rather than from a
runtime: the statistics `Tasks.Metrics` returns, packed as containerd's
`io.containerd.cgroups.v1.Metrics` (memory, cpu and pids always present,
because `ctr`'s v1 printer dereferences `memory.usage` and `cpu.usage`); the
processes of a container for `ListPids`; and an OOM watch through the memory
controller's `cgroup.event_control`. Hierarchies are found from
/proc/self/mountinfo, so a controller mounted elsewhere is still found.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from pathlib import Path

from core.api.io.containerd.cgroups import v1 as cg

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def hierarchies() -> dict[str, Path]:
    """Controller name to the mount point of its v1 hierarchy."""
    found: dict[str, Path] = {}
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, extra = left.split(), right.split()
        if len(fields) < 5 or len(extra) < 3 or extra[0] != "cgroup":
            continue
        for option in extra[2].split(","):
            if option in ("cpu", "cpuacct", "memory", "pids", "blkio", "freezer", "devices"):
                found.setdefault(option, Path(fields[4]))
    return found


class Cgroup:
    """One container's cgroup path (`linux.cgroupsPath`) across the v1 controllers."""

    def __init__(self, path: str, mounts: dict[str, Path] | None = None) -> None:
        self.path = path.strip("/")
        self.mounts = mounts if mounts is not None else hierarchies()

    def dir(self, controller: str) -> Path | None:
        base = self.mounts.get(controller)
        return None if base is None else base / self.path

    def _read(self, controller: str, name: str) -> str:
        d = self.dir(controller)
        if d is None:
            return ""
        try:
            return (d / name).read_text()
        except OSError:
            return ""

    def _int(self, controller: str, name: str) -> int:
        text = self._read(controller, name).strip()
        if not text or text == "max":
            return 0
        try:
            return int(text)
        except ValueError:
            return 0

    def _table(self, controller: str, name: str) -> dict[str, int]:
        table: dict[str, int] = {}
        for line in self._read(controller, name).splitlines():
            key, _, value = line.partition(" ")
            try:
                table[key] = int(value)
            except ValueError:
                continue
        return table

    def exists(self) -> bool:
        d = self.dir("memory") or self.dir("pids")
        return d is not None and d.is_dir()

    def pids(self) -> list[int]:
        """Every process in the cgroup and below, from the pids (or memory) controller."""
        d = self.dir("pids") or self.dir("memory")
        if d is None or not d.is_dir():
            return []
        found: set[int] = set()
        for root, _, files in os.walk(d):
            if "cgroup.procs" not in files:
                continue
            try:
                text = Path(root, "cgroup.procs").read_text()
            except OSError:
                continue
            found.update(int(p) for p in text.split() if p.isdigit())
        return sorted(found)

    def _memory_entry(self, prefix: str) -> cg.MemoryEntry:
        return cg.MemoryEntry(
            usage=self._int("memory", f"{prefix}usage_in_bytes"),
            max=self._int("memory", f"{prefix}max_usage_in_bytes"),
            limit=self._int("memory", f"{prefix}limit_in_bytes"),
            failcnt=self._int("memory", f"{prefix}failcnt"),
        )

    def metrics(self) -> cg.Metrics:
        stat = self._table("memory", "memory.stat")
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
            usage=self._memory_entry("memory."),
            swap=self._memory_entry("memory.memsw."),
            kernel=self._memory_entry("memory.kmem."),
            kernel_tcp=self._memory_entry("memory.kmem.tcp."),
        )
        acct = self._table("cpuacct", "cpuacct.stat")
        per_cpu = [int(v) for v in self._read("cpuacct", "cpuacct.usage_percpu").split()]
        throttle = self._table("cpu", "cpu.stat")
        cpu = cg.CpuStat(
            usage=cg.CpuUsage(
                total=self._int("cpuacct", "cpuacct.usage"),
                # cpuacct.stat counts clock ticks; containerd reports nanoseconds.
                user=acct.get("user", 0) * (1_000_000_000 // _TICKS),
                kernel=acct.get("system", 0) * (1_000_000_000 // _TICKS),
                per_cpu=per_cpu,
            ),
            throttling=cg.Throttle(
                periods=throttle.get("nr_periods", 0),
                throttled_periods=throttle.get("nr_throttled", 0),
                throttled_time=throttle.get("throttled_time", 0),
            ),
        )
        pids = cg.PidsStat(
            current=self._int("pids", "pids.current"), limit=self._int("pids", "pids.max")
        )
        oom = self._table("memory", "memory.oom_control")
        return cg.Metrics(
            pids=pids,
            cpu=cpu,
            memory=memory,
            memory_oom_control=cg.MemoryOomControl(
                oom_kill_disable=oom.get("oom_kill_disable", 0),
                under_oom=oom.get("under_oom", 0),
                oom_kill=oom.get("oom_kill", 0),
            ),
        )

    def oom_kills(self) -> int:
        return self._table("memory", "memory.oom_control").get("oom_kill", 0)


class OomWatch:
    """Calls `on_oom` each time the kernel OOM-kills in the cgroup, via an eventfd."""

    def __init__(self, cgroup: Cgroup, on_oom: Callable[[], None]) -> None:
        self.cgroup = cgroup
        self.on_oom = on_oom
        self.efd: int | None = None
        self.seen = 0

    def start(self) -> bool:
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
        kills = self.cgroup.oom_kills()
        if kills > self.seen:
            self.seen = kills
            self.on_oom()
        elif not self.cgroup.exists():
            self.stop()

    def stop(self) -> None:
        if self.efd is not None:
            asyncio.get_running_loop().remove_reader(self.efd)
            os.close(self.efd)
            self.efd = None
