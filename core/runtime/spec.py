"""The OCI runtime spec a task runs with.

This module owns the `config.json` a bundle gets: the container's own spec
(the JSON `ctr` packs under `types.containerd.io/.../Spec`) when it has one,
otherwise containerd's default Linux spec filled from an image config
(`core.oci`). Either way it is then fitted to this
host and bundle: `root.path` points at the bundle's rootfs, the cgroups path
defaults to `/<namespace>/<id>`, and no rlimit asks for more than the engine's
own hard limit, because the runtimes cannot raise a hard limit here. It also
parses the OCI `Process` JSON of an exec and the `LinuxResources` JSON of an
update, rejecting malformed input as an invalid argument.
"""

from __future__ import annotations

import copy
import resource
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidArgument
from core.jsondoc import load_object
from core.oci import OCI_VERSION, cgroups_path


def parse_json(value: bytes, what: str) -> dict[str, Any]:
    return load_object(value, what, InvalidArgument)


def validate_process(process: Any, what: str) -> None:
    if not isinstance(process, dict):
        raise InvalidArgument(f"{what}: process must be an object")
    args = process.get("args")
    if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
        raise InvalidArgument(f"{what}: process.args must be a non-empty list of strings")
    cwd = process.get("cwd", "/")
    if not isinstance(cwd, str) or not cwd.startswith("/"):
        raise InvalidArgument(f"{what}: process.cwd must be an absolute path, not {cwd!r}")
    env = process.get("env", [])
    if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
        raise InvalidArgument(f"{what}: process.env must be a list of strings")


def _clamp_rlimits(process: dict[str, Any]) -> None:
    for rl in process.get("rlimits") or []:
        kind = getattr(resource, str(rl.get("type", "")), None)
        if not isinstance(kind, int):
            continue
        _, host_hard = resource.getrlimit(kind)
        if host_hard == resource.RLIM_INFINITY:
            continue
        rl["hard"] = min(int(rl.get("hard", host_hard)), host_hard)
        rl["soft"] = min(int(rl.get("soft", rl["hard"])), rl["hard"])


def fit(spec: dict[str, Any], namespace: str, container_id: str, rootfs: Path) -> dict[str, Any]:
    """The spec as the runtime will get it in this bundle on this host."""
    fitted = copy.deepcopy(spec)
    process = fitted.get("process")
    validate_process(process, f'container "{container_id}" spec')
    fitted.setdefault("ociVersion", OCI_VERSION)
    root = fitted.setdefault("root", {})
    if not isinstance(root, dict):
        raise InvalidArgument(f'container "{container_id}" spec: root must be an object')
    root["path"] = str(rootfs)
    linux = fitted.setdefault("linux", {})
    if not isinstance(linux, dict):
        raise InvalidArgument(f'container "{container_id}" spec: linux must be an object')
    if not linux.get("cgroupsPath"):
        linux["cgroupsPath"] = cgroups_path(namespace, container_id)
    _clamp_rlimits(process)
    return fitted


def fit_process(process: dict[str, Any]) -> dict[str, Any]:
    fitted = copy.deepcopy(process)
    _clamp_rlimits(fitted)
    return fitted


def terminal(spec: Mapping[str, Any]) -> bool:
    return bool((spec.get("process") or {}).get("terminal"))


def has_network_namespace(spec: Mapping[str, Any]) -> bool:
    namespaces = (spec.get("linux") or {}).get("namespaces") or []
    return any(isinstance(n, dict) and n.get("type") == "network" for n in namespaces)
