"""The OCI runtime spec the console sends when it runs an image, as `ctr run` builds one.

In containerd the client writes a container's spec (ctr does it from the image
config), so the console does too, from `core.oci`'s containerd defaults with the
image's entrypoint, command, environment and working directory. The console has
no view of the image's /etc/passwd, so only a numeric user is honoured and a named
one runs as root; an image with no command runs a shell. The result goes into the
container as JSON under the OCI spec type URL.
"""

from __future__ import annotations

import json
from typing import Any

from core import oci
from core.api.google.protobuf import Any as AnyMessage

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"


def _user(value: str) -> dict[str, int]:
    uid_text, _, gid_text = value.partition(":")
    uid = int(uid_text) if uid_text.isdigit() else 0
    gid = int(gid_text) if gid_text.isdigit() else uid if uid_text.isdigit() else 0
    return {"uid": uid, "gid": gid}


def from_image(namespace: str, container_id: str, image_config: dict[str, Any]) -> dict[str, Any]:
    config = dict(image_config.get("config") or {})
    user = str(config.pop("User", "") or "")
    has_command = config.get("Entrypoint") or config.get("Cmd")
    spec = oci.from_image_config(
        namespace, container_id, config, args=None if has_command else ["/bin/sh"]
    )
    spec["process"]["user"] = _user(user)
    return spec


def pack(spec: dict[str, Any]) -> AnyMessage:
    return AnyMessage(type_url=SPEC_URL, value=json.dumps(spec).encode())
