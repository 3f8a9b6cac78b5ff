"""Cheap cgroup samples: the parsers on captured texts, the wire format, held files, sharing."""

from __future__ import annotations

import asyncio
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.api.containerd.types import Metric
from core.api.google.protobuf import Any
from core.api.io.containerd.cgroups import v1 as cg1
from core.api.io.containerd.cgroups import v2 as cg2
from core.errors import NotFound
from core.runtime import cgroup_sample
from core.runtime.cgroup_sample import (
    MAX_UINT64,
    V1_FILES,
    StatFiles,
    encode_v1,
    encode_v2,
    v2_files,
)
from core.runtime.cgroups import Cgroup, layout_from_mountinfo
from core.runtime.sampler import Sampler

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "cgroups"

# memory.stat of a 5.4 kernel's v2 cgroup: workingset_* not yet split by anon and file.
V2_MEMORY_STAT_5_4 = b"""anon 1048576
file 2097152
kernel_stack 16384
slab 65536
sock 0
shmem 0
file_mapped 4096
file_dirty 8192
file_writeback 0
anon_thp 0
inactive_anon 524288
active_anon 524288
inactive_file 1048576
active_file 1048576
unevictable 0
slab_reclaimable 32768
slab_unreclaimable 32768
pgfault 4242
pgmajfault 7
workingset_refault 11
workingset_activate 13
workingset_nodereclaim 0
pgrefill 0
pgscan 0
pgsteal 0
pgactivate 17
pgdeactivate 0
pglazyfree 0
pglazyfreed 0
thp_fault_alloc 0
thp_collapse_alloc 0
"""


def layout(kind: str) -> object:
    host = FIXTURES / kind
    return layout_from_mountinfo((host / "mountinfo").read_text(), host)


@pytest.mark.parametrize(
    ("kind", "message", "url"),
    [
        ("v1", cg1.Metrics, "io.containerd.cgroups.v1.Metrics"),
        ("v2", cg2.Metrics, "io.containerd.cgroups.v2.Metrics"),
    ],
)
def test_a_sample_is_the_wire_form_betterproto_writes(
    kind: str, message: type[cg1.Metrics] | type[cg2.Metrics], url: str
) -> None:
    cgroup = Cgroup("/rec/web", layout(kind))  # type: ignore[arg-type]
    try:
        sample = cgroup.sample()
    finally:
        cgroup.close()
    assert sample.type_url == url
    # Parsing and writing it again gives the same bytes: field order, packing
    # and the proto3 rules for zeros and empty messages are betterproto's.
    assert bytes(message.parse(sample.data)) == sample.data
    assert (sample.memory, sample.cpu_ns) == (4976640, 22302916 if kind == "v1" else 22302000)


def test_v2_parser_on_texts_of_an_older_kernel() -> None:
    texts = {name: b"" for name in v2_files(["2MB", "1GB"])}
    texts |= {
        "memory.stat": V2_MEMORY_STAT_5_4,
        "memory.current": b"3145728\n",
        "memory.max": b"67108864\n",
        "memory.swap.current": b"0\n",
        "memory.swap.max": b"max\n",
        "cpu.stat": b"usage_usec 900\nuser_usec 600\nsystem_usec 300\n",
        "memory.events": b"low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\n",
        "pids.current": b"2\n",
        "pids.max": b"100\n",
        "io.stat": b"8:16 rbytes=512 wbytes=1024 rios=1 wios=2 dbytes=0 dios=0\n\n",
        "hugetlb.2MB.current": b"2097152\n",
        "hugetlb.2MB.max": b"max\n",
        "hugetlb.1GB.current": b"0\n",
        "hugetlb.1GB.max": b"0\n",
    }
    sample = encode_v2(list(texts.values()), ["2MB", "1GB"], 7)
    stats = cg2.Metrics.parse(sample.data)
    assert (sample.memory, sample.cpu_ns, sample.taken_ns) == (3145728, 900_000, 7)
    assert stats.pids == cg2.PidsStat(current=2, limit=100)
    assert stats.cpu == cg2.CpuStat(usage_usec=900, user_usec=600, system_usec=300)
    memory = stats.memory
    assert memory is not None
    assert (memory.anon, memory.file, memory.file_mapped, memory.file_dirty) == (
        1048576,
        2097152,
        4096,
        8192,
    )
    assert (memory.pgfault, memory.pgmajfault, memory.pgactivate) == (4242, 7, 17)
    assert (memory.workingset_refault, memory.workingset_activate) == (11, 13)
    assert (memory.usage, memory.usage_limit) == (3145728, 67108864)
    assert (memory.swap_usage, memory.swap_limit) == (0, MAX_UINT64)
    assert stats.memory_events == cg2.MemoryEvents(max=4, oom=1, oom_kill=1)
    assert stats.io == cg2.IoStat(
        usage=[cg2.IoEntry(major=8, minor=16, rbytes=512, wbytes=1024, rios=1, wios=2)]
    )
    assert [(h.pagesize, h.current, h.max) for h in stats.hugetlb] == [
        ("2MB", 2097152, MAX_UINT64),
        ("1GB", 0, 0),
    ]
    assert bytes(stats) == sample.data


