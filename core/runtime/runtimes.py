"""The OCI runtime binaries, named as containerd's config names them.

This module owns turning `[...containerd.runtimes.<name>]` entries into
commands: which binary each runtime runs (`BinaryName`, else the runtime's
name), where it keeps its state (`Root`, else `<state>/<name>`, one directory
per namespace as containerd's shim does), and the adjustments this host
needs. crun refuses the hybrid cgroup layout (v1 controllers plus a cgroup2
mount at `/sys/fs/cgroup/unified`), so every crun command runs in a private
mount namespace with that mount taken away; runsc ships no containerd shim
and runs as a plain OCI runtime with `--network=none`. A container picks its
runtime by `Container.runtime.name`: a configured name, or a shim type such
as `io.containerd.runc.v2`, which means the default runtime. A runtime whose
binary is not installed fails with a message naming the binary. No runtime
command may hang a task: each gets `runtime_timeout` seconds (the
`io.containerd.runtime.v2.task` plugin's option, 120 by default), and one that
overruns, or whose caller gives up, is killed with everything it started.
Commands run through `command.py` (posix_spawn and a pidfd on the loop, no
thread per command).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from core.config import RUNC_V2, Config, RuntimeConfig
from core.errors import (
    CtrdeckError,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from core.runtime import command

HYBRID_UNIFIED = Path("/sys/fs/cgroup/unified")
RUNSC_SHIM = "io.containerd.runsc.v1"
TASK_PLUGIN = "io.containerd.runtime.v2.task"
# runc itself answers in milliseconds; the slack is for hooks and busy hosts.
DEFAULT_TIMEOUT = 120.0


def hybrid_cgroups() -> bool:
    """True on a host with cgroup v1 controllers and a cgroup2 mount beside them."""
    try:
        mounts = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return False
    targets = {line.split()[1]: line.split()[2] for line in mounts if len(line.split()) > 2}
    return (
        targets.get(str(HYBRID_UNIFIED)) == "cgroup2" and targets.get("/sys/fs/cgroup") != "cgroup2"
    )


class RuntimeFailed(CtrdeckError):
    """A runtime command exited non-zero; the message carries its own words.

    containerd reports OCI runtime failures as "unknown", and so do we.
    """


@dataclass
class Runtime:
    name: str
    runtime_type: str
    binary: str
    state_root: Path
    flavour: str
    wrap_hybrid: bool = False
    extra_flags: list[str] = field(default_factory=list)
    timeout: float = DEFAULT_TIMEOUT

    def root(self, namespace: str) -> Path:
        return self.state_root / namespace

    def make_root(self, namespace: str) -> Path:
        """The runtime's state directory for a namespace; neither it nor its parent listable."""
        self.state_root.mkdir(parents=True, exist_ok=True, mode=0o711)
        root = self.root(namespace)
        root.mkdir(exist_ok=True, mode=0o711)
        return root

    def argv(self, namespace: str, *args: str, log: Path | None = None) -> list[str]:
        """The full command line for one runtime subcommand in a namespace."""
        cmd = [self.binary, "--root", str(self.root(namespace))]
        if log is not None:
            cmd += ["--log", str(log), "--log-format", "json"]
        cmd += self.extra_flags
        cmd += args
        if self.wrap_hybrid:
            # unshare(1) makes the new mount namespace private, so the
            # unmount is invisible to the host.
            script = f'umount {HYBRID_UNIFIED} 2>/dev/null; exec "$0" "$@"'
            cmd = ["unshare", "--mount", "--", "/bin/sh", "-c", script, *cmd]
        return cmd

    async def run(self, namespace: str, *args: str, what: str = "") -> str:
        """Run a subcommand to completion; its stdout, or RuntimeFailed with its stderr.

        Past `timeout` seconds it is killed and DeadlineExceeded raised; if the
        caller is cancelled it is killed too, so no runtime command outlives
        the request (and the task lock) it ran for.
        """
        what = what or f"{self.name} {args[0]}"
        self.make_root(namespace)
        argv = self.argv(namespace, *args)
        try:
            done = await command.run(argv, self.timeout)
        except TimeoutError:
            raise DeadlineExceeded(
                f"{what}: {self.binary} did not finish within {self.timeout:g} seconds "
                "and was killed"
            ) from None
        except (FileNotFoundError, PermissionError) as exc:
            raise FailedPrecondition(
                f"{what}: cannot run {argv[0]}: {exc.strerror or exc} "
                "(the runtime binary was removed or is not executable)"
            ) from None
        if done.returncode != 0:
            text = _error_text(done.stderr) or f"exit status {done.returncode}"
            raise RuntimeFailed(f"{what}: {text}")
        return done.stdout.decode(errors="replace")

    async def state(self, namespace: str, container_id: str) -> dict[str, object] | None:
        """The runtime's `state` of a container, or None when it does not know it."""
        try:
            out = await self.run(namespace, "state", container_id)
        except RuntimeFailed:
            return None
        try:
            data = json.loads(out)
        except ValueError:
            return None
        return data if isinstance(data, dict) else None


