"""Why a task stopped, in words: signal names, the status label, inspect's lines, the toast,
and the OOM-kill counter read from either cgroup version's metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.api.io.containerd.cgroups import v1 as cgroups_v1
from core.api.io.containerd.cgroups import v2 as cgroups_v2
from tui import why
from tui.state import ContainerRow
from tui.syncer import oom_kills

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def stopped(status: int, **extra: object) -> ContainerRow:
    return ContainerRow("web-1", "img", "runc", status="STOPPED", exit_status=status, **extra)  # type: ignore[arg-type]


def test_exit_status_names_its_signal() -> None:
    assert why.exit_text(137) == "137 (SIGKILL)"
    assert why.exit_text(143) == "143 (SIGTERM)"
    assert why.exit_text(1) == "1"
    assert why.exit_text(0) == "0"
    # Past the last signal: a plain status.
    assert why.exit_text(255) == "255"


def test_status_label_fits_the_column() -> None:
    assert why.status_label(stopped(137)) == "SIGKILL(137)"
    assert why.status_label(stopped(137, oom=True)) == "OOMKILLED"
    # A child the OOM killer took does not make a clean exit an OOM kill.
    assert why.status_label(stopped(0, oom=True)) == "STOPPED(0)"
    assert dict(why.reasons(stopped(0, oom=True), NOW))["oom"].startswith("the OOM killer")
    assert why.status_label(stopped(1)) == "STOPPED(1)"
    # SIGVTALRM(154) is longer than the column: the plain form instead.
    assert why.status_label(stopped(154)) == "STOPPED(154)"
    assert all(len(why.status_label(stopped(n))) <= why.LABEL_WIDTH for n in range(256))
    assert why.status_label(ContainerRow("a", "i", "r", status="RUNNING")) == "RUNNING"


def test_reasons_and_toast() -> None:
    row = stopped(
        137,
        oom=True,
        exited_at=NOW - timedelta(seconds=75),
        ran_for=timedelta(hours=3, minutes=2).total_seconds(),
    )
    lines = dict(why.reasons(row, NOW))
    assert lines["exit status"] == "137 (SIGKILL)"
    assert lines["reason"].startswith("OOM-killed")
    assert lines["exited at"] == "2026-01-02 03:02:50 UTC (1m15s ago)"
    assert lines["ran for"] == "3h02m"
    assert why.exit_toast(row, ["out of memory?"]) == (
        "web-1 was OOM-killed after 3h02m\nout of memory?"
    )
    assert why.exit_toast(stopped(143), []) == "web-1 exited 143 (SIGTERM)"
    assert why.reasons(ContainerRow("a", "i", "r", status="RUNNING"), NOW) == []


def test_oom_kills_from_either_cgroup_version() -> None:
    v2 = cgroups_v2.Metrics(memory_events=cgroups_v2.MemoryEvents(oom=2, oom_kill=1))
    v1 = cgroups_v1.Metrics(memory_oom_control=cgroups_v1.MemoryOomControl(oom_kill=3))
    assert oom_kills(v2) == 1
    assert oom_kills(v1) == 3
    assert oom_kills(cgroups_v2.Metrics()) == 0
    assert oom_kills(object()) == 0
