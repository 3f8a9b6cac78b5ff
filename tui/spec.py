"""The OCI runtime spec the console sends when it runs an image, as `ctr run` builds one.

In containerd the client writes a container's spec (ctr does it from the image
config), so the console does too: containerd's Linux defaults (the usual
mounts, namespaces, capabilities, masked paths and device rules) with the
image's entrypoint, command, environment, working directory and numeric user.
The result goes into the container as JSON under the OCI spec type URL.
"""

from __future__ import annotations

import json
from typing import Any

from core.api.google.protobuf import Any as AnyMessage

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]  # fmt: skip
MASKED = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/proc/scsi",
]  # fmt: skip
READ_ONLY = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]  # fmt: skip


def _mount(destination: str, kind: str, source: str, *options: str) -> dict[str, Any]:
    return {"destination": destination, "type": kind, "source": source, "options": list(options)}


def _char_devices() -> list[dict[str, Any]]:
    # Deny all, then the devices a shell needs: null zero full random urandom,
    # tty console ptmx, and the pty slaves.
    allowed = [(1, m) for m in (3, 5, 7, 8, 9)] + [(5, m) for m in (0, 1, 2)]
    rules: list[dict[str, Any]] = [{"allow": False, "access": "rwm"}]
    rules += [
        {"allow": True, "type": "c", "major": major, "minor": minor, "access": "rwm"}
        for major, minor in allowed
    ]
    rules.append({"allow": True, "type": "c", "major": 136, "access": "rwm"})
    return rules


def default_mounts() -> list[dict[str, Any]]:
    nosuid = ("nosuid", "noexec", "nodev")
    tmpfs = ("nosuid", "strictatime", "mode=755", "size=65536k")
    pts = ("nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5")
    return [
        _mount("/proc", "proc", "proc", *nosuid),
        _mount("/dev", "tmpfs", "tmpfs", *tmpfs),
        _mount("/dev/pts", "devpts", "devpts", *pts),
        _mount("/dev/shm", "tmpfs", "shm", *nosuid, "mode=1777", "size=65536k"),
        _mount("/dev/mqueue", "mqueue", "mqueue", *nosuid),
        _mount("/sys", "sysfs", "sysfs", *nosuid, "ro"),
        _mount("/run", "tmpfs", "tmpfs", *tmpfs),
    ]


def _user(value: str) -> dict[str, int]:
    """A numeric `uid[:gid]`; names would need the image's /etc/passwd, so they run as root."""
    uid_text, _, gid_text = value.partition(":")
    uid = int(uid_text) if uid_text.isdigit() else 0
    gid = int(gid_text) if gid_text.isdigit() else uid if uid_text.isdigit() else 0
    return {"uid": uid, "gid": gid}


def from_image(namespace: str, container_id: str, image_config: dict[str, Any]) -> dict[str, Any]:
    config = image_config.get("config") or {}
    args = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    env = list(config.get("Env") or [PATH_ENV])
    caps = {key: list(CAPABILITIES) for key in ("bounding", "effective", "permitted")}
    return {
        "ociVersion": "1.0.2-dev",
        "process": {
            "user": _user(str(config.get("User") or "")),
            "args": args or ["/bin/sh"],
            "env": env,
            "cwd": config.get("WorkingDir") or "/",
            "capabilities": caps,
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs"},
        "hostname": container_id,
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": _char_devices()},
            "cgroupsPath": f"/{namespace}/{container_id}",
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "maskedPaths": list(MASKED),
            "readonlyPaths": list(READ_ONLY),
        },
    }


def pack(spec: dict[str, Any]) -> AnyMessage:
    return AnyMessage(type_url=SPEC_URL, value=json.dumps(spec).encode())
