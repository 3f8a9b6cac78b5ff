"""The OCI runtime spec the console sends when it runs an image, as `ctr run` builds one.

In containerd the client writes a container's spec (ctr does it from the image
config), so the console does too, from `core.oci`'s containerd defaults with the
image's entrypoint, command, environment and working directory, then the
operator's `RunOptions` on top (ctr's `run` flags: arguments, `--env`, `--cwd`,
`-t`, `--read-only`, `--mount`, `--runtime`, `--rm`). `RunOptions.parse` reads
the Run form's text fields and says what is wrong with them; `ctr_flags` gives
back the flags of the equivalent `ctr run`. The console has no view of the
image's /etc/passwd, so only a numeric user is honoured and a named one runs as
root; an image with no command runs a shell. The result goes into the container
as JSON under the OCI spec type URL. `pull_flags` gives ctr's flags for a pull request,
with `--user NAME` and never the password.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from typing import Any

from core import oci
from core.api.containerd.services.images import v1 as images_api
from core.api.google.protobuf import Any as AnyMessage

SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
DEFAULT_RUNTIME = "io.containerd.runc.v2"


class OptionError(ValueError):
    """A Run form field that cannot be used; the message names the field."""


@dataclass(frozen=True)
class BindMount:
    source: str
    destination: str
    read_only: bool = False

    @classmethod
    def parse(cls, text: str) -> BindMount:
        """`SRC:DST` or `SRC:DST:ro` (or `:rw`), both paths absolute, as `docker run -v`."""
        parts = text.split(":")
        mode = ""
        if len(parts) == 3:
            mode = parts.pop()
        if len(parts) != 2 or mode not in ("", "ro", "rw"):
            raise OptionError(f"mount {text!r}: write SRC:DST or SRC:DST:ro")
        source, destination = parts
        for path in (source, destination):
            if not path.startswith("/"):
                raise OptionError(f"mount {text!r}: {path!r} is not an absolute path")
        return cls(source, destination, mode == "ro")

    def spec(self) -> dict[str, Any]:
        mode = "ro" if self.read_only else "rw"
        return {
            "destination": self.destination,
            "type": "bind",
            "source": self.source,
            "options": ["rbind", mode],
        }

    def ctr(self) -> str:
        mode = "ro" if self.read_only else "rw"
        return f"type=bind,src={self.source},dst={self.destination},options=rbind:{mode}"


@dataclass(frozen=True)
class RunOptions:
    """What the operator chose for a new container; empty fields keep the image's choice."""

    container_id: str
    snapshotter: str
    runtime: str = DEFAULT_RUNTIME
    args: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    cwd: str = ""
    tty: bool = False
    remove: bool = False
    read_only: bool = False
    mount: BindMount | None = None

    @classmethod
    def parse(
        cls,
        container_id: str,
        snapshotter: str,
        *,
        runtime: str = "",
        args: str = "",
        env: str = "",
        cwd: str = "",
        tty: bool = False,
        remove: bool = False,
        read_only: bool = False,
        mount: str = "",
    ) -> RunOptions:
        """The form's text as options: `args` and `env` are shell words, `mount` SRC:DST[:ro]."""
        container_id = container_id.strip()
        if not container_id:
            raise OptionError("a container needs an id")
        try:
            words = tuple(shlex.split(args))
        except ValueError as exc:
            raise OptionError(f"command: {exc}") from None
        try:
            variables = tuple(shlex.split(env))
        except ValueError as exc:
            raise OptionError(f"environment: {exc}") from None
        for variable in variables:
            if "=" not in variable or variable.startswith("="):
                raise OptionError(f"environment: {variable!r} is not NAME=VALUE")
        cwd = cwd.strip()
        if cwd and not cwd.startswith("/"):
            raise OptionError(f"working directory {cwd!r} is not an absolute path")
        return cls(
            container_id=container_id,
            snapshotter=snapshotter,
            runtime=runtime.strip() or DEFAULT_RUNTIME,
            args=words,
            env=variables,
            cwd=cwd,
            tty=tty,
            remove=remove,
            read_only=read_only,
            mount=BindMount.parse(mount.strip()) if mount.strip() else None,
        )

    def ctr_flags(self) -> list[str]:
        """The flags of the `ctr run` that makes the same container (before IMAGE ID)."""
        flags = ["--rm"] if self.remove else ["-d"]
        if self.tty:
            flags.append("-t")
        flags += ["--snapshotter", self.snapshotter]
        if self.runtime != DEFAULT_RUNTIME:
            flags += ["--runtime", self.runtime]
        for variable in self.env:
            flags += ["--env", variable]
        if self.cwd:
            flags += ["--cwd", self.cwd]
        if self.read_only:
            flags.append("--read-only")
        if self.mount is not None:
            flags += ["--mount", self.mount.ctr()]
        return flags


def _user(value: str) -> dict[str, int]:
    uid_text, _, gid_text = value.partition(":")
    uid = int(uid_text) if uid_text.isdigit() else 0
    gid = int(gid_text) if gid_text.isdigit() else uid if uid_text.isdigit() else 0
    return {"uid": uid, "gid": gid}


def default_command(image_config: dict[str, Any]) -> list[str]:
    """What the image runs when the operator gives no command."""
    config = image_config.get("config") or {}
    entrypoint = [str(a) for a in config.get("Entrypoint") or []]
    command = entrypoint + [str(a) for a in config.get("Cmd") or []]
    return command or ["/bin/sh"]


def from_image(
    namespace: str,
    container_id: str,
    image_config: dict[str, Any],
    options: RunOptions | None = None,
) -> dict[str, Any]:
    config = dict(image_config.get("config") or {})
    user = str(config.pop("User", "") or "")
    has_command = config.get("Entrypoint") or config.get("Cmd")
    args = list(options.args) if options and options.args else None
    spec = oci.from_image_config(
        namespace, container_id, config, args=args or (None if has_command else ["/bin/sh"])
    )
    spec["process"]["user"] = _user(user)
    if options is not None:
        _apply(spec, options)
    return spec


def _apply(spec: dict[str, Any], options: RunOptions) -> None:
    process = spec["process"]
    for variable in options.env:
        # A variable the operator sets replaces the image's of the same name, as ctr's --env.
        name = variable.partition("=")[0] + "="
        process["env"] = [e for e in process["env"] if not e.startswith(name)] + [variable]
    if options.cwd:
        process["cwd"] = options.cwd
    if options.tty:
        process["terminal"] = True
    if options.read_only:
        spec.setdefault("root", {})["readonly"] = True
    if options.mount is not None:
        spec.setdefault("mounts", []).append(options.mount.spec())


def terminal(spec: dict[str, Any] | None) -> bool:
    return bool(((spec or {}).get("process") or {}).get("terminal"))


def pack(spec: dict[str, Any]) -> AnyMessage:
    return AnyMessage(type_url=SPEC_URL, value=json.dumps(spec).encode())


def pull_flags(request: images_api.PullImageRequest) -> str:
    """The request as ctr's pull flags: `--user` carries the name only, never the secret."""
    flags = " --plain-http" if request.plain_http else ""
    if request.user:
        flags += f" --user {shlex.quote(request.user.partition(':')[0])}"
    if request.snapshotter:
        flags += f" --snapshotter {shlex.quote(request.snapshotter)}"
    if request.platform:
        flags += f" --platform {shlex.quote(request.platform)}"
    return flags
