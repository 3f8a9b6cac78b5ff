"""Container statistics for the CRI, read from the task's cgroup (v1 or v2)."""

from __future__ import annotations

import time

from core.api.io.containerd.cgroups import v1 as cg
from core.api.runtime import v1 as cri
from core.runtime import cgroups
from core.runtime.records import Task


def container_stats(task: Task, attributes: cri.ContainerAttributes) -> cri.ContainerStats:
    now = time.time_ns()
    stats = task.cgroup.stats()
    memory, cpu_seconds = cgroups.usage(stats)
    working_set = memory or 0
    if isinstance(stats, cg.Metrics) and stats.memory is not None:
        working_set = max(working_set - stats.memory.total_inactive_file, 0)
    return cri.ContainerStats(
        attributes=attributes,
        cpu=cri.CpuUsage(
            timestamp=now,
            usage_core_nano_seconds=cri.UInt64Value(value=int((cpu_seconds or 0) * 1e9)),
        ),
        memory=cri.MemoryUsage(
            timestamp=now,
            working_set_bytes=cri.UInt64Value(value=working_set),
            usage_bytes=cri.UInt64Value(value=memory or 0),
        ),
        writable_layer=cri.FilesystemUsage(timestamp=now),
    )
