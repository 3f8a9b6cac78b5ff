"""A cgroup's statistics read cheaply enough to poll every task every few seconds.

`StatFiles` holds open the descriptors of the cgroup files whose values
containerd's `io.containerd.cgroups.v1.Metrics` or `v2.Metrics` carry, for as
long as the task lives, and re-reads each with one `pread` at offset 0:
cgroupfs regenerates a file's text on every read from its start, and an open
descriptor does not hold the cgroup back from `rmdir` (reads then fail with
ENODEV, which `read` reports as `Gone`). The texts are parsed with one
`bytes.split` each and encoded straight to the protobuf wire format, with no
message objects in between: the bytes go into a `Tasks.Metrics` reply as they
are (`encode_metric`), and the `Sample` keeps the few figures the engine's own
gauges and the CRI want. A `Memo` per cgroup skips parsing and encoding the
parts whose texts did not change since the last read. Absent files (no swap
accounting, a controller not mounted) read as zeros, as containerd reports
them. The descriptors of all cgroups together stay under half the soft
RLIMIT_NOFILE; past that a file is opened for each read instead of kept.
Plain blocking I/O, meant for a worker thread.
"""

from __future__ import annotations

import errno
import functools
import os
import resource
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_UINT64 = (1 << 64) - 1
V1_URL = "io.containerd.cgroups.v1.Metrics"
V2_URL = "io.containerd.cgroups.v2.Metrics"
_TICK_NS = 1_000_000_000 // (os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100)
_CHUNK = 16384
_ABSENT = -1
_TRANSIENT = -2


class Gone(Exception):
    """The cgroup was removed while its files were open."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One read of a cgroup: the encoded Metrics message and what the engine itself uses."""

    type_url: str
    data: bytes
    memory: int  # bytes charged to the cgroup now
    cpu_ns: int  # CPU time used since the cgroup was made
    inactive_file: int  # v1 total_inactive_file, which the CRI's working set leaves out
    taken_ns: int  # wall clock of the read, the time the counters were sampled at


# --- descriptors ------------------------------------------------------------------

_held = 0
_held_lock = threading.Lock()


@functools.cache
def _budget() -> int:
    # Asked on first use, not at import: the engine raises its soft limit at start.
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return (1 << 20) if soft == resource.RLIM_INFINITY else soft // 2


def held() -> int:
    """Descriptors all `StatFiles` hold open now."""
    return _held


class StatFiles:
    """The stat files of one cgroup, open between reads; `close` when the task goes."""

    def __init__(self, paths: Sequence[Path]) -> None:
        global _held
        self.paths = list(paths)
        self.fds: list[int] = []
        for path in self.paths:
            with _held_lock:
                keep = _held < _budget()
                if keep:
                    _held += 1
            if not keep:
                self.fds.append(_TRANSIENT)
                continue
            try:
                self.fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
            except OSError:
                with _held_lock:
                    _held -= 1
                self.fds.append(_ABSENT)

    def read(self) -> list[bytes]:
        """Every file's text now, b"" for an absent one; `Gone` once the cgroup is removed."""
        texts = []
        for fd, path in zip(self.fds, self.paths, strict=True):
            if fd == _ABSENT:
                texts.append(b"")
                continue
            try:
                if fd == _TRANSIENT:
                    texts.append(_read_path(path))
                else:
                    texts.append(_read_fd(fd))
            except OSError as exc:
                if exc.errno in (errno.ENODEV, errno.ENOENT):
                    raise Gone(str(path)) from None
                texts.append(b"")
        return texts

    def close(self) -> None:
        global _held
        kept = [fd for fd in self.fds if fd >= 0]
        self.fds = [_ABSENT] * len(self.paths)
        for fd in kept:
            os.close(fd)
        with _held_lock:
            _held -= len(kept)


def _read_fd(fd: int) -> bytes:
    data = os.pread(fd, _CHUNK, 0)
    while len(data) % _CHUNK == 0 and data:
        more = os.pread(fd, _CHUNK, len(data))
        if not more:
            break
        data += more
    return data


