"""The nodes a fleet console attaches to: `--node NAME=URL` flags and `nodes.toml`.

A node is a name and a URL: a socket path or `unix:///path`, `tcp://host:port`
(TLS as for `-a`, or `plaintext`), or `ssh://[user@]host[:port][/remote/socket]`,
whose remote socket the user's OpenSSH client forwards (`tui.tunnel`); without
a path the tunnel tries containerd's socket, then ctrdeck's. Any URL may pin a
namespace with `?namespace=NS`. Parsing never raises for one bad node: a
malformed URL or a name used twice becomes a `NodeSpec` whose `problem` says
so, shown on that node's row, and the other nodes open as usual.

`nodes.toml` (in the config directory, beside `keymap.toml`):

    ssh_config = "~/.ssh/ctrdeck_config"   # optional, passed to ssh as -F
    [nodes]
    local = "/run/containerd/containerd.sock"
    web1 = "ssh://ops@web1?namespace=k8s.io"
    [nodes.db1]
    url = "tcp://db1:10000"
    tls_ca = "/etc/ctrdeck/ca.pem"
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

import platformdirs

from core.errors import CtrdeckError

if TYPE_CHECKING:
    from core.client import ClientTLS

FILE_NAME = "nodes.toml"
UNIX, TCP, SSH = "unix", "tcp", "ssh"
# Where an ssh:// node's engine listens when its URL names no socket: containerd's, then ctrdeck's.
REMOTE_DEFAULTS = ("/run/containerd/containerd.sock", "/run/ctrdeck/ctrdeck.sock")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
TLS_KEYS = ("tls_ca", "tls_cert", "tls_key")


class NodesError(Exception):
    """A nodes file that cannot be read at all (a bad node is a `NodeSpec.problem` instead)."""


@dataclass(frozen=True)
class NodeSpec:
    """One node as the operator named it, parsed; `problem` is why it cannot be reached."""

    name: str
    url: str
    kind: str = UNIX
    # The socket path (unix) or tcp://host:port (tcp); for ssh, the tunnel's local end later.
    address: str = ""
    host: str = ""
    user: str = ""
    port: int | None = None
    remote_path: str = ""
    namespace: str = ""
    tls: ClientTLS | None = field(default=None, compare=False)
    problem: str = ""

    @property
    def key(self) -> str:
        return self.name

    @property
    def where(self) -> str:
        """Where the node is, for a status line: the URL without its query."""
        return self.url.split("?", 1)[0]

    def ssh_destination(self) -> str:
        """`[user@]host` as an operator types it after `ssh`."""
        return f"{self.user}@{self.host}" if self.user else self.host


def default_path() -> Path:
    return Path(platformdirs.user_config_dir("ctrdeck")) / FILE_NAME


def parse_url(name: str, url: str, tls: ClientTLS | None = None) -> NodeSpec:
    """The node `name` at `url`; a malformed one comes back with its `problem` set."""
    spec = NodeSpec(name=name, url=url)
    if not NAME_RE.match(name):
        return replace(
            spec, problem=f"node name {name!r}: use letters, digits, '.', '_' or '-' (at most 63)"
        )
    try:
        return _parse(spec, url, tls)
    except ValueError as exc:
        return replace(spec, problem=f"{url!r}: {exc}")


def _parse(spec: NodeSpec, url: str, tls: ClientTLS | None) -> NodeSpec:
    if not url:
        raise ValueError("empty URL")
    if "://" not in url:
        path, _, query = url.partition("?")
        return _unix(spec, path, query)
    parts = urlsplit(url)
    namespace = _namespace(parts.query)
    if parts.fragment:
        raise ValueError("a node URL has no #fragment")
    if parts.scheme == "unix":
        if parts.netloc:
            raise ValueError("unix:// takes an absolute path: unix:///run/x.sock")
        return _unix(spec, parts.path, parts.query)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    host = parts.hostname or ""
    if not host:
        raise ValueError(f"{parts.scheme}:// needs a host")
    if parts.scheme == "tcp":
        if port is None:
            raise ValueError("tcp:// needs a port: tcp://host:port")
        if parts.path not in ("", "/") or parts.username:
            raise ValueError("tcp:// is host:port only")
        bracketed = f"[{host}]" if ":" in host else host
        return replace(
            spec, kind=TCP, address=f"tcp://{bracketed}:{port}", host=host, port=port,
            namespace=namespace, tls=tls,
        )  # fmt: skip
    if parts.scheme == "ssh":
        if parts.password is not None:
            raise ValueError("no passwords in a URL: ssh uses your keys, agent and ~/.ssh/config")
        remote = unquote(parts.path) if parts.path not in ("", "/") else ""
        return replace(
            spec, kind=SSH, host=host, user=unquote(parts.username or ""), port=port,
            remote_path=remote, namespace=namespace,
        )  # fmt: skip
    raise ValueError(
        f"unknown scheme {parts.scheme!r}: use a socket path, unix://, tcp:// or ssh://"
    )


def _unix(spec: NodeSpec, path: str, query: str) -> NodeSpec:
    if not path.startswith("/"):
        raise ValueError("a socket path must be absolute")
    return replace(spec, kind=UNIX, address=path, namespace=_namespace(query))


def _namespace(query: str) -> str:
    if not query:
        return ""
    fields = parse_qs(query, keep_blank_values=True, strict_parsing=False)
    unknown = sorted(set(fields) - {"namespace"})
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}: the one option is ?namespace=NS")
    values = fields.get("namespace", [""])
    if len(values) != 1 or not values[0]:
        raise ValueError("?namespace= needs one namespace name")
    return values[0]


def parse_flag(text: str, tls: ClientTLS | None = None) -> NodeSpec:
    """One `--node NAME=URL`."""
    name, sep, url = text.partition("=")
    if not sep:
        return NodeSpec(name=text or "?", url="", problem=f"--node {text!r}: use NAME=URL")
    return parse_url(name.strip(), url.strip(), tls)


@dataclass(frozen=True)
class NodesFile:
    nodes: tuple[NodeSpec, ...]
    ssh_config: Path | None = None


def load(path: Path) -> NodesFile:
    """The nodes of a `nodes.toml`; a missing file has none. `NodesError` if it is not TOML."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return NodesFile(())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NodesError(f"{path}: {exc}") from None
    ssh_config = data.get("ssh_config")
    if ssh_config is not None and not isinstance(ssh_config, str):
        raise NodesError(f"{path}: ssh_config must be a path")
    table = data.get("nodes", {})
    if not isinstance(table, dict):
        raise NodesError(f"{path}: [nodes] must be a table of NAME = URL")
    specs = [_from_toml(path, name, value) for name, value in table.items()]
    return NodesFile(tuple(specs), Path(ssh_config).expanduser() if ssh_config else None)


