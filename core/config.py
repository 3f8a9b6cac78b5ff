"""The engine's configuration model: a containerd-1.6-shaped `config.toml`.

This module owns the typed view of the daemon configuration (top-level `version`,
`root` and `state`, the `[grpc]`, `[debug]` and `[metrics]` tables, the CRI
plugin's runtime, snapshotter and registry settings) plus the raw
`[plugins."<type>.<id>"]` tables that other modules read for themselves. It
knows where the defaults live for root and rootless operation, where the config
file is looked for, how CLI flags override it, and how to print it back as TOML
that `load` reads again. Every rejected value raises `InvalidArgument` naming the
file and the full dotted key, so an operator can find the line to fix.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import platformdirs

from core import listeners
from core.errors import InvalidArgument
from core.images.credentials import config_auth

APP_NAME = "ctrdeck"
CONFIG_VERSION = 2
CRI_PLUGIN = "io.containerd.grpc.v1.cri"
RUNC_V2 = "io.containerd.runc.v2"
SOCKET_NAME = "ctrdeck.sock"
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20
LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "fatal", "panic")

# Module-level so tests (and packagers) can point them elsewhere.
SYSTEM_CONFIG_PATH = Path("/etc/ctrdeck/config.toml")
SYSTEM_ROOT = Path("/var/lib/ctrdeck")
SYSTEM_STATE = Path("/run/ctrdeck")

_CRI_CONTAINERD = ("plugins", CRI_PLUGIN, "containerd")
_CRI_REGISTRY = ("plugins", CRI_PLUGIN, "registry")


@dataclass(frozen=True)
class GrpcConfig:
    address: str
    tcp_address: str = ""
    tcp_tls_ca: str = ""
    tcp_tls_cert: str = ""
    tcp_tls_key: str = ""
    # Ours, not containerd's: serve plaintext TCP on a non-loopback address anyway.
    tcp_insecure: bool = False
    uid: int = 0
    gid: int = 0
    max_recv_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_send_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    max_concurrent_streams: int = 100
    connection_timeout: float = 20.0
    idle_timeout: float = 300.0


@dataclass(frozen=True)
class MetricsConfig:
    address: str = ""


@dataclass(frozen=True)
class DebugConfig:
    level: str = "info"


@dataclass(frozen=True)
class RuntimeConfig:
    """One `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<name>]` entry.

    `binary_name` and `root` are lifted out of the runtime's `options` table
    (`BinaryName`, `Root`), so `options` holds only the remaining keys, such as
    `SystemdCgroup`; an empty `binary_name` or `root` means "not set".
    """

    name: str
    runtime_type: str = RUNC_V2
    binary_name: str = ""
    root: str = ""
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RegistryConfig:
    config_path: str = ""
    auths: Mapping[str, tuple[str, str]] = field(default_factory=dict, repr=False)
    """Per-host credentials (`registry.configs."<host>".auth`), never printed."""


def _default_runtimes() -> dict[str, RuntimeConfig]:
    return {name: RuntimeConfig(name=name, binary_name=name) for name in ("runc", "crun", "runsc")}


@dataclass(frozen=True, kw_only=True)
class Config:
    """The whole daemon configuration.

    `plugins` holds every `[plugins."<type>.<id>"]` table as read, minus the
    CRI keys modelled by `default_runtime`, `default_snapshotter`, `runtimes`
    and `registry`; keeping them in one place only means an edit to a typed
    field cannot be contradicted by a stale raw copy.
    """

    version: int = CONFIG_VERSION
    root: Path
    state: Path
    grpc: GrpcConfig
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    default_runtime: str = "runc"
    default_snapshotter: str = "overlayfs"
    runtimes: dict[str, RuntimeConfig] = field(default_factory=_default_runtimes)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)


def _is_root() -> bool:
    return os.geteuid() == 0


def default_config() -> Config:
    """Defaults for the current user: system paths as root, XDG paths otherwise."""
    if _is_root():
        root, state = SYSTEM_ROOT, SYSTEM_STATE
    else:
        root = Path(platformdirs.user_data_dir(APP_NAME))
        state = Path(platformdirs.user_runtime_dir(APP_NAME))
    return Config(root=root, state=state, grpc=GrpcConfig(address=str(state / SOCKET_NAME)))


def default_config_path() -> Path | None:
    """The config file `load(None)` reads, or None when there is none.

    Only root looks at the system file: its paths would be unusable for a
    rootless daemon.
    """
    candidates: list[Path] = []
    if _is_root():
        candidates.append(SYSTEM_CONFIG_PATH)
    candidates.append(Path(platformdirs.user_config_dir(APP_NAME)) / "config.toml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def load(path: Path | str | None = None) -> Config:
    """Read a config file; with no path, the default file if any, else defaults."""
    if path is None:
        path = default_config_path()
        if path is None:
            return default_config()
    path = Path(path)
    try:
        with path.open("rb") as fp:
            data = tomllib.load(fp)
    except FileNotFoundError:
        raise InvalidArgument(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidArgument(f"config file {path} is a directory") from None
    except OSError as exc:
        raise InvalidArgument(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidArgument(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"{path}: invalid TOML: not UTF-8 text ({exc.reason})") from None
    return from_dict(data, source=str(path))


def from_dict(data: Mapping[str, Any], *, source: str = "config") -> Config:
    """Validate an already-parsed TOML document; `source` prefixes error messages."""
    r = _Reader(source)
    base = default_config()

    version = r.integer(data, ("version",), CONFIG_VERSION)
    if version != CONFIG_VERSION:
        # A version 1 file names plugins differently ("cri" rather than
        # "io.containerd.grpc.v1.cri"), so reading it as version 2 would
        # silently drop its settings.
        r.fail(("version",), f"only version {CONFIG_VERSION} is supported, got {version}")

    root = r.abs_path(data, ("root",), base.root)
    state = r.abs_path(data, ("state",), base.state)
    if root == state:
        r.fail(("state",), "must be a different path from root")

    g = r.table(data, ("grpc",))
    address = r.string(g, ("grpc", "address"), base.grpc.address)
    if not address:
        r.fail(("grpc", "address"), "must not be empty")
    grpc = GrpcConfig(
        address=address,
        tcp_address=r.string(g, ("grpc", "tcp_address"), ""),
        tcp_tls_ca=r.optional_abs(g, ("grpc", "tcp_tls_ca")),
        tcp_tls_cert=r.optional_abs(g, ("grpc", "tcp_tls_cert")),
        tcp_tls_key=r.optional_abs(g, ("grpc", "tcp_tls_key")),
        tcp_insecure=r.boolean(g, ("grpc", "tcp_insecure"), False),
        uid=r.non_negative(g, ("grpc", "uid"), 0),
        gid=r.non_negative(g, ("grpc", "gid"), 0),
        max_recv_message_size=r.positive(
            g, ("grpc", "max_recv_message_size"), DEFAULT_MAX_MESSAGE_SIZE
        ),
        max_send_message_size=r.positive(
            g, ("grpc", "max_send_message_size"), DEFAULT_MAX_MESSAGE_SIZE
        ),
        max_concurrent_streams=r.positive_count(g, ("grpc", "max_concurrent_streams"), 100),
        connection_timeout=r.seconds(g, ("grpc", "connection_timeout"), 20.0),
        idle_timeout=r.seconds(g, ("grpc", "idle_timeout"), 300.0),
    )

    _check_tcp(r, grpc)

    m = r.table(data, ("metrics",))
    metrics = MetricsConfig(address=r.string(m, ("metrics", "address"), ""))

    d = r.table(data, ("debug",))
    debug = DebugConfig(level=r.log_level(d, ("debug", "level"), "info"))

    plugins = _read_plugins(r, data)
    cri = plugins.get(CRI_PLUGIN, {})

    ctd = r.table(cri, _CRI_CONTAINERD)
    default_runtime = r.non_empty(ctd, (*_CRI_CONTAINERD, "default_runtime_name"), "runc")
    snapshotter = r.non_empty(ctd, (*_CRI_CONTAINERD, "snapshotter"), "overlayfs")
    runtimes = _read_runtimes(r, r.table(ctd, (*_CRI_CONTAINERD, "runtimes")), base.runtimes)
    if default_runtime not in runtimes:
        r.fail(
            (*_CRI_CONTAINERD, "default_runtime_name"),
            f"no runtime named {_toml_string(default_runtime)} is configured under "
            f"{_format_key((*_CRI_CONTAINERD, 'runtimes'))}",
        )

    reg = r.table(cri, _CRI_REGISTRY)
    registry = RegistryConfig(
        config_path=r.string(reg, (*_CRI_REGISTRY, "config_path"), ""),
        auths=_registry_auths(r, reg),
    )

    # What is modelled above must not also linger in the raw tables.
    for key in ("default_runtime_name", "snapshotter", "runtimes"):
        ctd.pop(key, None)
    reg.pop("config_path", None)
    if CRI_PLUGIN in plugins:
        for sub, table in (("containerd", ctd), ("registry", reg)):
            if sub in cri and not table:
                del cri[sub]
        if not cri:
            del plugins[CRI_PLUGIN]

    return Config(
        version=version,
        root=root,
        state=state,
        grpc=grpc,
        metrics=metrics,
        debug=debug,
        default_runtime=default_runtime,
        default_snapshotter=snapshotter,
        runtimes=runtimes,
        registry=registry,
        plugins=plugins,
    )


def _registry_auths(r: _Reader, reg: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """`configs."<host>".auth` tables, taken out of the raw tables (they hold secrets)."""
    key = (*_CRI_REGISTRY, "configs")
    configs = r.table(reg, key)
    auths: dict[str, tuple[str, str]] = {}
    for host, table in list(configs.items()):
        where = (*key, host)
        entry = r.as_table(table, where).pop("auth", None)
        if entry is not None:
            auths[host] = config_auth(entry, f"{r.source}: {_format_key((*where, 'auth'))}")
        if not table:
            del configs[host]
    if not configs:
        reg.pop("configs", None)
    return auths


def _check_tcp(r: _Reader, g: GrpcConfig) -> None:
    """The TCP listener's TLS settings go together, and plaintext stays on loopback."""
    if g.tcp_tls_cert and not g.tcp_tls_key:
        r.fail(("grpc", "tcp_tls_key"), "must be set with grpc.tcp_tls_cert (its private key)")
    if g.tcp_tls_key and not g.tcp_tls_cert:
        r.fail(("grpc", "tcp_tls_cert"), "must be set with grpc.tcp_tls_key (its certificate)")
    if g.tcp_tls_ca and not g.tcp_tls_cert:
        r.fail(
            ("grpc", "tcp_tls_ca"),
            "requires grpc.tcp_tls_cert and grpc.tcp_tls_key: client certificates are "
            "checked only on a TLS listener",
        )
    if not g.tcp_address:
        return
    try:
        host, _ = listeners.parse_tcp(g.tcp_address)
    except InvalidArgument:
        r.fail(("grpc", "tcp_address"), f"must be host:port, got {_toml_string(g.tcp_address)}")
    if g.tcp_tls_cert or g.tcp_insecure or listeners.is_loopback(host):
        return
    r.fail(
        ("grpc", "tcp_address"),
        f"{_toml_string(g.tcp_address)} is not a loopback address and the listener has no "
        "TLS: anyone who reaches it could drive the engine (run containers as root, read "
        "every image). Set grpc.tcp_tls_cert and grpc.tcp_tls_key (and grpc.tcp_tls_ca to "
        "require client certificates), or grpc.tcp_insecure = true to serve plaintext anyway",
    )