def _read_path(path: Path) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _read_fd(fd)
    finally:
        os.close(fd)


# --- parsing ----------------------------------------------------------------------


def _num(text: bytes, unlimited: int = 0) -> int:
    """A one-value file; "max" is `unlimited`, anything unreadable 0."""
    try:
        return int(text)
    except ValueError:
        return unlimited if text.strip() == b"max" else 0


def _table(text: bytes) -> dict[bytes, bytes]:
    """A `key value` per line file (memory.stat, cpu.stat, memory.events...)."""
    words = text.split()
    return dict(zip(words[::2], words[1::2], strict=False))


def _get(table: dict[bytes, bytes], key: bytes) -> int:
    value = table.get(key)
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


# --- protobuf wire format (proto3: zero scalars omitted, set messages always written) --

_SMALL = [bytes([i]) for i in range(128)]


def _varint(value: int) -> bytes:
    if value < 128:
        return _SMALL[value]
    out = bytearray()
    while value > 127:
        out.append((value & 127) | 128)
        value >>= 7
    out.append(value)
    return bytes(out)


_VARINT_TAGS = [_varint(n << 3) for n in range(64)]
_LEN_TAGS = [_varint(n << 3 | 2) for n in range(64)]


def _scalars(values: Sequence[int]) -> bytes:
    """uint64 fields 1..len(values), in order."""
    out = []
    for number, value in enumerate(values, 1):
        if value > 0:
            out.append(_VARINT_TAGS[number])
            out.append(_varint(value if value <= MAX_UINT64 else MAX_UINT64))
    return b"".join(out)


def _field(number: int, body: bytes) -> bytes:
    """A length-delimited field: a message, a string or a packed list."""
    return _LEN_TAGS[number] + _varint(len(body)) + body


class Memo:
    """A cgroup's last encoding of each part of its message, by the texts it came from.

    Most of what a task's files say does not change between two polls (limits,
    failure counts, and everything about a task that sleeps), so a part whose
    texts are byte for byte the last poll's is not parsed or encoded again.
    """

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: dict[str, tuple[Sequence[bytes], tuple[Any, ...]]] = {}

    def get(
        self,
        part: str,
        texts: Sequence[bytes],
        build: Callable[[Sequence[bytes]], tuple[Any, ...]],
    ) -> tuple[Any, ...]:
        last = self._parts.get(part)
        if last is not None and last[0] == texts:
            return last[1]
        built = build(texts)
        self._parts[part] = (texts, built)
        return built


# --- cgroup v1 ----------------------------------------------------------------------

V1_MEMORY_KEYS = (
    b"cache", b"rss", b"rss_huge", b"mapped_file", b"dirty", b"writeback", b"pgpgin",
    b"pgpgout", b"pgfault", b"pgmajfault", b"inactive_anon", b"active_anon",
    b"inactive_file", b"active_file", b"unevictable", b"hierarchical_memory_limit",
    b"hierarchical_memsw_limit", b"total_cache", b"total_rss", b"total_rss_huge",
    b"total_mapped_file", b"total_dirty", b"total_writeback", b"total_pgpgin",
    b"total_pgpgout", b"total_pgfault", b"total_pgmajfault", b"total_inactive_anon",
    b"total_active_anon", b"total_inactive_file", b"total_active_file",
    b"total_unevictable",
)  # fmt: skip
_V1_ENTRY_PREFIXES = ("memory.", "memory.memsw.", "memory.kmem.", "memory.kmem.tcp.")
_V1_ENTRY_FILES = ("limit_in_bytes", "usage_in_bytes", "max_usage_in_bytes", "failcnt")
# (controller, file name) in the order `encode_v1` takes the texts.
V1_FILES = (
    ("memory", "memory.stat"),
    *(("memory", p + f) for p in _V1_ENTRY_PREFIXES for f in _V1_ENTRY_FILES),
    ("memory", "memory.oom_control"),
    ("cpuacct", "cpuacct.usage"),
    ("cpuacct", "cpuacct.stat"),
    ("cpuacct", "cpuacct.usage_percpu"),
    ("cpu", "cpu.stat"),
    ("pids", "pids.current"),
    ("pids", "pids.max"),
)