async def kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGKILL the process group a child leads (its own session) and reap the child.

    The group is signalled even when the child itself has ended: what it
    started (a detached monitor, the runtime under it) lives on in the group,
    and Linux does not reuse the id while the group has members.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()


def command_timeout(config: Config) -> float:
    """`runtime_timeout` of the task plugin's options, in seconds."""
    value = config.plugins.get(TASK_PLUGIN, {}).get("runtime_timeout", DEFAULT_TIMEOUT)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 86400:
        raise InvalidArgument(
            f'plugins."{TASK_PLUGIN}".runtime_timeout must be a number of seconds '
            f"above 0 and at most 86400, got {value!r}"
        )
    return float(value)


def _error_text(stderr: bytes) -> str:
    """The runtime's own message, unwrapped from JSON log lines where it used them."""
    messages: list[str] = []
    for line in stderr.decode(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            messages.append(line)
            continue
        messages.append(str(entry.get("msg", line)) if isinstance(entry, dict) else line)
    return "; ".join(messages)


def _flavour(binary_name: str) -> str:
    base = os.path.basename(binary_name)
    for known in ("runc", "crun", "runsc"):
        if base.startswith(known):
            return known
    return "runc"


class Runtimes:
    """The configured runtimes and the reasons any of them cannot run here."""

    def __init__(self, config: Config) -> None:
        self.default = config.default_runtime
        self.available: dict[str, Runtime] = {}
        self.missing: dict[str, str] = {}
        self.configs = dict(config.runtimes)
        self.timeout = command_timeout(config)
        hybrid = hybrid_cgroups()
        for name, rc in config.runtimes.items():
            binary_name = rc.binary_name or name
            path = shutil.which(binary_name)
            if path is None:
                self.missing[name] = (
                    f'runtime "{name}" is unavailable: its binary "{binary_name}" '
                    f"is not installed (not found in PATH)"
                )
                continue
            flavour = _flavour(binary_name)
            extra = ["--network=none"] if flavour == "runsc" else []
            self.available[name] = Runtime(
                name=name,
                runtime_type=rc.runtime_type,
                binary=path,
                state_root=Path(rc.root) if rc.root else Path(config.state) / name,
                flavour=flavour,
                wrap_hybrid=hybrid and flavour == "crun",
                extra_flags=extra,
                timeout=self.timeout,
            )

    def _named(self, name: str) -> Runtime:
        if name in self.available:
            return self.available[name]
        if name in self.missing:
            raise FailedPrecondition(self.missing[name])
        raise NotFound(
            f'runtime "{name}" is not configured (configured: {", ".join(sorted(self.configs))})'
        )

    def _by_type(self, runtime_type: str) -> str | None:
        default = self.configs.get(self.default)
        if default is not None and default.runtime_type == runtime_type:
            return self.default
        for name, rc in self.configs.items():
            if rc.runtime_type == runtime_type:
                return name
        return None

    def select(self, runtime_name: str, binary_name: str = "") -> Runtime:
        """The runtime for a container's `runtime.name` (and runc options' BinaryName)."""
        if binary_name:
            for name, rc in self.configs.items():
                if (rc.binary_name or name) == binary_name:
                    return self._named(name)
            path = shutil.which(binary_name)
            if path is None:
                raise FailedPrecondition(
                    f'runtime binary "{binary_name}" named in the container\'s runtime '
                    "options is not installed (not found in PATH)"
                )
            return self._adhoc(binary_name, path)
        if runtime_name in self.configs:
            return self._named(runtime_name)
        if runtime_name == RUNSC_SHIM and "runsc" in self.configs:
            return self._named("runsc")
        by_type = self._by_type(runtime_name or RUNC_V2)
        if by_type is not None:
            return self._named(by_type)
        return self._named(runtime_name)

    def _adhoc(self, binary_name: str, path: str) -> Runtime:
        base = self.available.get(self.default)
        flavour = _flavour(binary_name)
        root = base.state_root.parent if base is not None else Path("/run/ctrdeck")
        return Runtime(
            name=os.path.basename(binary_name),
            runtime_type=RUNC_V2,
            binary=path,
            state_root=root / os.path.basename(binary_name),
            flavour=flavour,
            wrap_hybrid=hybrid_cgroups() and flavour == "crun",
            extra_flags=["--network=none"] if flavour == "runsc" else [],
            timeout=self.timeout,
        )

    def by_name(self, name: str) -> Runtime:
        """A runtime recorded for a task, found again after a restart."""
        if name in self.available:
            return self.available[name]
        for rt in self.available.values():
            if os.path.basename(rt.binary) == name:
                return rt
        path = shutil.which(name)
        if path is None:
            raise FailedPrecondition(f'runtime "{name}" of an existing task is no longer installed')
        return self._adhoc(name, path)

    def config_of(self, name: str) -> RuntimeConfig | None:
        return self.configs.get(name)
