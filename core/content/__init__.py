"""Content: the content-addressable blob store and its resumable ingests.

This package owns the on-disk layer of containerd's content concept (blobs by digest and
in-progress writes by ref); the namespaced view with labels and leases is built on top of it by
the metadata layer.
"""

from core.content.store import (
    CHUNK_SIZE,
    BlobInfo,
    ContentStore,
    IngestStatus,
    Writer,
    digest_hex,
)

__all__ = ["CHUNK_SIZE", "BlobInfo", "ContentStore", "IngestStatus", "Writer", "digest_hex"]
