"""Percentiles, the ratio table every benchmark prints, and the machine line above it."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import subprocess
from pathlib import Path


def pct(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    k = max(0, min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(samples: list[float]) -> dict[str, float]:
    return {"p50": pct(samples, 50), "p99": pct(samples, 99), "mean": statistics.fmean(samples)}


def table(rows: list[tuple[str, float, float, str]]) -> str:
    """Rows of (what, containerd, ctrdeck, unit) as markdown with ctrdeck/containerd ratios."""
    out = ["| measure | containerd | ctrdeck | ctrdeck / containerd |", "|---|---|---|---|"]
    for what, cd, cx, unit in rows:
        ratio = cx / cd if cd else float("nan")
        out.append(f"| {what} | {cd:.3f} {unit} | {cx:.3f} {unit} | {ratio:.2f}x |")
    return "\n".join(out)


def machine() -> str:
    """The host, its CPU, kernel, Python and containerd, as a benchmark's heading names them."""
    cd = subprocess.run(["containerd", "--version"], capture_output=True, text=True).stdout.strip()
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.node()} · {os.cpu_count()} cores · {cpu} · Linux {platform.release()} · "
        f"Python {platform.python_version()} · {cd}"
    )
