"""The CRI plugin's keys of `[plugins."io.containerd.grpc.v1.cri"]`, with containerd 1.6's defaults.

`core.config` keeps every plugin table it does not model as read; this module
reads the CRI keys out of it (the runtimes, snapshotter and registry keys are
already typed there), checks each one's type, and fills in containerd's
default for a key that is absent, so one `config.toml` serves both engines.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.config import CRI_PLUGIN, Config
from core.errors import InvalidArgument

DEFAULT_SANDBOX_IMAGE = "registry.k8s.io/pause:3.6"
DEFAULT_CNI_BIN_DIR = "/opt/cni/bin"
DEFAULT_CNI_CONF_DIR = "/etc/cni/net.d"
DEFAULT_NETNS_DIR = "/var/run/netns"
CNI_PLUGIN_TIMEOUT = 30.0
"""Seconds a CNI plugin may run before it is killed and the call fails (ours, not containerd's)."""


@dataclass(frozen=True)
class CniConfig:
    bin_dir: str = DEFAULT_CNI_BIN_DIR
    conf_dir: str = DEFAULT_CNI_CONF_DIR
    max_conf_num: int = 1
    plugin_timeout: float = CNI_PLUGIN_TIMEOUT


@dataclass(frozen=True)
class CriConfig:
    sandbox_image: str = DEFAULT_SANDBOX_IMAGE
    stream_server_address: str = "127.0.0.1"
    stream_server_port: str = "0"
    enable_unprivileged_ports: bool = False
    enable_unprivileged_icmp: bool = False
    restrict_oom_score_adj: bool = False
    netns_mounts_under_state_dir: bool = False
    cni: CniConfig = CniConfig()
    snapshotter: str = "overlayfs"
    default_runtime: str = "runc"


def _get(table: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    # bool is an int in Python; an integer key must not take true/false.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidArgument(
            f'plugins."{CRI_PLUGIN}".{key}: expected {kind.__name__}, got {value!r}'
        )
    return value


def from_config(config: Config) -> CriConfig:
    """The CRI settings of `config`; InvalidArgument names a key of the wrong type."""
    table = config.plugins.get(CRI_PLUGIN, {})
    cni = table.get("cni", {})
    if not isinstance(cni, Mapping):
        raise InvalidArgument(f'plugins."{CRI_PLUGIN}".cni: expected a table')
    port = table.get("stream_server_port", "0")
    if isinstance(port, int) and not isinstance(port, bool):
        port = str(port)
    if not isinstance(port, str) or not port.isdigit():
        raise InvalidArgument(
            f'plugins."{CRI_PLUGIN}".stream_server_port: expected a port number, got {port!r}'
        )
    timeout = cni.get("plugin_timeout", CNI_PLUGIN_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise InvalidArgument(
            f'plugins."{CRI_PLUGIN}".cni.plugin_timeout: expected seconds > 0, got {timeout!r}'
        )
    return CriConfig(
        sandbox_image=_get(table, "sandbox_image", str, DEFAULT_SANDBOX_IMAGE),
        stream_server_address=_get(table, "stream_server_address", str, "127.0.0.1"),
        stream_server_port=port,
        enable_unprivileged_ports=_get(table, "enable_unprivileged_ports", bool, False),
        enable_unprivileged_icmp=_get(table, "enable_unprivileged_icmp", bool, False),
        restrict_oom_score_adj=_get(table, "restrict_oom_score_adj", bool, False),
        netns_mounts_under_state_dir=_get(table, "netns_mounts_under_state_dir", bool, False),
        cni=CniConfig(
            bin_dir=_get(cni, "bin_dir", str, DEFAULT_CNI_BIN_DIR),
            conf_dir=_get(cni, "conf_dir", str, DEFAULT_CNI_CONF_DIR),
            max_conf_num=_get(cni, "max_conf_num", int, 1),
            plugin_timeout=float(timeout),
        ),
        snapshotter=config.default_snapshotter,
        default_runtime=config.default_runtime,
    )


def netns_dir(cri: CriConfig, state: Path) -> Path:
    """Where pod network namespaces are bind-mounted."""
    if cri.netns_mounts_under_state_dir:
        return state / "netns"
    return Path(DEFAULT_NETNS_DIR)
