"""The engine process's first import: betterproto2, without importlib.metadata.

betterproto2 looks up its own version when it is imported
(`importlib.metadata.version("betterproto2")`, to check the generated code's
compiler version against it), and importlib.metadata imports email, zipfile and
csv: about 1.5 MiB of an engine at rest, for one string. `import_betterproto2`
imports it with a stand-in `importlib.metadata` in place whose `version()` reads
the `Version:` of betterproto2's own `METADATA` file, found the way
importlib.metadata finds it (a `betterproto2-*.dist-info` directory on
`sys.path`); the real module stays importable afterwards. When no such directory
is found, betterproto2 is imported as it is anywhere else. Called by
`ctrdeck engine` before anything imports betterproto2.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

DISTRIBUTION = "betterproto2"


def import_betterproto2() -> None:
    if DISTRIBUTION in sys.modules or "importlib.metadata" in sys.modules:
        return
    version = _installed_version(DISTRIBUTION)
    if version is None:
        import betterproto2  # importlib.metadata looks where this did not

        return

    def lookup(name: str) -> str:
        if name != DISTRIBUTION:
            raise LookupError(f"the stand-in importlib.metadata knows only {DISTRIBUTION}")
        return version

    stand_in = types.ModuleType("importlib.metadata")
    stand_in.version = lookup  # type: ignore[attr-defined]
    sys.modules["importlib.metadata"] = stand_in
    importlib.metadata = stand_in  # type: ignore[attr-defined]
    try:
        import betterproto2  # noqa: F401
    finally:
        del sys.modules["importlib.metadata"]
        del importlib.metadata  # type: ignore[attr-defined]


def _installed_version(name: str) -> str | None:
    """The Version of the first `name-*.dist-info` on sys.path, as importlib.metadata reads it."""
    for entry in sys.path:
        try:
            candidates = sorted(Path(entry or ".").glob(f"{name}-*.dist-info"))
        except OSError:
            continue
        for directory in candidates:
            try:
                text = (directory / "METADATA").read_text(encoding="utf-8")
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("Version:"):
                    return line.partition(":")[2].strip()
                if not line:
                    break
    return None
