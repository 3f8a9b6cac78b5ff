"""A Debian base image as a user would build it: `mmdebstrap`, split into gzip layers, cached.

`mmdebstrap --variant=minbase bookworm` makes the root filesystem (about 8,700 entries,
mostly small files, as in Debian's own base image) once into a cache directory; it is then
split by path into four layers (everything outside `usr/share` and `var/lib`, then
`usr/share/[a-l]*`, `usr/share/[m-z]*` and `var/lib`), each carrying the directories above
its entries, compressed with `gzip -6 -n`, and written as an OCI image layout there. Later
runs reuse the layout. `skopeo copy oci:<layout>:latest docker://...` pushes it.

    .venv/bin/python -m bench.osimage [--cache DIR]   # build (or find) and print the layout
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path

SUITE = "bookworm"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ctrdeck-bench"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYERS = 4


@dataclass(frozen=True)
class OsImage:
    """The layout and, for the tar baseline, its layer blobs in order."""

    layout: Path
    blobs: list[Path]
    entries: int

    @property
    def compressed(self) -> int:
        return sum(b.stat().st_size for b in self.blobs)


def _layer_of(name: str) -> int:
    path = name.removeprefix("./")
    if path.startswith("usr/share/"):
        rest = path[len("usr/share/") :]
        return 1 if rest[:1] <= "l" else 2
    if path.startswith("var/lib/"):
        return 3
    return 0


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def _split(rootfs: Path, work: Path) -> tuple[list[Path], int]:
    """The rootfs tarball as LAYERS plain tars, each with its entries' parent directories."""
    paths = [work / f"layer{i}.tar" for i in range(LAYERS)]
    dirs: dict[str, tarfile.TarInfo] = {}
    written: list[set[str]] = [set() for _ in range(LAYERS)]
    entries = 0
    with contextlib.ExitStack() as stack:
        outs = [stack.enter_context(tarfile.open(p, "w", format=tarfile.PAX_FORMAT)) for p in paths]
        src = stack.enter_context(tarfile.open(rootfs, "r:"))
        for member in src:
            entries += 1
            name = member.name.removeprefix("./").rstrip("/")
            if member.isdir():
                dirs[name] = member
            i = _layer_of(member.name) if name else 0
            parts = name.split("/")
            for depth in range(1, len(parts)):
                parent = "/".join(parts[:depth])
                if parent not in written[i] and parent in dirs:
                    outs[i].addfile(dirs[parent])
                    written[i].add(parent)
            if name in written[i]:
                continue
            outs[i].addfile(member, src.extractfile(member) if member.isreg() else None)
            written[i].add(name)
    return paths, entries


def build(cache: Path = DEFAULT_CACHE) -> OsImage:
    """The cached layout, made first if missing (needs root, mmdebstrap and a Debian mirror)."""
    layout = cache / f"debian-{SUITE}-minbase"
    done = layout / "bench-layers.json"
    if done.exists():
        meta = json.loads(done.read_text())
        return OsImage(layout, [layout / p for p in meta["blobs"]], meta["entries"])
    if shutil.which("mmdebstrap") is None:
        raise SystemExit("mmdebstrap is needed for the OS image (scripts/setup.sh installs it)")
    shutil.rmtree(layout, ignore_errors=True)
    work = cache / "work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    rootfs = work / "rootfs.tar"
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", "--mode=root", SUITE, str(rootfs)],
        check=True,
        env=dict(os.environ, SOURCE_DATE_EPOCH="1700000000"),
    )
    tars, entries = _split(rootfs, work)
    blobs_dir = layout / "blobs" / "sha256"
    blobs_dir.mkdir(parents=True)
    layers, diff_ids, blobs = [], [], []
    for tar in tars:
        diff_ids.append(_sha256(tar))
        gz = tar.with_suffix(".tar.gz")
        with gz.open("wb") as out:
            subprocess.run(["gzip", "-6", "-n", "-c", str(tar)], stdout=out, check=True)
        digest = _sha256(gz)
        blob = blobs_dir / digest.removeprefix("sha256:")
        gz.rename(blob)
        blobs.append(blob)
        layers.append({"mediaType": OCI_LAYER_GZIP, "digest": digest, "size": blob.stat().st_size})
    config = _write_blob(
        blobs_dir,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/bash"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        },
    )
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = _write_blob(
        blobs_dir,
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config,
            "layers": layers,
        },
    )
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    rel = [str(b.relative_to(layout)) for b in blobs]
    done.write_text(json.dumps({"blobs": rel, "entries": entries}))
    shutil.rmtree(work, ignore_errors=True)
    return OsImage(layout, blobs, entries)


def _write_blob(blobs_dir: Path, doc: dict[str, object]) -> dict[str, object]:
    data = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (blobs_dir / digest.removeprefix("sha256:")).write_bytes(data)
    return {"digest": digest, "size": len(data)}


def push(image: OsImage, registry_host: str, repo: str) -> str:
    """Push the layout to a plain-HTTP registry with skopeo, digests kept; the reference."""
    ref = f"{registry_host}/{repo}:latest"
    subprocess.run(
        ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false",
         "--preserve-digests", f"oci:{image.layout}:latest", f"docker://{ref}"],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return ref


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    image = build(parser.parse_args().cache)
    print(f"{image.layout}: {image.entries} entries, {image.compressed / 1e6:.1f} MB compressed")
    for blob in image.blobs:
        print(f"  {blob.name} {blob.stat().st_size}")


if __name__ == "__main__":
    main()
