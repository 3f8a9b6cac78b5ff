"""The monitor's cached bytecode is made fresh before a template imports it."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from core.runtime.monitor_protocol import fresh_bytecode


def test_stale_bytecode_is_written_once_and_import_takes_it(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("VALUE = 1\n")
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert fresh_bytecode(source)
    written = cached.stat().st_mtime_ns
    assert fresh_bytecode(source)
    assert cached.stat().st_mtime_ns == written  # fresh: not compiled again
    # Import finds it valid, so it does not write its own.
    subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
         "import mod; assert mod.VALUE == 1"],
        check=True,
    )  # fmt: skip
    assert cached.stat().st_mtime_ns == written
    source.write_text("VALUE = 22\n")
    assert fresh_bytecode(source)
    assert cached.stat().st_mtime_ns != written
    done = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); "
         "import mod; print(mod.VALUE)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "22"


def test_bytecode_that_cannot_be_written_is_left_to_import(tmp_path: Path) -> None:
    source = tmp_path / "mod.py"
    source.write_text("VALUE = 1\n")
    (tmp_path / "__pycache__").write_text("not a directory")
    assert not fresh_bytecode(source)
