"""The pull pipeline's module leaves the unpacker's to the pipeline, which loads them meanwhile.

A fresh engine's first pull imports `core.images.pull` before it asks the registry anything;
the unpacker's modules (the applier, its tar reader, the compressors, tar itself) are loaded
by the pipeline in a worker thread while the registry answers, so importing the pipeline's
module must not load them. Checked in a fresh interpreter.
"""

from __future__ import annotations

from tests.fresh import run_fresh

UNPACKER = ("core.images.unpack", "core.diff", "tarfile", "isal")

SCRIPT = """
import sys
import core.images.pull
names = tuple(sys.argv[1].split())
print(" ".join(sorted(m for m in sys.modules if m in names or m.startswith(names))))
"""


def test_importing_the_pipeline_loads_no_unpacker() -> None:
    assert run_fresh(SCRIPT, " ".join(UNPACKER)).split() == []
