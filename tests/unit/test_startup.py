"""The engine imports betterproto2 without importlib.metadata, and betterproto2 sees its version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from core import startup

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys
from core import startup

startup.import_betterproto2()
skipped = sorted(m for m in ("importlib.metadata", "email", "zipfile", "csv") if m in sys.modules)
import betterproto2
import importlib.metadata

print(skipped, betterproto2.__version__ == importlib.metadata.version("betterproto2"))
print(hasattr(importlib.metadata, "distributions"))
"""


def test_betterproto2_is_imported_with_its_version_and_no_importlib_metadata() -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert done.stdout.splitlines() == ["[] True", "True"]


def test_a_distribution_not_installed_has_no_version() -> None:
    assert startup._installed_version("no-such-distribution") is None
