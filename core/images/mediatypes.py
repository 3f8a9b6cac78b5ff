"""OCI image-spec and Docker schema 2 media types, and how to tell them apart.

This module owns the media type strings an image graph is made of (indexes and manifest lists,
manifests, configs, layers in their compressions, foreign and non-distributable layers) and the
small predicates the pull pipeline, import/export and GC use to decide what a descriptor points
at. Comparisons ignore media type parameters (`; charset=...`) since registries add them.
"""

from __future__ import annotations

from core.errors import InvalidArgument

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_NONDIST = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_NONDIST_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_NONDIST_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"

DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_LAYER_FOREIGN = "application/vnd.docker.image.rootfs.foreign.diff.tar"
DOCKER_LAYER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
# Schema 1 is only named so it can be refused with a clear message; it is not supported.
DOCKER_SCHEMA1_MANIFEST = "application/vnd.docker.distribution.manifest.v1+prettyjws"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})

_LAYER_COMPRESSION: dict[str, str] = {
    OCI_LAYER: "",
    OCI_LAYER_GZIP: "gzip",
    OCI_LAYER_ZSTD: "zstd",
    OCI_LAYER_NONDIST: "",
    OCI_LAYER_NONDIST_GZIP: "gzip",
    OCI_LAYER_NONDIST_ZSTD: "zstd",
    DOCKER_LAYER: "",
    DOCKER_LAYER_GZIP: "gzip",
    DOCKER_LAYER_ZSTD: "zstd",
    DOCKER_LAYER_FOREIGN: "",
    DOCKER_LAYER_FOREIGN_GZIP: "gzip",
}
LAYER_TYPES = frozenset(_LAYER_COMPRESSION)
NON_DISTRIBUTABLE_TYPES = frozenset(
    {
        OCI_LAYER_NONDIST,
        OCI_LAYER_NONDIST_GZIP,
        OCI_LAYER_NONDIST_ZSTD,
        DOCKER_LAYER_FOREIGN,
        DOCKER_LAYER_FOREIGN_GZIP,
    }
)

# What a resolve asks for: every kind of root a pull can start from, index types first so a
# registry that negotiates by preference hands out the multi-platform form.
MANIFEST_ACCEPT = (DOCKER_MANIFEST_LIST, OCI_INDEX, DOCKER_MANIFEST, OCI_MANIFEST)


def base(media_type: str) -> str:
    """The media type without parameters, lowercased, as registries may send `; charset=`."""
    return media_type.split(";", 1)[0].strip().lower()


def is_index(media_type: str) -> bool:
    return base(media_type) in INDEX_TYPES


def is_manifest(media_type: str) -> bool:
    return base(media_type) in MANIFEST_TYPES


def is_config(media_type: str) -> bool:
    return base(media_type) in CONFIG_TYPES


def is_layer(media_type: str) -> bool:
    return base(media_type) in LAYER_TYPES


def is_non_distributable(media_type: str) -> bool:
    """Foreign (Docker) or non-distributable (OCI) layers, which registries may not serve."""
    return base(media_type) in NON_DISTRIBUTABLE_TYPES


def is_docker(media_type: str) -> bool:
    return base(media_type).startswith("application/vnd.docker.")


def layer_compression(media_type: str) -> str:
    """`gzip`, `zstd` or `` (plain tar) for a layer media type."""
    try:
        return _LAYER_COMPRESSION[base(media_type)]
    except KeyError:
        raise InvalidArgument(f"not a layer media type: {media_type!r}") from None