def _read_plugins(r: _Reader, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    raw = r.table(data, ("plugins",))
    plugins: dict[str, dict[str, Any]] = {}
    for name, value in raw.items():
        plugins[name] = r.as_table(value, ("plugins", name))
    # Deep copy: callers may edit the raw tables of the result, and the
    # modelled CRI keys are popped from it.
    return copy.deepcopy(plugins)


def _read_runtimes(
    r: _Reader, table: dict[str, Any], defaults: dict[str, RuntimeConfig]
) -> dict[str, RuntimeConfig]:
    runtimes = dict(defaults)
    for name, value in table.items():
        key = (*_CRI_CONTAINERD, "runtimes", name)
        rt = r.as_table(value, key)
        # A file entry for a built-in runtime only changes what it sets, so
        # `[...runtimes.runc.options] SystemdCgroup = true` keeps BinaryName.
        base = defaults.get(name, RuntimeConfig(name=name))
        options = dict(r.table(rt, (*key, "options")))
        binary_name = r.string(options, (*key, "options", "BinaryName"), base.binary_name)
        runtime_root = r.string(options, (*key, "options", "Root"), base.root)
        if runtime_root and not os.path.isabs(runtime_root):
            r.fail((*key, "options", "Root"), _not_absolute(runtime_root))
        options.pop("BinaryName", None)
        options.pop("Root", None)
        runtimes[name] = RuntimeConfig(
            name=name,
            runtime_type=r.non_empty(rt, (*key, "runtime_type"), base.runtime_type),
            binary_name=binary_name,
            root=runtime_root,
            options={**base.options, **options},
        )
    return runtimes


def with_overrides(
    cfg: Config,
    *,
    address: str | None = None,
    root: str | Path | None = None,
    state: str | Path | None = None,
    log_level: str | None = None,
) -> Config:
    """Apply CLI flags on top of a loaded config; None leaves a setting alone."""
    r = _Reader("command line")
    changes: dict[str, Any] = {}
    if address is not None:
        if not address:
            r.fail(("--address",), "must not be empty")
        changes["grpc"] = dataclasses.replace(cfg.grpc, address=address)
    if root is not None:
        changes["root"] = r.abs_path({"--root": str(root)}, ("--root",), cfg.root)
    if state is not None:
        changes["state"] = r.abs_path({"--state": str(state)}, ("--state",), cfg.state)
    if (root is not None or state is not None) and changes.get("root", cfg.root) == changes.get(
        "state", cfg.state
    ):
        r.fail(("--state" if state is not None else "--root",), "root and state must differ")
    if log_level is not None:
        level = r.log_level({"--log-level": log_level}, ("--log-level",), cfg.debug.level)
        changes["debug"] = dataclasses.replace(cfg.debug, level=level)
    return dataclasses.replace(cfg, **changes)


class _Reader:
    """Typed lookups that fail with the source and full key in the message."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: tuple[str, ...], problem: str) -> NoReturn:
        raise InvalidArgument(f"{self.source}: {_format_key(key)}: {problem}")

    def _get(self, table: Mapping[str, Any], key: tuple[str, ...], default: Any) -> Any:
        return table.get(key[-1], default)

    def as_table(self, value: Any, key: tuple[str, ...]) -> dict[str, Any]:
        if not isinstance(value, dict):
            self.fail(key, f"expected a table, got {_describe(value)}")
        return value

    def table(self, table: Mapping[str, Any], key: tuple[str, ...]) -> dict[str, Any]:
        return self.as_table(self._get(table, key, {}), key)

    def string(self, table: Mapping[str, Any], key: tuple[str, ...], default: str) -> str:
        value = self._get(table, key, default)
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_describe(value)}")
        return value

    def non_empty(self, table: Mapping[str, Any], key: tuple[str, ...], default: str) -> str:
        value = self.string(table, key, default)
        if not value:
            self.fail(key, "must not be empty")
        return value

    def boolean(self, table: Mapping[str, Any], key: tuple[str, ...], default: bool) -> bool:
        value = self._get(table, key, default)
        if not isinstance(value, bool):
            self.fail(key, f"expected true or false, got {_describe(value)}")
        return value

    def optional_abs(self, table: Mapping[str, Any], key: tuple[str, ...]) -> str:
        """A path that may be empty ("not set"), else absolute: the engine's cwd is no anchor."""
        value = self.string(table, key, "")
        if value and not os.path.isabs(value):
            self.fail(key, _not_absolute(value))
        return value

    def integer(self, table: Mapping[str, Any], key: tuple[str, ...], default: int) -> int:
        value = self._get(table, key, default)
        # bool is an int subclass; `uid = true` is a mistake, not 1.
        if not isinstance(value, int) or isinstance(value, bool):
            self.fail(key, f"expected an integer, got {_describe(value)}")
        return value

    def non_negative(self, table: Mapping[str, Any], key: tuple[str, ...], default: int) -> int:
        value = self.integer(table, key, default)
        if value < 0:
            self.fail(key, f"must not be negative, got {value}")
        return value

    def positive(self, table: Mapping[str, Any], key: tuple[str, ...], default: int) -> int:
        value = self.integer(table, key, default)
        if value <= 0:
            self.fail(key, f"must be a positive number of bytes, got {value}")
        return value

    def positive_count(self, table: Mapping[str, Any], key: tuple[str, ...], default: int) -> int:
        value = self.integer(table, key, default)
        if value <= 0:
            self.fail(key, f"must be a positive number, got {value}")
        return value

    def seconds(self, table: Mapping[str, Any], key: tuple[str, ...], default: float) -> float:
        value = self._get(table, key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            self.fail(key, f"expected a number of seconds, got {_describe(value)}")
        if value < 0 or not math.isfinite(value):
            self.fail(key, f"must be a finite number of seconds, 0 for none, got {value}")
        return float(value)

    def abs_path(self, table: Mapping[str, Any], key: tuple[str, ...], default: Path) -> Path:
        value = self._get(table, key, default)
        if isinstance(value, Path):
            return value
        if not isinstance(value, str):
            self.fail(key, f"expected a string, got {_describe(value)}")
        if not os.path.isabs(value):
            self.fail(key, _not_absolute(value))
        return Path(value)

    def log_level(self, table: Mapping[str, Any], key: tuple[str, ...], default: str) -> str:
        value = self.string(table, key, default)
        # `containerd config default` writes `level = ""`, meaning the default.
        level = value.lower() or "info"
        if level not in LOG_LEVELS:
            self.fail(key, f"must be one of {', '.join(LOG_LEVELS)}, got {_toml_string(value)}")
        return level


def _not_absolute(value: str) -> str:
    return f"must be an absolute path, got {_toml_string(value)}"


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return _toml_value(value)


# --- TOML output -------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
}


def _toml_string(value: str) -> str:
    out = []
    for ch in value:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _format_key(path: tuple[str, ...]) -> str:
    return ".".join(_toml_key(part) for part in path)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, Path):
        return _toml_string(str(value))
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        # Only reached inside arrays: arrays of tables read from a file come
        # back as lists of dicts, and inline tables are the simplest spelling.
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise TypeError(f"cannot render {type(value).__name__} as TOML")


