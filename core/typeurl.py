"""Any type URLs as containerd writes them.

containerd packs protobuf messages under their bare full name
(`containerd.events.TaskExit`) and OCI JSON payloads under
`types.containerd.io/opencontainers/runtime-spec/1/<Type>`. betterproto2's own
`Any.pack` writes `type.googleapis.com/...`, which `ctr` cannot read, so every
Any the engine makes or reads goes through here.
"""

from __future__ import annotations

import betterproto2

import core.api.containerd.events
import core.api.containerd.runc.v1
import core.api.containerd.services.images.v1
import core.api.io.containerd.cgroups.v1
import core.api.io.containerd.cgroups.v2  # noqa: F401  (registers the message types)
from core.api.google.protobuf import Any
from core.api.message_pool import default_message_pool
from core.errors import InvalidArgument

OCI_PREFIX = "types.containerd.io/opencontainers/runtime-spec/1/"
SPEC_URL = OCI_PREFIX + "Spec"
PROCESS_URL = OCI_PREFIX + "Process"
RESOURCES_URL = OCI_PREFIX + "LinuxResources"

_by_name: dict[str, type[betterproto2.Message]] = {}


def _index() -> dict[str, type[betterproto2.Message]]:
    if len(_by_name) != len(default_message_pool.type_to_url):
        for cls, url in default_message_pool.type_to_url.items():
            _by_name[url.rsplit("/", 1)[-1]] = cls
    return _by_name


def name_of(message_type: type[betterproto2.Message]) -> str:
    return default_message_pool.type_to_url[message_type].rsplit("/", 1)[-1]


def pack(message: betterproto2.Message) -> Any:
    return Any(type_url=name_of(type(message)), value=bytes(message))


def message_type(type_url: str) -> type[betterproto2.Message] | None:
    """The message class for a URL, bare or prefixed; None for unknown or JSON types."""
    if type_url.startswith(OCI_PREFIX):
        return None
    return _index().get(type_url.rsplit("/", 1)[-1])


def unpack(value: Any) -> betterproto2.Message:
    cls = message_type(value.type_url)
    if cls is None:
        raise InvalidArgument(f"cannot decode Any of unknown type {value.type_url!r}")
    return cls.parse(value.value)
