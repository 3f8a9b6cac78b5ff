"""A skip must mean a missing optional part; any other skip fails the run.

A test may skip because something optional is not on this host (runsc, a
Prometheus binary, Debian's containerd, the dev extra's code generators), or
because it needs root and the run is not root (CI runs as root, so it never
skips that way there). Any other reason, such as a loop mount or `mkfs` that
failed, hides a broken environment or a broken test behind a quiet "s", so this
plugin turns it into a failure that quotes the reason. Adding an optional part
means adding it to `OPTIONAL_PARTS`, on purpose.
"""

from __future__ import annotations

import os
import re
from collections.abc import Generator
from typing import Any

import pytest

OPTIONAL_PARTS = (
    "betterproto2_compiler",
    "busybox",
    "chromedriver",
    "chromium",
    "containerd",
    "crun",
    "ctr",
    "docker-registry",
    "grpc_tools",
    "grpcurl",
    "mkfs.btrfs",
    "prometheus",
    "ruff",
    "runc",
    "runsc",
    "skopeo",
)
_MISSING = re.compile(r"\b(is not installed|is missing|needed)\b")
_PART = re.compile(r"(?<![\w.-])(" + "|".join(re.escape(p) for p in OPTIONAL_PARTS) + r")(?!\w)")
_NEEDS_ROOT = re.compile(r"\bneeds? root\b")
_AMD64_ONLY = "built for linux/amd64"


def allowed(reason: str) -> bool:
    """Whether a skip's reason is a missing optional part (or a host this run cannot be)."""
    if _NEEDS_ROOT.search(reason):
        return os.geteuid() != 0
    if _AMD64_ONLY in reason:
        return os.uname().machine != "x86_64"
    return bool(_MISSING.search(reason) and _PART.search(reason))


def _reason(longrepr: Any) -> str:
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def _refuse(report: pytest.TestReport | pytest.CollectReport) -> None:
    reason = _reason(report.longrepr)
    if allowed(reason):
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped for a reason that is not a missing optional part: {reason}\n"
        "(tests/skips.py: only a missing optional part may skip; fix the cause, or fail)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail"):
        _refuse(report)


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()
    if report.skipped:
        _refuse(report)
