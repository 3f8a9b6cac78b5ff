"""Container statistics for the CRI, read from the task's cgroup (v1 or v2)."""

from __future__ import annotations

import time

from core.api.runtime import v1 as cri
from core.runtime.records import Task


def container_stats(task: Task, attributes: cri.ContainerAttributes) -> cri.ContainerStats:
    now = time.time_ns()
    sample = task.cgroup.sample()
    # The kubelet's working set: usage less inactive file pages (as before, v1 only).
    working_set = max(sample.memory - sample.inactive_file, 0)
    return cri.ContainerStats(
        attributes=attributes,
        cpu=cri.CpuUsage(
            timestamp=now,
            usage_core_nano_seconds=cri.UInt64Value(value=sample.cpu_ns),
        ),
        memory=cri.MemoryUsage(
            timestamp=now,
            working_set_bytes=cri.UInt64Value(value=working_set),
            usage_bytes=cri.UInt64Value(value=sample.memory),
        ),
        writable_layer=cri.FilesystemUsage(timestamp=now),
    )
