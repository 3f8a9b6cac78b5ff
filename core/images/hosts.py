"""Registry endpoints: containerd's hosts directory and the defaults without one.

This module owns the answer to "which URLs serve registry host H, for what, and with which TLS
settings". With a hosts directory (CRI's `registry.config_path`, one or more directories joined
by ':'), it reads `<dir>/<host>/hosts.toml` (a `host:port` is also looked up as `host_port_`, and
`_default/` applies to hosts without their own directory): each `[host."<url>"]` table is a
mirror tried in file order, then `server` (or the registry host itself); each may set
`capabilities` (pull, resolve, push), `skip_verify`, `ca`, `client`, `header` and
`override_path`. A directory with no hosts.toml is read the Docker `certs.d` way (`*.crt` CAs,
`*.cert`/`*.key` client pairs). Plain HTTP comes from an `http://` URL or from the caller asking
for it (`plain_http`, as `ctr --plain-http`); besides, an HTTPS endpoint on a loopback host
(`localhost`, 127.0.0.0/8, `::1`) without TLS settings of its own falls back to plain HTTP when
the other end answers without TLS, as Docker and containerd 1.7+ do. Anywhere else plain HTTP
stays opt-in.
"""

from __future__ import annotations

import ipaddress
import os
import ssl
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from core.errors import InvalidArgument
from core.images.reference import DEFAULT_DOMAIN, DOCKER_REGISTRY_HOST

PULL = "pull"
RESOLVE = "resolve"
PUSH = "push"
ALL_CAPABILITIES = frozenset({PULL, RESOLVE, PUSH})
DEFAULT_DIR = "_default"


