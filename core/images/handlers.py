"""Walking an image graph: index → manifests → config and layers, and the labels that tie it.

This module owns how the JSON documents of an image are read (OCI and Docker schema 2 indexes,
manifests and configs), which children a document has and which of an index's manifests a
platform wants, the chain IDs of a layer stack, and the labels containerd puts on blobs so that
garbage collection can follow the graph (`containerd.io/gc.ref.content.m.<i>` on an index,
`...config` and `...l.<i>` on a manifest) and push can mount across repositories
(`containerd.io/distribution.source.<host>`). It is pure: documents come in as bytes, and a
walk asks its caller for the bytes of each node, so the pull pipeline, import, export, push and
the unit tests share it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.descriptor import Descriptor, validate_digest
from core.errors import FailedPrecondition, InvalidArgument, NotFound
from core.images import mediatypes
from core.images.platforms import Matcher, Platform
from core.images.reference import Reference
from core.jsondoc import load_object

GC_REF_PREFIX = "containerd.io/gc.ref.content."
GC_MANIFEST = GC_REF_PREFIX + "m."
GC_CONFIG = GC_REF_PREFIX + "config"
GC_LAYER = GC_REF_PREFIX + "l."
GC_SNAPSHOT = "containerd.io/gc.ref.snapshot."
UNCOMPRESSED = "containerd.io/uncompressed"
DISTRIBUTION_SOURCE = "containerd.io/distribution.source."
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Child:
    """A descriptor as a parent document lists it, with the platform an index gives it."""

    descriptor: Descriptor
    platform: Platform | None = None


@dataclass
class Manifest:
    config: Descriptor
    layers: list[Descriptor]


@dataclass
class ImageConfig:
    diff_ids: list[str]
    platform: Platform
    raw: dict[str, Any] = field(default_factory=dict)


def parse_json(data: bytes, what: str) -> dict[str, Any]:
    return load_object(data, what, FailedPrecondition)


def descriptor_from_json(obj: Any, what: str) -> Descriptor:
    """An OCI descriptor object (`mediaType`, `digest`, `size`, `annotations`)."""
    if not isinstance(obj, dict):
        raise FailedPrecondition(f"{what}: descriptor is not a JSON object")
    digest = obj.get("digest")
    size = obj.get("size")
    if not isinstance(digest, str):
        raise FailedPrecondition(f"{what}: descriptor has no digest")
    try:
        validate_digest(digest)
    except InvalidArgument as exc:
        raise FailedPrecondition(f"{what}: {exc.message}") from None
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise FailedPrecondition(f"{what}: descriptor {digest} has no valid size")
    annotations = obj.get("annotations") or {}
    if not isinstance(annotations, dict):
        raise FailedPrecondition(f"{what}: annotations of {digest} are not an object")
    return Descriptor(
        media_type=mediatypes.base(str(obj.get("mediaType", ""))),
        digest=digest,
        size=size,
        annotations={str(k): str(v) for k, v in annotations.items()},
    )


def descriptor_to_json(desc: Descriptor, platform: Platform | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": desc.media_type, "digest": desc.digest, "size": desc.size}
    if desc.annotations:
        out["annotations"] = dict(desc.annotations)
    if platform is not None:
        out["platform"] = platform.to_oci()
    return out


def media_type_of(desc: Descriptor, data: bytes) -> str:
    """The descriptor's media type, or the one the document declares or implies."""
    if desc.media_type:
        return desc.media_type
    doc = parse_json(data, f"document {desc.digest}")
    declared = mediatypes.base(str(doc.get("mediaType", "")))
    if declared:
        return declared
    if "manifests" in doc:
        return mediatypes.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mediatypes.OCI_MANIFEST
    return ""


def index_entries(data: bytes, what: str = "index") -> list[Child]:
    doc = parse_json(data, what)
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise FailedPrecondition(f"{what} has no manifests list")
    out = []
    for i, entry in enumerate(manifests):
        desc = descriptor_from_json(entry, f"{what} entry {i}")
        raw_platform = entry.get("platform")
        platform = Platform.from_oci(raw_platform) if isinstance(raw_platform, dict) else None
        out.append(Child(desc, platform))
    return out


def read_manifest(data: bytes, what: str = "manifest") -> Manifest:
    doc = parse_json(data, what)
    if doc.get("schemaVersion") == 1:
        raise InvalidArgument(f"{what} is Docker schema 1, which is not supported")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise FailedPrecondition(f"{what} has no layers list")
    return Manifest(
        config=descriptor_from_json(doc.get("config"), f"{what} config"),
        layers=[descriptor_from_json(layer, f"{what} layer {i}") for i, layer in enumerate(layers)],
    )


