"""The pull pipeline's module leaves the unpacker's to the pipeline, which loads them meanwhile.

A fresh engine's first pull imports `core.images.pull` before it asks the registry anything;
the unpacker's modules (the applier, its tar reader, the compressors, tar itself) are loaded
by the pipeline in a worker thread while the registry answers, so importing the pipeline's
module must not load them. Checked in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

UNPACKER = ("core.images.unpack", "core.diff", "tarfile", "isal")

SCRIPT = """
import sys
import core.images.pull
names = tuple(sys.argv[1].split())
print(" ".join(sorted(m for m in sys.modules if m in names or m.startswith(names))))
"""


def test_importing_the_pipeline_loads_no_unpacker() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, " ".join(UNPACKER)],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=60,
    )
    assert done.stdout.split() == []
