"""The files a pod's containers share: /etc/hosts, /etc/hostname and /etc/resolv.conf.

Written once per pod into the pod's directory under the engine's root and
bind-mounted into the pause container and every container of the pod, as
containerd does. resolv.conf comes from the pod's DNSConfig, or the host's
own when the pod gives none (or uses the host's network).
"""

from __future__ import annotations

import os
from pathlib import Path

from core.api.runtime import v1 as cri

HOSTS = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
HOST_RESOLV = Path("/etc/resolv.conf")


def resolv_conf(dns: cri.DnsConfig | None) -> str:
    if dns is None or not (dns.servers or dns.searches or dns.options):
        try:
            return HOST_RESOLV.read_text()
        except OSError:
            return ""
    lines = [f"nameserver {s}" for s in dns.servers]
    if dns.searches:
        lines.append("search " + " ".join(dns.searches))
    if dns.options:
        lines.append("options " + " ".join(dns.options))
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.chmod(tmp, 0o644)
    tmp.replace(path)


def write_pod_files(directory: Path, hostname: str, dns: cri.DnsConfig | None) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o711)
    _write(directory / "hosts", HOSTS)
    _write(directory / "hostname", hostname + "\n")
    _write(directory / "resolv.conf", resolv_conf(dns))


def mounts(directory: Path, readonly: bool = False) -> list[dict[str, object]]:
    """The OCI mounts of the pod's files, for the pause container and each container."""
    options = ["rbind", "rprivate", "ro" if readonly else "rw"]
    return [
        {"destination": f"/etc/{name}", "type": "bind", "source": str(directory / name),
         "options": list(options)}
        for name in ("hosts", "hostname", "resolv.conf")
    ]  # fmt: skip
