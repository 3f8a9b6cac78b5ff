"""Conversions between API messages and the engine's own records.

Timestamps are stored as microseconds since the epoch; Go's zero time
(0001-01-01), which `ctr` sends for "unset", reads as unset.
"""

from __future__ import annotations

from datetime import UTC, datetime

from core.api.containerd import types
from core.api.google.protobuf import Any
from core.descriptor import Descriptor
from core.metadata.containers import AnyValue
from core.metadata.db import to_datetime

GO_ZERO = datetime(1, 1, 1, tzinfo=UTC)


def ts(us: int) -> datetime:
    return to_datetime(us) if us else GO_ZERO


def descriptor_in(d: types.Descriptor | None) -> Descriptor:
    if d is None:
        return Descriptor("", "", 0)
    return Descriptor(d.media_type, d.digest, d.size, dict(d.annotations))


def descriptor_out(d: Descriptor) -> types.Descriptor:
    return types.Descriptor(
        media_type=d.media_type, digest=d.digest, size=d.size, annotations=dict(d.annotations)
    )


def any_in(a: Any | None) -> AnyValue | None:
    return None if a is None else AnyValue(a.type_url, bytes(a.value))


def any_out(a: AnyValue | None) -> Any | None:
    return None if a is None else Any(type_url=a.type_url, value=a.value)