def _from_toml(path: Path, name: str, value: object) -> NodeSpec:
    if isinstance(value, str):
        return parse_url(name, value)
    if not isinstance(value, dict) or not isinstance(value.get("url"), str):
        return NodeSpec(name, "", problem=f"{path}: node {name}: give a URL, or a table with url")
    unknown = sorted(set(value) - {"url", "namespace", "plaintext", *TLS_KEYS})
    if unknown:
        problem = f"{path}: node {name}: unknown key {unknown[0]}"
        return NodeSpec(name, value["url"], problem=problem)
    tls = None
    if any(value.get(k) for k in TLS_KEYS) or not value.get("plaintext", False):
        from core.client import ClientTLS

        ca, cert, key = (value.get(k) or "" for k in TLS_KEYS)
        tls = ClientTLS(ca=ca, cert=cert, key=key)
    spec = parse_url(name, value["url"], tls)
    if spec.kind != TCP:
        spec = replace(spec, tls=None)
    elif spec.tls is not None and not spec.problem:
        try:
            # Unreadable certificate files belong on the node's row, not in a crash.
            spec.tls.context()
        except CtrdeckError as exc:
            spec = replace(spec, problem=exc.message)
    if isinstance(value.get("namespace"), str) and not spec.namespace:
        spec = replace(spec, namespace=value["namespace"])
    return spec


def unique(specs: list[NodeSpec]) -> list[NodeSpec]:
    """`specs` with every name used a second time renamed `NAME#2` and marked as a problem."""
    seen: dict[str, int] = {}
    out = []
    for spec in specs:
        count = seen.get(spec.name, 0) + 1
        seen[spec.name] = count
        if count > 1:
            spec = replace(
                spec,
                name=f"{spec.name}#{count}",
                problem=f"node name {spec.name!r} is used twice; "
                f"this one ({spec.where}) is left out",
            )
        out.append(spec)
    return out
