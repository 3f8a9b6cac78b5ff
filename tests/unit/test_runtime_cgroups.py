"""The one cgroup reader, on recorded cgroupfs trees of a v1 (hybrid), a v2 and a bare host."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from core import typeurl
from core.api.io.containerd.cgroups import v1 as cg1
from core.api.io.containerd.cgroups import v2 as cg2
from core.config import Config, GrpcConfig
from core.engine import Engine
from core.errors import NotFound
from core.runtime import cgroups
from core.runtime.cgroup_sample import MAX_UINT64
from core.runtime.cgroups import Cgroup, CgroupsUnavailable, layout_from_mountinfo

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroups"


def layout(kind: str) -> cgroups.Layout:
    host = FIXTURES / kind
    return layout_from_mountinfo((host / "mountinfo").read_text(), host)


def test_layouts_are_decided_like_containerd() -> None:
    hybrid = layout("v1")
    assert hybrid.version == 1
    assert hybrid.v1["memory"] == FIXTURES / "v1/sys/fs/cgroup/memory"
    assert hybrid.unified == FIXTURES / "v1/sys/fs/cgroup/unified"
    unified = layout("v2")
    assert (unified.version, unified.unified) == (2, FIXTURES / "v2/sys/fs/cgroup")
    bare = layout("none")
    assert bare.version == 0 and "no cgroup" in bare.reason


def test_v1_statistics_from_a_recorded_tree() -> None:
    stats = Cgroup("/rec/web", layout("v1")).stats()
    assert isinstance(stats, cg1.Metrics)
    assert stats.memory is not None and stats.memory.usage is not None
    assert stats.memory.usage.usage == 4976640
    assert stats.memory.usage.limit == 9223372036854771712
    assert (stats.memory.cache, stats.memory.rss, stats.memory.pg_fault) == (4194304, 163840, 1065)
    assert stats.memory.total_inactive_anon == 4345856
    assert stats.cpu is not None and stats.cpu.usage is not None
    assert stats.cpu.usage.total == 22302916
    assert stats.cpu.usage.per_cpu == [1618205, 20684711]
    assert stats.cpu.usage.user == stats.cpu.usage.kernel > 0
    assert stats.pids is not None and (stats.pids.current, stats.pids.limit) == (3, 0)
    assert stats.memory_oom_control is not None and stats.memory_oom_control.oom_kill == 0
    sample = Cgroup("/rec/web", layout("v1")).sample()
    assert (sample.memory, sample.cpu_ns, sample.inactive_file) == (4976640, 22302916, 0)
    assert typeurl.pack(stats).type_url == "io.containerd.cgroups.v1.Metrics"


def test_v2_statistics_from_a_recorded_tree() -> None:
    stats = Cgroup("/rec/web", layout("v2")).stats()
    assert isinstance(stats, cg2.Metrics)
    assert stats.pids is not None and (stats.pids.current, stats.pids.limit) == (3, MAX_UINT64)
    assert stats.cpu is not None
    assert (stats.cpu.usage_usec, stats.cpu.user_usec, stats.cpu.system_usec) == (
        22302,
        11151,
        11151,
    )
    assert (stats.cpu.nr_periods, stats.cpu.nr_throttled, stats.cpu.throttled_usec) == (
        12,
        3,
        4521,
    )
    memory = stats.memory
    assert memory is not None
    assert (memory.usage, memory.usage_limit) == (4976640, MAX_UINT64)
    assert (memory.swap_usage, memory.swap_limit) == (0, MAX_UINT64)
    assert (memory.anon, memory.file, memory.shmem, memory.slab) == (
        163840,
        4194304,
        4194304,
        159744,
    )
    assert (memory.pgfault, memory.inactive_anon, memory.pgactivate) == (1065, 4345856, 3)
    # Newer kernels split these by anon and file; the sum is what the field meant.
    assert (memory.workingset_refault, memory.workingset_activate) == (5, 2)
    assert stats.memory_events is not None
    assert (stats.memory_events.max, stats.memory_events.oom, stats.memory_events.oom_kill) == (
        2,
        1,
        1,
    )
    assert stats.io is not None
    assert [(e.major, e.minor, e.rbytes, e.wbytes, e.rios, e.wios) for e in stats.io.usage] == [
        (8, 0, 1310720, 4096, 40, 1),
        (253, 0, 1310720, 4096, 40, 1),
    ]
    assert [(h.pagesize, h.current, h.max) for h in stats.hugetlb] == [("2MB", 0, MAX_UINT64)]
    sample = Cgroup("/rec/web", layout("v2")).sample()
    assert (sample.memory, sample.cpu_ns) == (4976640, 22302000)
    packed = typeurl.pack(stats)
    assert packed.type_url == "io.containerd.cgroups.v2.Metrics"
    assert typeurl.unpack(packed) == stats


def test_processes_of_either_kind() -> None:
    assert Cgroup("/rec/web", layout("v1")).pids() == [16587, 16600, 16601]
    assert Cgroup("/rec/web", layout("v2")).pids() == [16587, 16600, 16601]
    assert Cgroup("/rec/web", layout("v2")).oom_kills() == 1


def test_an_oom_kill_the_eventfd_has_not_told_is_reported_once() -> None:
    # A task can exit before the eventfd's wakeup is read: the counter is checked then.
    heard: list[str] = []
    watch = cgroups.OomWatch(Cgroup("/rec/web", layout("v2")), lambda: heard.append("oom"))
    assert watch.check() is True
    assert watch.check() is False
    assert heard == ["oom"]


@pytest.mark.parametrize("kind", ["v1", "v2"])
def test_a_missing_cgroup_is_not_found_rather_than_zeros(kind: str) -> None:
    gone = Cgroup("/rec/gone", layout(kind))
    assert not gone.exists() and gone.pids() == []
    with pytest.raises(NotFound, match="rec/gone"):
        gone.stats()


def test_a_host_without_cgroups_says_so() -> None:
    with pytest.raises(CgroupsUnavailable, match="no cgroup v1 controllers and no cgroup2"):
        Cgroup("/rec/web", layout("none")).stats()


def test_a_cgroups_path_cannot_climb_out() -> None:
    climbing = Cgroup("/../../rec/web", layout("v2"))
    assert climbing.dir("") == FIXTURES / "v2/sys/fs/cgroup/rec/web"


def test_the_cgroups_plugin_reports_a_host_without_cgroups(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cgroups, "detect", lambda: layout("none"))
    base = Config(root=tmp_path / "root", state=tmp_path / "state", grpc=GrpcConfig(address="s"))
    engine = Engine(dataclasses.replace(base, runtimes={}, default_runtime="runc"))
    try:
        plugin = next(p for p in engine.plugins.plugins if p.id == "cgroups")
        assert plugin.status == "error" and "no cgroup v1 controllers" in plugin.error
    finally:
        engine.close()