def test_v1_parser_without_swap_accounting() -> None:
    texts = dict.fromkeys(V1_FILES, b"")
    texts |= {
        ("memory", "memory.stat"): b"cache 8192\nrss 4096\ntotal_inactive_file 1024\n",
        ("memory", "memory.usage_in_bytes"): b"12288\n",
        ("memory", "memory.limit_in_bytes"): b"9223372036854771712\n",
        ("memory", "memory.oom_control"): b"oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        ("cpuacct", "cpuacct.usage"): b"5000000\n",
        ("cpuacct", "cpuacct.stat"): b"user 3\nsystem 1\n",
        ("cpuacct", "cpuacct.usage_percpu"): b"4000000 1000000 \n",
        ("cpu", "cpu.stat"): b"nr_periods 5\nnr_throttled 1\nthrottled_time 777\n",
        ("pids", "pids.current"): b"3\n",
        ("pids", "pids.max"): b"max\n",
    }
    sample = encode_v1(list(texts.values()), 9)
    stats = cg1.Metrics.parse(sample.data)
    tick = 1_000_000_000 // os.sysconf("SC_CLK_TCK")
    assert (sample.memory, sample.cpu_ns, sample.inactive_file) == (12288, 5000000, 1024)
    assert stats.cpu == cg1.CpuStat(
        usage=cg1.CpuUsage(total=5000000, user=3 * tick, kernel=tick, per_cpu=[4000000, 1000000]),
        throttling=cg1.Throttle(periods=5, throttled_periods=1, throttled_time=777),
    )
    memory = stats.memory
    assert memory is not None and memory.usage is not None
    assert (memory.cache, memory.rss, memory.total_inactive_file) == (8192, 4096, 1024)
    assert (memory.usage.usage, memory.usage.limit) == (12288, 9223372036854771712)
    # Absent memsw and kmem files read as zeros, the messages still there.
    assert memory.swap == cg1.MemoryEntry() and memory.kernel_tcp == cg1.MemoryEntry()
    assert stats.pids == cg1.PidsStat(current=3)
    assert stats.memory_oom_control == cg1.MemoryOomControl(oom_kill=2)
    assert bytes(stats) == sample.data


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_files_stay_open_are_read_afresh_and_are_closed(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"1\n")
    (tmp_path / "b").write_bytes(b"x 2\n")
    fds, held = open_fds(), cgroup_sample.held()
    files = StatFiles([tmp_path / "a", tmp_path / "b", tmp_path / "absent"])
    assert (open_fds(), cgroup_sample.held()) == (fds + 2, held + 2)
    assert files.read() == [b"1\n", b"x 2\n", b""]
    with open(tmp_path / "a", "r+b") as f:
        f.write(b"3\n")
    assert files.read()[0] == b"3\n"
    files.close()
    assert (open_fds(), cgroup_sample.held()) == (fds, held)


