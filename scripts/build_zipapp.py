"""Build `ctrdeck.pyz`: the console, the engine and every dependency in one file.

For nodes where nobody wants a virtualenv. The zipapp is made by shiv from a
staged site-packages: this checkout's `core` and `tui` packages, and the
installed files of every distribution `pyproject.toml` depends on (and theirs),
copied from the environment this script runs in, so the build needs no network.
shiv unpacks it once into `~/.shiv` (or `$SHIV_ROOT`) on first run, so native
extensions and the engine's monitor script are real files, and it puts that
directory on PYTHONPATH for the processes ctrdeck starts (the bundled engine,
the monitors). The zipapp runs with the Python version that built it (3.11 on
Debian 12: `python3 ctrdeck.pyz`).

    .venv/bin/python scripts/build_zipapp.py [-o dist/ctrdeck.pyz]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import shutil
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("core", "tui")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc")


def requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [Requirement(spec) for spec in project["dependencies"]]


def closure(roots: list[Requirement]) -> list[metadata.Distribution]:
    """Every installed distribution the roots need at run time, each once."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(roots)
    while pending:
        req = pending.pop()
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            raise SystemExit(f"build_zipapp: {req.name} is not installed here") from None
        if dist.version not in req.specifier:
            raise SystemExit(f"build_zipapp: {req.name} {dist.version} does not satisfy {req}")
        found[name] = dist
        pending += [Requirement(r) for r in dist.requires or []]
    return list(found.values())


def stage(site: Path) -> int:
    """Copy the project and its dependencies into `site`; the number of distributions."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, site / package, ignore=SKIP)
    dists = closure(requirements())
    for dist in dists:
        base = Path(str(dist.locate_file("")))
        for entry in dist.files or []:
            # Scripts and data outside site-packages (../../bin/…) stay out.
            if entry.parts[0] == ".." or "__pycache__" in entry.parts:
                continue
            source = base / entry
            if source.is_file():
                target = site / entry
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    return len(dists)


def build(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ctrdeck-zipapp-") as work:
        site = Path(work) / "site-packages"
        site.mkdir()
        count = stage(site)
        shiv = Path(sys.executable).with_name("shiv")
        subprocess.run(
            [
                str(shiv) if shiv.exists() else "shiv",
                "--site-packages",
                str(site),
                "--entry-point",
                "tui.cli:main",
                "--python",
                "/usr/bin/env python3",
                "--extend-pythonpath",
                "--compressed",
                "--reproducible",
                "--output-file",
                str(output),
            ],
            check=True,
        )
    print(f"built {output} ({output.stat().st_size / 2**20:.1f} MiB, {count} distributions)")
    return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "dist" / "ctrdeck.pyz")
    build(parser.parse_args().output.resolve())


if __name__ == "__main__":
    main()