@dataclass(frozen=True)
class Endpoint:
    """One URL serving a registry host, with what it may be used for and how to trust it."""

    scheme: str
    host: str
    path: str = "/v2"
    capabilities: frozenset[str] = ALL_CAPABILITIES
    skip_verify: bool = False
    ca_files: tuple[str, ...] = ()
    client_pairs: tuple[tuple[str, str], ...] = ()
    header: tuple[tuple[str, str], ...] = ()
    http_fallback: bool = False
    mirror: bool = False
    """Tried before the upstream server, which takes over when this one fails."""

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.path}"

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    def tls_key(self) -> tuple[object, ...]:
        """Endpoints with equal keys can share one HTTP connection pool."""
        return (
            self.scheme,
            self.skip_verify,
            self.ca_files,
            self.client_pairs,
            self.http_fallback,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """The TLS settings for this endpoint: system roots plus `ca`, client certificates."""
        ctx = ssl.create_default_context()
        if self.skip_verify:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        for ca in self.ca_files:
            try:
                ctx.load_verify_locations(cafile=ca)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(f"unable to load CA certificate {ca!r}: {exc}") from exc
        for cert, key in self.client_pairs:
            try:
                ctx.load_cert_chain(cert, key or None)
            except (OSError, ssl.SSLError) as exc:
                raise InvalidArgument(
                    f"unable to load client certificate {cert!r} (key {key or cert!r}): {exc}"
                ) from exc
        return ctx


@dataclass
class Hosts:
    """Endpoint lookup for registry hosts; an empty `config_path` means defaults only."""

    config_path: str = ""
    plain_http: bool = False
    _roots: list[Path] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self._roots = [Path(p) for p in self.config_path.split(os.pathsep) if p]

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Endpoints for the reference domain `domain`, in the order they are to be tried."""
        found = self._endpoints(domain)
        return [
            replace(_with_fallback(ep), mirror=i < len(found) - 1) for i, ep in enumerate(found)
        ]

    def _endpoints(self, domain: str) -> list[Endpoint]:
        directory = self._host_dir(domain)
        entries = _load_dir(directory) if directory is not None else []
        server = self._default_server(domain)
        if entries and entries[-1].host:
            return entries
        if entries:
            last = entries[-1]
            entries[-1] = Endpoint(
                scheme=server.scheme,
                host=server.host,
                path="/v2",
                capabilities=ALL_CAPABILITIES,
                skip_verify=last.skip_verify,
                ca_files=last.ca_files,
                client_pairs=last.client_pairs,
                header=last.header,
            )
            return entries
        return [server]

    def _default_server(self, domain: str) -> Endpoint:
        if domain == DEFAULT_DOMAIN:
            return Endpoint(scheme="https", host=DOCKER_REGISTRY_HOST)
        return Endpoint(scheme="http" if self.plain_http else "https", host=domain)

    def _host_dir(self, domain: str) -> Path | None:
        names = []
        colon = domain.rfind(":")
        if colon > 0:
            names.append(f"{domain[:colon]}_{domain[colon + 1 :]}_")
        names += [domain, DEFAULT_DIR]
        for root in self._roots:
            for name in names:
                candidate = root / name
                if candidate.is_dir():
                    return candidate
        return None


def is_loopback(host: str) -> bool:
    """Whether `host` (a `host[:port]` or `[v6]:port`) names this machine's loopback."""
    name = host
    if name.startswith("["):
        name = name[1 : name.find("]")] if "]" in name else name[1:]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _with_fallback(ep: Endpoint) -> Endpoint:
    # Explicit TLS settings say the operator means TLS; only a bare loopback endpoint may fall back.
    explicit = ep.skip_verify or ep.ca_files or ep.client_pairs
    if ep.scheme == "https" and not explicit and is_loopback(ep.host):
        return replace(ep, http_fallback=True)
    return ep


def _load_dir(directory: Path) -> list[Endpoint]:
    hosts_file = directory / "hosts.toml"
    try:
        raw = hosts_file.read_bytes()
    except FileNotFoundError:
        raw = b""
    if not raw.strip():
        return [_cert_files_entry(directory)]
    try:
        doc = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument(f"invalid {hosts_file}: {exc}") from exc
    mirrors = doc.get("host", {})
    if not isinstance(mirrors, dict):
        raise InvalidArgument(f"invalid {hosts_file}: 'host' must be a table of URLs")
    entries = []
    for url, table in mirrors.items():
        if not isinstance(table, dict):
            raise InvalidArgument(f'invalid {hosts_file}: host."{url}" must be a table')
        entries.append(_entry(hosts_file, url, table, f'host."{url}"'))
    server = doc.get("server", "")
    if not isinstance(server, str):
        raise InvalidArgument(f"invalid {hosts_file}: 'server' must be a string URL")
    entries.append(_entry(hosts_file, server, doc, ""))
    return entries


def _entry(hosts_file: Path, url: str, table: Mapping[str, Any], where: str) -> Endpoint:
    def key(name: str) -> str:
        return f"{where}.{name}" if where else name

    def bad(name: str, want: str) -> InvalidArgument:
        return InvalidArgument(f"invalid {hosts_file}: {key(name)} must be {want}")

    base = hosts_file.parent
    scheme = host = path = ""
    override = table.get("override_path", False)
    if not isinstance(override, bool):
        raise bad("override_path", "a boolean")
    if url:
        # As in containerd, a URL without a scheme is HTTPS.
        parts = urlsplit(url if "://" in url else f"https://{url}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidArgument(f"invalid {hosts_file}: {url!r} is not an http(s) URL")
        scheme, host = parts.scheme, parts.netloc
        path = os.path.normpath(parts.path) if parts.path else ""
        path = "" if path == "." else path.rstrip("/")
        if not override and not path.endswith("/v2"):
            path += "/v2"

    capabilities = table.get("capabilities")
    if capabilities is None:
        caps = ALL_CAPABILITIES
    else:
        if not isinstance(capabilities, list) or not all(isinstance(c, str) for c in capabilities):
            raise bad("capabilities", "a list of strings")
        unknown = {c.lower() for c in capabilities} - ALL_CAPABILITIES
        if unknown:
            raise InvalidArgument(
                f"invalid {hosts_file}: {key('capabilities')}: unknown capability "
                f"{sorted(unknown)[0]!r} (want pull, resolve or push)"
            )
        caps = frozenset(c.lower() for c in capabilities)

    skip = table.get("skip_verify", False)
    if not isinstance(skip, bool):
        raise bad("skip_verify", "a boolean")

    ca = table.get("ca")
    if ca is None:
        ca_files: tuple[str, ...] = ()
    elif isinstance(ca, str):
        ca_files = (str(base / ca),)
    elif isinstance(ca, list) and all(isinstance(c, str) for c in ca):
        ca_files = tuple(str(base / c) for c in ca)
    else:
        raise bad("ca", "a path or a list of paths")

    pairs: list[tuple[str, str]] = []
    client = table.get("client")
    if isinstance(client, str):
        pairs.append((str(base / client), ""))
    elif isinstance(client, list):
        for item in client:
            if isinstance(item, str):
                pairs.append((str(base / item), ""))
            elif (
                isinstance(item, list) and len(item) == 2 and all(isinstance(i, str) for i in item)
            ):
                pairs.append((str(base / item[0]), str(base / item[1])))
            else:
                raise bad("client", "a path, a list of paths or a list of [cert, key] pairs")
    elif client is not None:
        raise bad("client", "a path, a list of paths or a list of [cert, key] pairs")

    header: list[tuple[str, str]] = []
    headers = table.get("header", {})
    if not isinstance(headers, dict):
        raise bad("header", "a table")
    for name, value in headers.items():
        if isinstance(value, str):
            header.append((name, value))
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            header += [(name, v) for v in value]
        else:
            raise bad(f"header.{name}", "a string or a list of strings")

    return Endpoint(
        scheme=scheme,
        host=host,
        path=path,
        capabilities=caps,
        skip_verify=skip,
        ca_files=ca_files,
        client_pairs=tuple(pairs),
        header=tuple(header),
    )


def _cert_files_entry(directory: Path) -> Endpoint:
    cas: list[str] = []
    pairs: list[tuple[str, str]] = []
    for entry in sorted(directory.iterdir()):
        if entry.suffix == ".crt":
            cas.append(str(entry))
        elif entry.suffix == ".cert":
            key = entry.with_suffix(".key")
            if not key.exists():
                raise InvalidArgument(f"client certificate {entry} has no matching key {key}")
            pairs.append((str(entry), str(key)))
    return Endpoint(scheme="", host="", ca_files=tuple(cas), client_pairs=tuple(pairs))
