"""The OCI runtime spec a task runs with.

This module owns the `config.json` a bundle gets: the container's own spec
(the JSON `ctr` packs under `types.containerd.io/.../Spec`) when it has one,
otherwise containerd's default Linux spec filled from an image config
(Entrypoint, Cmd, Env, WorkingDir, User). Either way it is then fitted to this
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

OCI_VERSION = "1.0.2-dev"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# containerd's default capability set (the Docker defaults).
DEFAULT_CAPS = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
]

MASKED_PATHS = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
]

READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]

NAMESPACES = ["pid", "ipc", "uts", "mount", "network"]


def _device_rule(major: int | None, minor: int | None) -> dict[str, Any]:
    rule: dict[str, Any] = {"allow": True, "type": "c", "access": "rwm"}
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


# Deny everything, then allow the character devices every container needs:
# null, zero, full, random, urandom, tty, console, ptmx and the pty slaves.
DEVICE_RULES: list[dict[str, Any]] = [
    {"allow": False, "access": "rwm"},
    *(_device_rule(1, minor) for minor in (3, 5, 7, 8, 9)),
    *(_device_rule(5, minor) for minor in (0, 1, 2)),
    _device_rule(136, None),
]


def default_mounts() -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
    ]  # fmt: skip


def cgroups_path(namespace: str, container_id: str) -> str:
    return f"/{namespace}/{container_id}"


def default_spec(namespace: str, container_id: str) -> dict[str, Any]:
    """containerd's default Linux spec for a container, running `sh` as root."""
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "user": {"uid": 0, "gid": 0},
            "args": [],
            "env": [DEFAULT_PATH],
            "cwd": "/",
            "capabilities": {
                "bounding": list(DEFAULT_CAPS),
                "effective": list(DEFAULT_CAPS),
                "permitted": list(DEFAULT_CAPS),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "hostname": container_id,
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": copy.deepcopy(DEVICE_RULES)},
            "cgroupsPath": cgroups_path(namespace, container_id),
            "namespaces": [{"type": t} for t in NAMESPACES],
            "maskedPaths": list(MASKED_PATHS),
            "readonlyPaths": list(READONLY_PATHS),
        },
    }


def _lookup(path: Path, name: str, field: int) -> list[str] | None:
    """The colon-separated entry of /etc/passwd or /etc/group whose `field` is `name`."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":")
        if len(parts) > 3 and parts[field] == name:
            return parts
    return None


def resolve_user(user: str, rootfs: Path | None) -> dict[str, Any]:
    """An image config's `User` ("name", "uid", "uid:gid", "name:group") as an OCI user.

    Names are looked up in the rootfs's /etc/passwd and /etc/group, as
    containerd does; a name that is not there is an invalid argument.
    """
    name, _, group = user.partition(":")
    uid = gid = 0
    etc = rootfs / "etc" if rootfs is not None else None
    if name.isdigit():
        uid = int(name)
        entry = _lookup(etc / "passwd", name, 2) if etc is not None else None
        gid = int(entry[3]) if entry else 0
    elif name:
        entry = _lookup(etc / "passwd", name, 0) if etc is not None else None
        if entry is None:
            raise InvalidArgument(f'no user "{name}" in the image\'s /etc/passwd')
        uid, gid = int(entry[2]), int(entry[3])
    if group.isdigit():
        gid = int(group)
    elif group:
        entry = _lookup(etc / "group", group, 0) if etc is not None else None
        if entry is None:
            raise InvalidArgument(f'no group "{group}" in the image\'s /etc/group')
        gid = int(entry[2])
    return {"uid": uid, "gid": gid, "additionalGids": [gid]}


def from_image_config(
    namespace: str,
    container_id: str,
    image_config: Mapping[str, Any],
    rootfs: Path | None = None,
    args: list[str] | None = None,
) -> dict[str, Any]:
    """containerd's default spec with an image's `config` section applied.

    `image_config` is the `config` object of an OCI image config blob. `args`
    replaces the image's Cmd, keeping its Entrypoint, as `ctr run IMG ID CMD`
    does.
    """
    spec = default_spec(namespace, container_id)
    process = spec["process"]
    env = [str(e) for e in image_config.get("Env") or []]
    if not any(e.startswith("PATH=") for e in env):
        env.insert(0, DEFAULT_PATH)
    process["env"] = env
    entrypoint = [str(a) for a in image_config.get("Entrypoint") or []]
    cmd = args if args else [str(a) for a in image_config.get("Cmd") or []]
    process["args"] = entrypoint + cmd
    if not process["args"]:
        raise InvalidArgument(f'container "{container_id}": the image gives no command to run')
    process["cwd"] = image_config.get("WorkingDir") or "/"
    if image_config.get("User"):
        process["user"] = resolve_user(str(image_config["User"]), rootfs)
    return spec


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