def encode_v1(texts: Sequence[bytes], taken_ns: int, memo: Memo | None = None) -> Sample:
    """`io.containerd.cgroups.v1.Metrics` from the texts of `V1_FILES`, in that order."""
    memo = Memo() if memo is None else memo
    memory, usage, inactive_file = memo.get("memory", texts[0:17], _v1_memory)
    cpu, total = memo.get("cpu", texts[18:22], _v1_cpu)
    data = b"".join(
        (
            memo.get("pids", texts[22:24], _v1_pids)[0],
            cpu,
            memory,
            memo.get("oom", texts[17:18], _v1_oom)[0],
        )
    )
    return Sample(V1_URL, data, usage, total, inactive_file, taken_ns)


def _v1_memory(texts: Sequence[bytes]) -> tuple[bytes, int, int]:
    stat = _table(texts[0])
    entries = [_num(t) for t in texts[1:17]]
    fields = [_get(stat, key) for key in V1_MEMORY_KEYS]
    body = [_scalars(fields)]
    for number, at in zip(range(33, 37), range(0, 16, 4), strict=True):
        body.append(_field(number, _scalars(entries[at : at + 4])))
    return _field(4, b"".join(body)), entries[1], fields[29]


def _v1_cpu(texts: Sequence[bytes]) -> tuple[bytes, int]:
    total = _num(texts[0])
    ticks = _table(texts[1])
    per_cpu = b"".join(_varint(int(v)) for v in texts[2].split())
    throttle = _table(texts[3])
    usage = _scalars((total, _get(ticks, b"system") * _TICK_NS, _get(ticks, b"user") * _TICK_NS))
    if per_cpu:
        usage += _field(4, per_cpu)
    throttling = _scalars(
        (
            _get(throttle, b"nr_periods"),
            _get(throttle, b"nr_throttled"),
            _get(throttle, b"throttled_time"),
        )
    )
    return _field(3, _field(1, usage) + _field(2, throttling)), total


def _v1_oom(texts: Sequence[bytes]) -> tuple[bytes]:
    oom = _table(texts[0])
    kinds = (b"oom_kill_disable", b"under_oom", b"oom_kill")
    return (_field(9, _scalars([_get(oom, k) for k in kinds])),)


def _v1_pids(texts: Sequence[bytes]) -> tuple[bytes]:
    return (_field(2, _scalars((_num(texts[0]), _num(texts[1])))),)


# --- cgroup v2 ----------------------------------------------------------------------

# memory.stat keys that are also MemoryStat field names (1..31), as containerd copies them.
V2_MEMORY_KEYS = (
    b"anon", b"file", b"kernel_stack", b"slab", b"sock", b"shmem", b"file_mapped",
    b"file_dirty", b"file_writeback", b"anon_thp", b"inactive_anon", b"active_anon",
    b"inactive_file", b"active_file", b"unevictable", b"slab_reclaimable",
    b"slab_unreclaimable", b"pgfault", b"pgmajfault", b"workingset_refault",
    b"workingset_activate", b"workingset_nodereclaim", b"pgrefill", b"pgscan", b"pgsteal",
    b"pgactivate", b"pgdeactivate", b"pglazyfree", b"pglazyfreed", b"thp_fault_alloc",
    b"thp_collapse_alloc",
)  # fmt: skip
V2_FILES = (
    "memory.stat", "memory.current", "memory.max", "memory.swap.current", "memory.swap.max",
    "cpu.stat", "memory.events", "pids.current", "pids.max", "io.stat",
)  # fmt: skip


def hugetlb_sizes(directory: Path) -> list[str]:
    """The huge page sizes a v2 cgroup accounts (`hugetlb.<size>.current`), sorted."""
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    sizes = []
    for name in names:
        if name.startswith("hugetlb.") and name.endswith(".current"):
            size = name[len("hugetlb.") : -len(".current")]
            if "." not in size:  # not hugetlb.<size>.rsvd.current and the like
                sizes.append(size)
    return sorted(sizes)


