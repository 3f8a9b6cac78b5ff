"""containerd's default OCI runtime spec, and an image config applied to it.

This is what a client writes into a container (as `ctr run` does with
containerd's `oci` package) and what the engine falls back to when a task's
container carries no spec: containerd's Linux defaults (mounts, namespaces,
capabilities, masked and read-only paths, device rules, the `/<namespace>/<id>`
cgroups path) with an image's Entrypoint, Cmd, Env, WorkingDir and User. It is
pure data and holds no engine state, so the console and the runtime share it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidArgument

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
