"""A Python snippet run in a fresh interpreter on this tree, for tests of what a process imports."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(script: str, *args: str, timeout: float = 60, **env: str) -> str:
    """`script` run by `python -c` with `args`, this tree first on the path and `env`
    added to the environment; its stdout, or the test fails with its stderr."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), **env),
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout
