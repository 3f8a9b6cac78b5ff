"""OCI specs for pods and their containers, built from CRI configs as containerd builds them.

The pause container holds the pod's network (the engine's bind-mounted
netns, or the host's), IPC and UTS namespaces, and its PID namespace when the
pod asks for `POD`; each container joins them through the pause process's
`/proc/<pid>/ns/*`. Security context fields map onto the spec one by one
(user, groups, capabilities, privileged, masked and read-only paths, read-only
rootfs, no-new-privileges, seccomp), as do resources. An `oom_score_adj` below
the engine's own is raised to it when `restrict_oom_score_adj` is set, or when
the engine could not lower a score anyway (no CAP_SYS_RESOURCE), since runc
would fail.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

from core import oci
from core.api.runtime import v1 as cri
from core.cri import seccomp
from core.errors import InvalidArgument

SANDBOX_OOM_SCORE_ADJ = -998
CAP_SYS_RESOURCE = 24
CAPS_BY_NUMBER = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)  # fmt: skip
PROPAGATION = {
    cri.MountPropagation.PROPAGATION_PRIVATE: "rprivate",
    cri.MountPropagation.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    cri.MountPropagation.PROPAGATION_BIDIRECTIONAL: "rshared",
}


def own_oom_score_adj() -> int:
    try:
        return int(Path("/proc/self/oom_score_adj").read_text())
    except (OSError, ValueError):
        return 0


def can_lower_oom_score() -> bool:
    return bool(_own_caps("CapEff") >> CAP_SYS_RESOURCE & 1)


def _own_caps(field: str) -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1], 16)
    except (OSError, ValueError):
        pass
    return 0


def all_caps() -> list[str]:
    """ "All capabilities", as containerd means it: every one the engine itself holds.

    A runtime cannot grant more than it has; on a host that runs the engine
    without some (CAP_SYS_RESOURCE here), asking for them would fail the start.
    """
    held = _own_caps("CapBnd")
    return [name for i, name in enumerate(CAPS_BY_NUMBER) if held >> i & 1]


def oom_score_adj(wanted: int, restrict: bool) -> int:
    own = own_oom_score_adj()
    if wanted < own and (restrict or not can_lower_oom_score()):
        return own
    return wanted


def _namespaces(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return spec["linux"]["namespaces"]


def _set_namespace(spec: dict[str, Any], kind: str, path: str | None) -> None:
    """Give the spec its own `kind` namespace (path None) or join the one at `path`."""
    entries = [n for n in _namespaces(spec) if n["type"] != kind]
    entries.append({"type": kind, **({"path": path} if path else {})})
    spec["linux"]["namespaces"] = entries


def _drop_namespace(spec: dict[str, Any], kind: str) -> None:
    spec["linux"]["namespaces"] = [n for n in _namespaces(spec) if n["type"] != kind]


def _ns_options(sc: Any) -> cri.NamespaceOption:
    return (sc.namespace_options if sc is not None else None) or cri.NamespaceOption()


def _cap(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else f"CAP_{name}"


def _capabilities(process: dict[str, Any], caps: cri.Capability | None, privileged: bool) -> None:
    current = list(process["capabilities"]["bounding"])
    if privileged:
        current = all_caps()
    elif caps is not None:
        add = [_cap(c) for c in caps.add_capabilities]
        drop = [_cap(c) for c in caps.drop_capabilities]
        if "CAP_ALL" in add:
            current = all_caps()
        if "CAP_ALL" in drop:
            current = []
        current = [c for c in current if c not in drop]
        current += [c for c in add if c != "CAP_ALL" and c not in current]
    process["capabilities"] = {k: list(current) for k in ("bounding", "effective", "permitted")}


def _resources(
    spec: dict[str, Any], res: cri.LinuxContainerResources | None, restrict: bool
) -> None:
    if res is None:
        return
    spec["linux"]["resources"].update(resources_json(res))
    if res.oom_score_adj:
        spec["process"]["oomScoreAdj"] = oom_score_adj(res.oom_score_adj, restrict)


def resources_json(res: cri.LinuxContainerResources) -> dict[str, Any]:
    """The OCI `linux.resources` (and `runc update --resources`) of CRI resources."""
    out: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    if res.cpu_period:
        cpu["period"] = res.cpu_period
    if res.cpu_quota:
        cpu["quota"] = res.cpu_quota
    if res.cpu_shares:
        cpu["shares"] = res.cpu_shares
    if res.cpuset_cpus:
        cpu["cpus"] = res.cpuset_cpus
    if res.cpuset_mems:
        cpu["mems"] = res.cpuset_mems
    if cpu:
        out["cpu"] = cpu
    if res.memory_limit_in_bytes:
        memory: dict[str, Any] = {"limit": res.memory_limit_in_bytes}
        if res.memory_swap_limit_in_bytes:
            memory["swap"] = res.memory_swap_limit_in_bytes
        out["memory"] = memory
    if res.unified:
        out["unified"] = dict(res.unified)
    return out


def sandbox_spec(
    sandbox_id: str,
    config: cri.PodSandboxConfig,
    image_config: dict[str, Any],
    netns: str,
    files: list[dict[str, Any]],
    restrict_oom: bool,
    namespace: str,
    unprivileged_ports: bool = False,
    unprivileged_icmp: bool = False,
) -> dict[str, Any]:
    spec = oci.from_image_config(namespace, sandbox_id, image_config.get("config") or {})
    linux = config.linux or cri.LinuxPodSandboxConfig()
    sc = linux.security_context or cri.LinuxSandboxSecurityContext()
    ns = _ns_options(sc)
    spec["hostname"] = config.hostname
    if ns.network == cri.NamespaceMode.NODE:
        _drop_namespace(spec, "network")
        _drop_namespace(spec, "uts")
        spec["hostname"] = ""
        spec.pop("hostname")
    else:
        _set_namespace(spec, "network", netns)
    if ns.ipc == cri.NamespaceMode.NODE:
        _drop_namespace(spec, "ipc")
    if ns.pid == cri.NamespaceMode.NODE:
        _drop_namespace(spec, "pid")
    spec["mounts"] += files
    sysctls = dict(linux.sysctls)
    if ns.network != cri.NamespaceMode.NODE:
        # containerd's two switches, each only where the pod set no value of its own.
        if unprivileged_ports:
            sysctls.setdefault("net.ipv4.ip_unprivileged_port_start", "0")
        if unprivileged_icmp:
            sysctls.setdefault("net.ipv4.ping_group_range", "0 2147483647")
    if sysctls:
        spec["linux"]["sysctl"] = sysctls
    if sc.readonly_rootfs:
        spec["root"]["readonly"] = True
    if sc.run_as_user is not None:
        spec["process"]["user"]["uid"] = sc.run_as_user.value
    if sc.run_as_group is not None:
        spec["process"]["user"]["gid"] = sc.run_as_group.value
    if linux.cgroup_parent:
        spec["linux"]["cgroupsPath"] = f"{linux.cgroup_parent.rstrip('/')}/{sandbox_id}"
    spec["process"]["oomScoreAdj"] = oom_score_adj(SANDBOX_OOM_SCORE_ADJ, restrict_oom)
    spec["process"]["noNewPrivileges"] = True
    return spec


def _command(config: cri.ContainerConfig, image_config: dict[str, Any]) -> list[str]:
    entrypoint = [str(a) for a in image_config.get("Entrypoint") or []]
    cmd = [str(a) for a in image_config.get("Cmd") or []]
    if config.command:
        return list(config.command) + list(config.args)
    if config.args:
        return entrypoint + list(config.args)
    return entrypoint + cmd


def _host_path(path: str) -> str:
    """The real path of a volume: a symlinked host path is followed, as containerd does."""
    if not os.path.isabs(path):
        raise InvalidArgument(f"mount host path {path!r} must be absolute")
    real = os.path.realpath(path)
    if not os.path.exists(real):
        raise InvalidArgument(f"mount host path {path!r} does not exist")
    return real


def container_spec(
    container_id: str,
    config: cri.ContainerConfig,
    image_config: dict[str, Any],
    rootfs: Path | None,
    sandbox_pid: int,
    sandbox_config: cri.PodSandboxConfig,
    files: list[dict[str, Any]],
    restrict_oom: bool,
    namespace: str,
) -> dict[str, Any]:
    img = image_config.get("config") or {}
    spec = oci.from_image_config(namespace, container_id, {**img, "User": ""}, rootfs, None)
    process = spec["process"]
    process["args"] = _command(config, img)
    if not process["args"]:
        raise InvalidArgument(f"container {config.metadata.name if config.metadata else ''}: "
                              "neither the config nor the image gives a command")  # fmt: skip
    env = {e.partition("=")[0]: e for e in process["env"]}
    for kv in config.envs:
        env[kv.key] = f"{kv.key}={kv.value}"
    process["env"] = list(env.values())
    if config.working_dir:
        process["cwd"] = config.working_dir
    process["terminal"] = config.tty
    linux = config.linux or cri.LinuxContainerConfig()
    sc = linux.security_context or cri.LinuxContainerSecurityContext()

    user = img.get("User") or ""
    if sc.run_as_username:
        user = sc.run_as_username
    elif sc.run_as_user is not None:
        user = str(sc.run_as_user.value)
    if sc.run_as_group is not None:
        if not (sc.run_as_username or sc.run_as_user is not None):
            raise InvalidArgument("run_as_group needs run_as_user or run_as_username")
        user = f"{user.partition(':')[0]}:{sc.run_as_group.value}"
    resolved = oci.resolve_user(str(user), rootfs) if user else {"uid": 0, "gid": 0}
    groups = [resolved["gid"], *(g for g in sc.supplemental_groups)]
    process["user"] = {
        "uid": resolved["uid"],
        "gid": resolved["gid"],
        "additionalGids": list(dict.fromkeys(groups)),
    }

    _capabilities(process, sc.capabilities, sc.privileged)
    process["noNewPrivileges"] = sc.no_new_privs
    if sc.readonly_rootfs:
        spec["root"]["readonly"] = True
    if sc.privileged:
        spec["linux"]["maskedPaths"] = []
        spec["linux"]["readonlyPaths"] = []
        spec["linux"]["resources"]["devices"] = [{"allow": True, "access": "rwm"}]
        for mount in spec["mounts"]:
            if mount["destination"] in ("/sys", "/sys/fs/cgroup"):
                mount["options"] = [o for o in mount["options"] if o != "ro"] + ["rw"]
    else:
        if sc.masked_paths:
            spec["linux"]["maskedPaths"] = list(sc.masked_paths)
        if sc.readonly_paths:
            spec["linux"]["readonlyPaths"] = list(sc.readonly_paths)
        profile = sc.seccomp
        unconfined = profile is not None and profile.profile_type in (
            cri.SecurityProfileProfileType.Unconfined,
        )
        if profile is None and sc.seccomp_profile_path in ("", "unconfined"):
            unconfined = True
        if profile is not None and profile.profile_type == cri.SecurityProfileProfileType.Localhost:
            raise InvalidArgument("seccomp Localhost profiles are not supported")
        if not unconfined:
            spec["linux"]["seccomp"] = seccomp.default_profile()

    mounts = copy.deepcopy(files)
    taken = {m["destination"] for m in mounts}
    for m in config.mounts:
        if not m.container_path.startswith("/"):
            raise InvalidArgument(f"mount container path {m.container_path!r} must be absolute")
        options = [
            "rbind",
            PROPAGATION.get(m.propagation, "rprivate"),
            "ro" if m.readonly else "rw",
        ]
        mounts.append({"destination": m.container_path, "type": "bind",
                       "source": _host_path(m.host_path), "options": options})  # fmt: skip
        taken.add(m.container_path)
        if m.propagation != cri.MountPropagation.PROPAGATION_PRIVATE:
            spec["linux"]["rootfsPropagation"] = "rslave"
            if m.propagation == cri.MountPropagation.PROPAGATION_BIDIRECTIONAL:
                spec["linux"]["rootfsPropagation"] = "rshared"
    spec["mounts"] = [m for m in spec["mounts"] if m["destination"] not in taken] + mounts

    ns = _ns_options(sc)
    proc_ns = f"/proc/{sandbox_pid}/ns"
    pod_ns = _ns_options((sandbox_config.linux or cri.LinuxPodSandboxConfig()).security_context)
    if pod_ns.network == cri.NamespaceMode.NODE:
        _drop_namespace(spec, "network")
        _drop_namespace(spec, "uts")
    else:
        _set_namespace(spec, "network", f"{proc_ns}/net")
        _set_namespace(spec, "uts", f"{proc_ns}/uts")
    spec.pop("hostname", None)
    if pod_ns.ipc == cri.NamespaceMode.NODE:
        _drop_namespace(spec, "ipc")
    else:
        _set_namespace(spec, "ipc", f"{proc_ns}/ipc")
    if ns.pid == cri.NamespaceMode.NODE:
        _drop_namespace(spec, "pid")
    elif ns.pid == cri.NamespaceMode.POD:
        _set_namespace(spec, "pid", f"{proc_ns}/pid")
    _resources(spec, linux.resources, restrict_oom)
    parent = (sandbox_config.linux or cri.LinuxPodSandboxConfig()).cgroup_parent
    if parent:
        spec["linux"]["cgroupsPath"] = f"{parent.rstrip('/')}/{container_id}"
    return spec