def v2_files(sizes: Sequence[str]) -> list[str]:
    """The file names `encode_v2` takes, with a current and max pair per huge page size."""
    return [*V2_FILES, *(f"hugetlb.{s}.{k}" for s in sizes for k in ("current", "max"))]


def encode_v2(
    texts: Sequence[bytes], sizes: Sequence[str], taken_ns: int, memo: Memo | None = None
) -> Sample:
    """`io.containerd.cgroups.v2.Metrics` from the texts of `v2_files(sizes)`, in order."""
    memo = Memo() if memo is None else memo
    memory, usage = memo.get("memory", texts[0:5], _v2_memory)
    cpu, usage_usec = memo.get("cpu", texts[5:6], _v2_cpu)
    parts = [
        memo.get("pids", texts[7:9], _v2_pids)[0],
        cpu,
        memory,
        memo.get("io", texts[9:10], _v2_io)[0],
    ]
    for i, size in enumerate(sizes):
        current, limit = texts[10 + 2 * i], texts[11 + 2 * i]
        body = _scalars((_num(current), _num(limit, MAX_UINT64))) + _field(3, size.encode())
        parts.append(_field(7, body))
    parts.append(memo.get("events", texts[6:7], _v2_events)[0])
    return Sample(V2_URL, b"".join(parts), usage, usage_usec * 1000, 0, taken_ns)


def _v2_memory(texts: Sequence[bytes]) -> tuple[bytes, int]:
    stat = _table(texts[0])
    # Kernels from 5.8 split workingset_refault and _activate into _anon and _file.
    for key in (b"workingset_refault", b"workingset_activate"):
        if key not in stat:
            stat[key] = b"%d" % (_get(stat, key + b"_anon") + _get(stat, key + b"_file"))
    usage = _num(texts[1])
    fields = [_get(stat, key) for key in V2_MEMORY_KEYS]
    fields += (usage, _num(texts[2], MAX_UINT64), _num(texts[3]), _num(texts[4], MAX_UINT64))
    return _field(4, _scalars(fields)), usage


def _v2_cpu(texts: Sequence[bytes]) -> tuple[bytes, int]:
    cpu = _table(texts[0])
    kinds = (
        b"usage_usec", b"user_usec", b"system_usec", b"nr_periods", b"nr_throttled",
        b"throttled_usec",
    )  # fmt: skip
    fields = [_get(cpu, k) for k in kinds]
    return _field(2, _scalars(fields)), fields[0]


def _v2_pids(texts: Sequence[bytes]) -> tuple[bytes]:
    return (_field(1, _scalars((_num(texts[0]), _num(texts[1], MAX_UINT64)))),)


def _v2_io(texts: Sequence[bytes]) -> tuple[bytes]:
    return (_field(6, b"".join(_field(1, entry) for entry in _io_entries(texts[0]))),)


def _v2_events(texts: Sequence[bytes]) -> tuple[bytes]:
    events = _table(texts[0])
    kinds = (b"low", b"high", b"max", b"oom", b"oom_kill")
    return (_field(8, _scalars([_get(events, k) for k in kinds])),)


def _io_entries(text: bytes) -> list[bytes]:
    """io.stat: `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N` per device."""
    entries = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        device, *pairs = words
        major, _, minor = device.partition(b":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        values = dict(pair.partition(b"=")[::2] for pair in pairs)
        fields = [int(major), int(minor)]
        fields += (_get(values, k) for k in (b"rbytes", b"wbytes", b"rios", b"wios"))
        entries.append(_scalars(fields))
    return entries


def encode_metric(container_id: str, sample: Sample) -> bytes:
    """A `containerd.types.Metric` carrying the sample, stamped with when it was read."""
    seconds, nanos = divmod(sample.taken_ns, 1_000_000_000)
    data = _field(1, sample.type_url.encode()) + _field(2, sample.data)
    return (
        _field(1, _scalars((seconds, nanos))) + _field(2, container_id.encode()) + _field(3, data)
    )
