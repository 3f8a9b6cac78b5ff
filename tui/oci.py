"""Reading an image the way `ctr` does: walking its blobs through the Content service.

From an image's target descriptor this module reads the index (if any), picks
the manifest for a platform, reads the config and lists the layers, and works
out the chain ID of the top layer (what a container's snapshot grows from).
The JSON parsing and the digest arithmetic are pure functions; only
`read_blob` and `walk` talk to the engine.
"""

from __future__ import annotations

import hashlib
import json
import platform as host
from dataclasses import dataclass, field
from typing import Any

from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.types import Descriptor
from core.client import Client

INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}
MANIFEST_TYPES = {
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
}
MAX_JSON_BLOB = 8 << 20
_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386"}


class ImageWalkError(Exception):
    """The image's blobs could not be read or parsed; the message says which and why."""


def host_platform() -> str:
    machine = host.machine()
    return f"linux/{_ARCH.get(machine, machine)}"


@dataclass(frozen=True)
class Layer:
    digest: str
    media_type: str
    size: int
    diff_id: str = ""


@dataclass
class ImageDetail:
    """What inspect shows and what `run` needs."""

    target: Descriptor
    index: dict[str, Any] | None = None
    manifest_descriptor: dict[str, Any] | None = None
    manifest: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
    layers: list[Layer] = field(default_factory=list)
    platforms: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes of the manifest, config and layers for the chosen platform, as ctr sums them."""
        total = self.target.size
        if self.manifest_descriptor is not None:
            total += int(self.manifest_descriptor.get("size", 0))
        if self.manifest is not None:
            total += int((self.manifest.get("config") or {}).get("size", 0))
        return total + sum(layer.size for layer in self.layers)

    @property
    def chain_id(self) -> str:
        return chain_id([layer.diff_id for layer in self.layers])


def chain_id(diff_ids: list[str]) -> str:
    """The snapshot name of the top layer: containerd's identity chain over diff IDs."""
    if not diff_ids:
        return ""
    current = diff_ids[0]
    for diff_id in diff_ids[1:]:
        current = "sha256:" + hashlib.sha256(f"{current} {diff_id}".encode()).hexdigest()
    return current


def platform_string(p: dict[str, Any]) -> str:
    parts = [p.get("os", ""), p.get("architecture", "")]
    if p.get("variant"):
        parts.append(p["variant"])
    return "/".join(parts)


def choose_manifest(index: dict[str, Any], wanted: str) -> dict[str, Any]:
    """The manifest descriptor of `index` for platform `wanted` (os/arch[/variant])."""
    manifests = [m for m in index.get("manifests", []) if m.get("mediaType") in MANIFEST_TYPES]
    if not manifests:
        raise ImageWalkError("the image index lists no manifests")
    for m in manifests:
        p = m.get("platform")
        if p and (platform_string(p) == wanted or platform_string(p).startswith(wanted + "/")):
            return m
    for m in manifests:
        if not m.get("platform"):
            return m
    have = ", ".join(platform_string(m["platform"]) for m in manifests if m.get("platform"))
    raise ImageWalkError(f"the image has no manifest for {wanted} (it has {have})")


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise ImageWalkError(f"the {what} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ImageWalkError(f"the {what} is not a JSON object")
    return value


async def read_blob(client: Client, digest: str, limit: int = MAX_JSON_BLOB) -> bytes:
    chunks: list[bytes] = []
    total = 0
    async for resp in client.content.read(content_api.ReadContentRequest(digest=digest)):
        chunks.append(resp.data)
        total += len(resp.data)
        if total > limit:
            raise ImageWalkError(f"blob {digest} is larger than {limit} bytes; not reading it")
    return b"".join(chunks)


async def walk(client: Client, target: Descriptor, wanted: str | None = None) -> ImageDetail:
    """Read index, manifest and config of an image for one platform (the host's by default)."""
    wanted = wanted or host_platform()
    detail = ImageDetail(target=target)
    root = parse_json(await read_blob(client, target.digest), "image's root blob")
    media_type = target.media_type or root.get("mediaType", "")
    if media_type in INDEX_TYPES or "manifests" in root:
        detail.index = root
        detail.platforms = [
            platform_string(m["platform"]) for m in root.get("manifests", []) if m.get("platform")
        ]
        chosen = choose_manifest(root, wanted)
        detail.manifest_descriptor = chosen
        detail.manifest = parse_json(await read_blob(client, chosen["digest"]), "manifest")
    else:
        detail.manifest = root
    config_desc = detail.manifest.get("config") or {}
    if config_desc.get("digest"):
        detail.config = parse_json(await read_blob(client, config_desc["digest"]), "config")
    diff_ids = list(((detail.config or {}).get("rootfs") or {}).get("diff_ids") or [])
    for i, layer in enumerate(detail.manifest.get("layers") or []):
        detail.layers.append(
            Layer(
                digest=layer.get("digest", ""),
                media_type=layer.get("mediaType", ""),
                size=int(layer.get("size", 0)),
                diff_id=diff_ids[i] if i < len(diff_ids) else "",
            )
        )
    if not detail.platforms and detail.config:
        detail.platforms = [platform_string(detail.config)]
    return detail
