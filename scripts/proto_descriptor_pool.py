"""The protobuf descriptor pool the generated modules add their files to, built on first use.

Every generated module adds its .proto files' serialized descriptors to this pool
as it is imported, but only server reflection (grpcurl) and the `DESCRIPTOR`
properties ever read them. protobuf's runtime (upb, its descriptor pool, about
3 MiB of an engine at rest) is therefore imported, and the files added to a real
`DescriptorPool` in the order they came, only when something other than
`AddSerializedFile` is first asked of the pool. Each file added before then is
answered by a stand-in that becomes its `FileDescriptor` once the pool is built.

Copied into the generated tree by scripts/gen_proto.sh (from
scripts/proto_descriptor_pool.py) in place of the compiler's eager pool.
"""

from __future__ import annotations

from typing import Any


class _File:
    """A file added before the pool was built: its descriptor, looked up when first used."""

    __slots__ = ("_index", "_pool")

    def __init__(self, pool: LazyDescriptorPool, index: int) -> None:
        self._pool = pool
        self._index = index

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self._pool.built_file(self._index), name)


class LazyDescriptorPool:
    """protobuf's `DescriptorPool`, imported and filled when first read."""

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        self._built: list[Any] = []
        self._pool: Any = None

    def AddSerializedFile(self, serialized: bytes) -> Any:
        if self._pool is not None:
            return self._pool.AddSerializedFile(serialized)
        self._pending.append(serialized)
        return _File(self, len(self._pending) - 1)

    @property
    def pool(self) -> Any:
        """The real pool, holding every file added so far (dependencies came first)."""
        if self._pool is None:
            from google.protobuf import descriptor_pool

            pool = descriptor_pool.DescriptorPool()
            self._built = [pool.AddSerializedFile(data) for data in self._pending]
            self._pending = []
            self._pool = pool
        return self._pool

    def built_file(self, index: int) -> Any:
        self.pool  # noqa: B018  (builds it)
        return self._built[index]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.pool, name)


default_google_proto_descriptor_pool = LazyDescriptorPool()
