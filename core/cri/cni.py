"""CNI: loading network conf lists and running their plugins, per the CNI spec.

Plugins are executables fed the network config as JSON on stdin, with
`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_PATH` (and
`CNI_ARGS`) in the environment; no library is needed to call them. A conf
list's plugins run in order for ADD, each given the previous result as
`prevResult`, and in reverse for DEL. Every plugin run has a timeout: a plugin
that hangs is killed and the call fails. The loopback plugin is run first on
ADD (containerd does the same), so `lo` is up in every pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.cri.config import CniConfig
from core.errors import CtrdeckError, DeadlineExceeded, FailedPrecondition, Internal

IFNAME = "eth0"
LOOPBACK_CONF: dict[str, Any] = {"cniVersion": "0.4.0", "name": "cni-loopback", "type": "loopback"}


class CniError(Internal):
    """A plugin failed; its own message (from its JSON error on stdout) is kept."""


@dataclass
class NetworkList:
    """One conf list: its name, CNI version and the plugin configs in order."""

    name: str
    cni_version: str
    plugins: list[dict[str, Any]]
    source: str


@dataclass
class Attachment:
    """What a pod's network ADD gave, kept so DEL can be run with the same inputs."""

    network: str
    ip: str = ""
    additional_ips: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)


def _read_conf(path: Path) -> NetworkList | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict):
        return None
    if path.suffix == ".conflist":
        plugins = doc.get("plugins")
        if not isinstance(plugins, list) or not plugins:
            return None
    elif "type" in doc:
        plugins = [doc]
    else:
        return None
    if not all(isinstance(p, dict) and isinstance(p.get("type"), str) for p in plugins):
        return None
    return NetworkList(
        name=str(doc.get("name", "")),
        cni_version=str(doc.get("cniVersion", "0.4.0")),
        plugins=plugins,
        source=str(path),
    )


def load(conf: CniConfig) -> list[NetworkList]:
    """The conf lists in `conf_dir`, in file-name order, at most `max_conf_num` of them."""
    directory = Path(conf.conf_dir)
    try:
        names = sorted(
            p for p in directory.iterdir() if p.suffix in (".conf", ".conflist", ".json")
        )
    except OSError:
        return []
    found = [n for n in (_read_conf(p) for p in names) if n is not None]
    return found[: max(conf.max_conf_num, 1)]


def not_ready_reason(conf: CniConfig) -> str:
    """Why pod networking cannot work, or "" when a conf list loads and its plugins exist."""
    networks = load(conf)
    if not networks:
        return f"no network config found in {conf.conf_dir}"
    for network in networks:
        for plugin in network.plugins:
            if not (Path(conf.bin_dir) / plugin["type"]).is_file():
                return f'CNI plugin "{plugin["type"]}" not found in {conf.bin_dir}'
    return ""


class Cni:
    def __init__(self, conf: CniConfig) -> None:
        self.conf = conf

    async def _exec(
        self, plugin: dict[str, Any], command: str, sandbox_id: str, netns: str,
        ifname: str, args: str,
    ) -> dict[str, Any]:  # fmt: skip
        binary = Path(self.conf.bin_dir) / plugin["type"]
        if not binary.is_file():
            raise FailedPrecondition(f'CNI plugin "{plugin["type"]}" not found in {binary.parent}')
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": sandbox_id,
            "CNI_NETNS": netns,
            "CNI_IFNAME": ifname,
            "CNI_PATH": self.conf.bin_dir,
            "CNI_ARGS": args,
        }
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(
                proc.communicate(json.dumps(plugin).encode()), self.conf.plugin_timeout
            )
        except (TimeoutError, asyncio.CancelledError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise DeadlineExceeded(
                f'CNI plugin "{plugin["type"]}" {command} did not finish within '
                f"{self.conf.plugin_timeout:g} seconds and was killed"
            ) from None
        if proc.returncode != 0:
            detail = err.decode(errors="replace").strip()
            with contextlib.suppress(ValueError):
                doc = json.loads(out)
                detail = f"{doc.get('msg', '')} {doc.get('details', '')}".strip() or detail
            raise CniError(
                f'CNI plugin "{plugin["type"]}" {command} failed: '
                f"{detail or f'exit status {proc.returncode}'}"
            )
        if not out.strip():
            return {}
        try:
            result = json.loads(out)
        except ValueError:
            raise CniError(
                f'CNI plugin "{plugin["type"]}" wrote a result that is not JSON'
            ) from None
        return result if isinstance(result, dict) else {}

    @staticmethod
    def _config(
        network: NetworkList, plugin: dict[str, Any], prev: dict[str, Any] | None,
        runtime_config: dict[str, Any],
    ) -> dict[str, Any]:  # fmt: skip
        conf = dict(plugin, name=network.name, cniVersion=network.cni_version)
        if prev is not None:
            conf["prevResult"] = prev
        caps = plugin.get("capabilities") or {}
        wanted = {k: v for k, v in runtime_config.items() if caps.get(k)}
        if wanted:
            conf["runtimeConfig"] = wanted
        return conf

    async def add(
        self, sandbox_id: str, netns: str, args: str, runtime_config: dict[str, Any]
    ) -> Attachment:
        networks = load(self.conf)
        if not networks:
            raise FailedPrecondition(
                f"cni config not initialized: no network config found in {self.conf.conf_dir}"
            )
        network = networks[0]
        lo = dict(LOOPBACK_CONF)
        await self._exec(lo, "ADD", sandbox_id, netns, "lo", args)
        prev: dict[str, Any] | None = None
        done: list[dict[str, Any]] = []
        try:
            for plugin in network.plugins:
                conf = self._config(network, plugin, prev, runtime_config)
                done.append(conf)
                prev = await self._exec(conf, "ADD", sandbox_id, netns, IFNAME, args) or prev
        except BaseException:
            # Nothing half-made stays behind: what was added is deleted again.
            with contextlib.suppress(Exception):
                await self._delete(network, sandbox_id, netns, args, runtime_config, prev)
            raise
        ips = [str(i.get("address", "")).split("/")[0] for i in (prev or {}).get("ips", [])]
        ips = [ip for ip in ips if ip]
        return Attachment(
            network=network.name,
            ip=ips[0] if ips else "",
            additional_ips=ips[1:],
            result=prev or {},
        )

    async def _delete(
        self, network: NetworkList, sandbox_id: str, netns: str, args: str,
        runtime_config: dict[str, Any], prev: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        # Every plugin gets its DEL even when one before it fails (or hangs), so one
        # broken plugin does not leak what the others hold; the first error is raised.
        first: CtrdeckError | None = None
        for plugin in reversed(network.plugins):
            conf = self._config(network, plugin, prev, runtime_config)
            try:
                await self._exec(conf, "DEL", sandbox_id, netns, IFNAME, args)
            except CtrdeckError as exc:
                first = first or exc
        if first is not None:
            raise first

    async def delete(
        self, sandbox_id: str, netns: str, args: str, runtime_config: dict[str, Any],
        attachment: Attachment,
    ) -> None:  # fmt: skip
        """DEL on the network the pod was added to; a netns that is gone is fine (spec)."""
        network = next((n for n in load(self.conf) if n.name == attachment.network), None)
        if network is None:
            return
        await self._delete(
            network, sandbox_id, netns, args, runtime_config, attachment.result or None
        )
