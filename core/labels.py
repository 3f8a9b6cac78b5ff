"""Validation of object labels.

This module owns containerd's ``labels`` package rule, enforced on the labels of
namespaces, images, containers, content, snapshots and leases: each label's key
plus value may be at most :data:`MAX_SIZE` bytes (UTF-8). Keys and values are
otherwise unrestricted. Violations raise :class:`~core.errors.InvalidArgument`
with containerd's message, which names only the key's first 10 characters so a
huge key does not flood the error.
"""

from __future__ import annotations

from collections.abc import Mapping

from core.errors import InvalidArgument

MAX_SIZE = 4096


def validate(key: str, value: str) -> None:
    """Raise InvalidArgument if the label's key and value exceed MAX_SIZE bytes together."""
    size = len(key.encode("utf-8", "surrogatepass")) + len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_SIZE:
        raise InvalidArgument(
            f"label key and value greater than maximum size ({MAX_SIZE} bytes), key: {key[:10]}"
        )


def validate_all(labels: Mapping[str, str]) -> None:
    """Validate every label; the first offending one raises."""
    for key, value in labels.items():
        validate(key, value)