def test_a_long_file_is_read_whole(tmp_path: Path) -> None:
    text = b"".join(b"key%d %d\n" % (i, i) for i in range(5000))
    (tmp_path / "long").write_bytes(text)
    files = StatFiles([tmp_path / "long"])
    try:
        assert files.read() == [text]
    finally:
        files.close()


def test_past_the_budget_files_are_opened_for_each_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    budget = cgroup_sample.held()
    monkeypatch.setattr(cgroup_sample, "_budget", lambda: budget)
    (tmp_path / "a").write_bytes(b"1\n")
    fds = open_fds()
    files = StatFiles([tmp_path / "a"])
    assert open_fds() == fds
    assert files.read() == [b"1\n"]
    (tmp_path / "a").unlink()
    with pytest.raises(cgroup_sample.Gone):
        files.read()
    files.close()
    assert open_fds() == fds


def test_a_removed_cgroup_is_not_found_and_its_files_are_closed(tmp_path: Path) -> None:
    shutil.copytree(FIXTURES / "v2", tmp_path / "v2")
    host = tmp_path / "v2"
    cgroup = Cgroup("/rec/web", layout_from_mountinfo((host / "mountinfo").read_text(), host))
    fds = open_fds()
    cgroup.sample()
    assert open_fds() > fds
    cgroup.close()
    assert open_fds() == fds
    shutil.rmtree(host / "sys/fs/cgroup/rec/web")
    with pytest.raises(NotFound):
        cgroup.sample()
    assert open_fds() == fds


def counting(cgroup: Cgroup, reads: list[str]) -> Cgroup:
    real = cgroup.sample

    def sample() -> cgroup_sample.Sample:
        reads.append(cgroup.path)
        return real()

    cgroup.sample = sample  # type: ignore[method-assign]
    return cgroup


async def test_requests_inside_the_window_share_one_read() -> None:
    reads: list[str] = []
    web = counting(Cgroup("/rec/web", layout("v2")), reads)  # type: ignore[arg-type]
    gone = counting(Cgroup("/rec/gone", layout("v2")), reads)  # type: ignore[arg-type]
    sampler = Sampler(window=0.2)
    try:
        first, second = await asyncio.gather(
            sampler.samples([web, gone]), sampler.samples([web, gone])
        )
        assert first == second and first[0] is not None and first[1] is None
        # A cgroup that is gone is looked for again; a fresh sample is shared.
        assert reads == ["rec/web", "rec/gone", "rec/gone"]
        assert await sampler.samples([web]) == first[:1]
        await asyncio.sleep(0.25)
        await sampler.samples([web])
        assert reads.count("rec/web") == 2
        sampler.forget(web)
        await sampler.samples([web])
        assert reads.count("rec/web") == 3
    finally:
        web.close()


def test_a_metric_is_encoded_as_betterproto_would() -> None:
    sample = encode_v1([b""] * len(V1_FILES), 1_764_000_000_123_456_000)
    theirs = Metric(
        timestamp=datetime.fromtimestamp(1_764_000_000, UTC) + timedelta(microseconds=123456),
        id="web-1",
        data=Any(type_url="io.containerd.cgroups.v1.Metrics", value=sample.data),
    )
    assert cgroup_sample.encode_metric("web-1", sample) == bytes(theirs)


def test_parts_whose_texts_did_not_change_are_reused_and_the_rest_is_not() -> None:
    texts = [b""] * len(V1_FILES)
    texts[1] = b"4096\n"  # memory.limit_in_bytes
    texts[18] = b"100\n"  # cpuacct.usage
    memo = cgroup_sample.Memo()
    first = encode_v1(list(texts), 1, memo)
    texts[18] = b"250\n"
    second = encode_v1(list(texts), 2, memo)
    assert second == encode_v1(list(texts), 2)
    assert (first.cpu_ns, second.cpu_ns) == (100, 250)
    stats = cg1.Metrics.parse(second.data)
    assert stats.memory is not None and stats.memory.usage == cg1.MemoryEntry(limit=4096)