def read_config(data: bytes, what: str = "image config") -> ImageConfig:
    doc = parse_json(data, what)
    rootfs = doc.get("rootfs")
    diff_ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
        raise FailedPrecondition(f"{what} has no rootfs.diff_ids list")
    for d in diff_ids:
        try:
            validate_digest(d)
        except InvalidArgument as exc:
            raise FailedPrecondition(f"{what}: {exc.message}") from None
    return ImageConfig(diff_ids=list(diff_ids), platform=Platform.from_oci(doc), raw=doc)


def children(desc: Descriptor, data: bytes) -> list[Child]:
    """What a document points at: an index's manifests, a manifest's config then layers."""
    media_type = media_type_of(desc, data)
    if mediatypes.is_index(media_type):
        return index_entries(data, f"index {desc.digest}")
    if mediatypes.is_manifest(media_type):
        manifest = read_manifest(data, f"manifest {desc.digest}")
        return [Child(manifest.config), *(Child(layer) for layer in manifest.layers)]
    return []


def select_manifests(
    entries: list[Child], matcher: Matcher | None, limit: int = 0
) -> list[Descriptor]:
    """An index's entries the matcher wants, best first (all of them without a matcher).

    Entries without a platform match any request, as in containerd. NotFound if none does.
    """
    if matcher is None:
        chosen = [e.descriptor for e in entries]
    else:
        anywhere = [e for e in entries if e.platform is None]
        ranked = matcher.select(
            [e for e in entries if e.platform is not None],
            lambda e: e.platform,  # type: ignore[arg-type, return-value]
        )
        chosen = [e.descriptor for e in (*ranked, *anywhere)]
    if not chosen:
        wanted = ", ".join(str(p) for p in matcher.wanted[:1]) if matcher else "any"
        raise NotFound(f"no manifest for platform {wanted} in the image index")
    return chosen[:limit] if limit else chosen


def child_label_key(child: Descriptor) -> str:
    """The gc.ref key (before numbering) a parent uses for this child, as containerd's."""
    media_type = mediatypes.base(child.media_type)
    if mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type):
        return GC_MANIFEST
    if mediatypes.is_config(media_type):
        return GC_CONFIG
    return GC_LAYER


def gc_labels(kids: list[Child]) -> dict[str, str]:
    """The gc.ref labels a parent gets for its children: keys ending in '.' are numbered."""
    labels: dict[str, str] = {}
    counts: dict[str, int] = {}
    for child in kids:
        key = child_label_key(child.descriptor)
        n = counts.get(key, 0)
        counts[key] = n + 1
        if key.endswith(".") or n > 0:
            key = f"{key}{n}"
        labels[key] = child.descriptor.digest
    return labels


def chain_ids(diff_ids: list[str]) -> list[str]:
    """The chain ID of each layer prefix: the first diff ID, then sha256("<prev> <diff>")."""
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            raw = f"{out[-1]} {diff_id}".encode()
            out.append("sha256:" + hashlib.sha256(raw).hexdigest())
    return out


def source_label(ref: Reference) -> tuple[str, str]:
    """containerd's distribution-source key (host without port) and the repository path."""
    host = ref.domain
    if host.startswith("["):
        host = host[: host.index("]") + 1]
    elif ":" in host:
        host = host.rsplit(":", 1)[0]
    return DISTRIBUTION_SOURCE + host, ref.path


def merge_source(existing: str, repo: str) -> str:
    """Add a repository to a comma-separated distribution-source value."""
    repos = [r for r in existing.split(",") if r]
    if repo not in repos:
        repos.append(repo)
    return ",".join(sorted(repos))


def walk(
    root: Descriptor,
    read: Callable[[Descriptor], bytes],
    matcher: Matcher | None = None,
    *,
    limit: int = 0,
) -> Iterator[tuple[Descriptor, list[Child]]]:
    """Every document reachable from `root` with its children, parents first.

    `read` gives a document's bytes; layers and configs are yielded with no children and are
    never read. An index's manifests are narrowed by `matcher` (to `limit` of them).
    """
    stack = [root]
    seen: set[str] = set()
    while stack:
        desc = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        media_type = desc.media_type
        if not (mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type)):
            yield desc, []
            continue
        data = read(desc)
        kids = children(desc, data)
        yield desc, kids
        if mediatypes.is_index(media_type) and matcher is not None:
            follow = select_manifests(kids, matcher, limit)
        else:
            follow = [k.descriptor for k in kids]
        stack.extend(reversed(follow))


def label_updates(current: Mapping[str, str], wanted: Mapping[str, str]) -> dict[str, str]:
    """The labels in `wanted` whose value differs from `current` (what an update must set)."""
    return {k: v for k, v in wanted.items() if current.get(k) != v}
