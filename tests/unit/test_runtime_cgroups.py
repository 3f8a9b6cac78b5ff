"""cgroup v1 statistics read from a fake hierarchy."""

from __future__ import annotations

from pathlib import Path

from core.runtime.cgroups import Cgroup


def _write(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_metrics_from_v1_files(tmp_path: Path) -> None:
    mounts = {c: tmp_path / c for c in ("memory", "cpuacct", "cpu", "pids")}
    _write(mounts["memory"] / "ns/c1", {
        "memory.usage_in_bytes": "4096\n",
        "memory.limit_in_bytes": "65536\n",
        "memory.max_usage_in_bytes": "8192\n",
        "memory.failcnt": "1\n",
        "memory.stat": "cache 10\nrss 20\ntotal_cache 30\npgfault 7\n",
        "memory.oom_control": "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    })  # fmt: skip
    _write(mounts["cpuacct"] / "ns/c1", {
        "cpuacct.usage": "123456\n",
        "cpuacct.usage_percpu": "100000 23456 \n",
        "cpuacct.stat": "user 3\nsystem 1\n",
    })  # fmt: skip
    _write(mounts["cpu"] / "ns/c1", {"cpu.stat": "nr_periods 5\nnr_throttled 1\n"})
    _write(mounts["pids"] / "ns/c1", {"pids.current": "3\n", "pids.max": "max\n",
                                       "cgroup.procs": "10\n11\n"})  # fmt: skip
    _write(mounts["pids"] / "ns/c1/sub", {"cgroup.procs": "12\n"})
    cg = Cgroup("/ns/c1", mounts)
    m = cg.metrics()
    assert m.memory.usage.usage == 4096 and m.memory.usage.limit == 65536
    assert m.memory.usage.max == 8192 and m.memory.usage.failcnt == 1
    assert (m.memory.cache, m.memory.rss, m.memory.total_cache, m.memory.pg_fault) == (
        10,
        20,
        30,
        7,
    )
    assert m.cpu.usage.total == 123456 and m.cpu.usage.per_cpu == [100000, 23456]
    assert m.cpu.usage.user > m.cpu.usage.kernel > 0
    assert m.cpu.throttling.periods == 5
    assert (m.pids.current, m.pids.limit) == (3, 0)
    assert m.memory_oom_control.oom_kill == 2
    assert cg.pids() == [10, 11, 12]
    assert cg.exists()


def test_missing_cgroup_still_gives_printable_metrics(tmp_path: Path) -> None:
    m = Cgroup("/ns/gone", {"memory": tmp_path}).metrics()
    assert m.memory is not None and m.memory.usage is not None and m.memory.usage.usage == 0
    assert m.cpu is not None and m.cpu.usage is not None
    assert Cgroup("/ns/gone", {"memory": tmp_path}).pids() == []