def _emit_table(lines: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    values = [(k, v) for k, v in table.items() if not isinstance(v, Mapping)]
    subtables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    # A header is needed only to hold values or to keep an empty table in
    # existence; parents of subtables are implied by the subtables' headers.
    if path and (values or not subtables):
        lines.extend(["", f"[{_format_key(path)}]"])
    indent = "  " if path else ""
    lines.extend(f"{indent}{_toml_key(k)} = {_toml_value(v)}" for k, v in values)
    for k, v in subtables:
        _emit_table(lines, (*path, k), v)


def _as_document(cfg: Config) -> dict[str, Any]:
    plugins = copy.deepcopy(cfg.plugins)
    cri = plugins.setdefault(CRI_PLUGIN, {})
    ctd = cri.setdefault("containerd", {})
    ctd["default_runtime_name"] = cfg.default_runtime
    ctd["snapshotter"] = cfg.default_snapshotter
    runtimes: dict[str, Any] = {}
    for name, rt in cfg.runtimes.items():
        # BinaryName is written even when empty: load merges entries over the
        # built-in runtimes, so an omitted key would bring back e.g. "runc".
        options = {**rt.options, "BinaryName": rt.binary_name}
        if rt.root:
            options["Root"] = rt.root
        runtimes[name] = {"runtime_type": rt.runtime_type, "options": options}
    ctd["runtimes"] = runtimes
    cri.setdefault("registry", {})["config_path"] = cfg.registry.config_path
    return {
        "version": cfg.version,
        "root": str(cfg.root),
        "state": str(cfg.state),
        "grpc": dataclasses.asdict(cfg.grpc),
        "debug": dataclasses.asdict(cfg.debug),
        "metrics": dataclasses.asdict(cfg.metrics),
        "plugins": plugins,
    }


def render_toml(cfg: Config) -> str:
    """The config as containerd-style TOML that `load` reads back unchanged."""
    lines: list[str] = []
    _emit_table(lines, (), _as_document(cfg))
    return "\n".join(lines) + "\n"
