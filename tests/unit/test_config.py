from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import platformdirs
import pytest

from core import config
from core.config import (
    CRI_PLUGIN,
    Config,
    GrpcConfig,
    RegistryConfig,
    RuntimeConfig,
    default_config,
    default_config_path,
    load,
    render_toml,
    with_overrides,
)
from core.errors import InvalidArgument

CRI = f'plugins."{CRI_PLUGIN}"'


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Keep the real /etc and home directory out of every test."""
    home = tmp_path / "home"
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.setattr(config, "SYSTEM_CONFIG_PATH", tmp_path / "etc" / "config.toml")
    return tmp_path


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(InvalidArgument) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    return message


# --- defaults ------------------------------------------------------------------


def test_defaults_as_root(as_root: None) -> None:
    cfg = default_config()
    assert cfg.version == 2
    assert cfg.root == Path("/var/lib/ctrdeck")
    assert cfg.state == Path("/run/ctrdeck")
    assert cfg.grpc == GrpcConfig(address="/run/ctrdeck/ctrdeck.sock")
    assert cfg.grpc.max_recv_message_size == cfg.grpc.max_send_message_size == 16 << 20
    assert cfg.debug.level == "info"
    assert cfg.metrics.address == ""
    assert cfg.default_runtime == "runc"
    assert cfg.default_snapshotter == "overlayfs"
    assert cfg.registry == RegistryConfig(config_path="")
    assert cfg.plugins == {}


def test_defaults_as_user(as_user: None, isolated: Path) -> None:
    cfg = default_config()
    runtime_dir = Path(platformdirs.user_runtime_dir("ctrdeck"))
    assert cfg.root == Path(platformdirs.user_data_dir("ctrdeck"))
    assert cfg.root == isolated / "home" / "data" / "ctrdeck"
    assert cfg.state == runtime_dir
    assert cfg.grpc.address == str(runtime_dir / "ctrdeck.sock")


def test_default_runtimes() -> None:
    runtimes = default_config().runtimes
    assert list(runtimes) == ["runc", "crun", "runsc"]
    for name, rt in runtimes.items():
        assert rt == RuntimeConfig(
            name=name, runtime_type="io.containerd.runc.v2", binary_name=name, options={}
        )


def test_config_is_frozen() -> None:
    cfg = default_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.root = Path("/x")  # type: ignore[misc]


# --- default path --------------------------------------------------------------


def test_default_path_none_when_no_files(as_root: None) -> None:
    assert default_config_path() is None
    assert load(None) == default_config()


def test_default_path_prefers_system_file_as_root(as_root: None, isolated: Path) -> None:
    system = config.SYSTEM_CONFIG_PATH
    system.parent.mkdir(parents=True)
    system.write_text('version = 2\n[debug]\nlevel = "debug"\n')
    user = Path(platformdirs.user_config_dir("ctrdeck")) / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('version = 2\n[debug]\nlevel = "warn"\n')
    assert default_config_path() == system
    assert load(None).debug.level == "debug"


def test_default_path_user_file_when_not_root(as_user: None) -> None:
    system = config.SYSTEM_CONFIG_PATH
    system.parent.mkdir(parents=True)
    system.write_text("version = 2\n")
    user = Path(platformdirs.user_config_dir("ctrdeck")) / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text('version = 2\n[debug]\nlevel = "warn"\n')
    assert default_config_path() == user
    assert load(None).debug.level == "warn"


def test_root_falls_back_to_user_file(as_root: None) -> None:
    user = Path(platformdirs.user_config_dir("ctrdeck")) / "config.toml"
    user.parent.mkdir(parents=True)
    user.write_text("version = 2\n")
    assert default_config_path() == user


# --- load ------------------------------------------------------------------------


def test_round_trip_defaults(tmp_path: Path, as_root: None) -> None:
    cfg = default_config()
    assert load(write(tmp_path, render_toml(cfg))) == cfg


def test_round_trip_defaults_as_user(tmp_path: Path, as_user: None) -> None:
    cfg = default_config()
    assert load(write(tmp_path, render_toml(cfg))) == cfg


def test_round_trip_everything(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        default_config(),
        root=Path("/srv/ctr root"),
        state=Path("/run/ctr"),
        grpc=GrpcConfig(
            address="/run/ctr/ctr.sock",
            tcp_address="127.0.0.1:7000",
            uid=10,
            gid=20,
            max_recv_message_size=1024,
            max_send_message_size=2048,
            max_concurrent_streams=7,
            connection_timeout=0.5,
            idle_timeout=0,
        ),
        debug=config.DebugConfig(level="trace"),
        metrics=config.MetricsConfig(address="127.0.0.1:1338"),
        default_runtime="kata",
        default_snapshotter="native",
        runtimes={
            **default_config().runtimes,
            # An emptied built-in must not come back as the default on load.
            "runc": RuntimeConfig(name="runc", binary_name=""),
            "kata": RuntimeConfig(
                name="kata",
                runtime_type="io.containerd.kata.v2",
                binary_name="/opt/kata/bin/kata",
                root="/run/kata",
                options={"SystemdCgroup": True, "Weight": 3, "Labels": ["a", "b"]},
            ),
            "with.dots": RuntimeConfig(name="with.dots"),
        },
        registry=RegistryConfig(config_path="/etc/ctrdeck/certs.d:/etc/docker/certs.d"),
        plugins={
            CRI_PLUGIN: {
                "sandbox_image": 'pause "3.9"\n',
                "containerd": {"discard_unpacked_layers": True},
                "registry": {"mirrors": {"docker.io": {"endpoint": ["https://m.example"]}}},
            },
            "io.containerd.gc.v1.scheduler": {"pause_threshold": 0.02, "deletion_threshold": 0},
            "io.containerd.snapshotter.v1.overlayfs": {},
            "io.containerd.internal.v1.tracing": {"spans": [{"name": "x", "on": False}]},
        },
    )
    assert load(write(tmp_path, render_toml(cfg))) == cfg


def test_file_cannot_remove_builtin_runtimes(tmp_path: Path) -> None:
    # Like containerd's pre-populated runtimes map, entries only add or change.
    cfg = dataclasses.replace(default_config(), runtimes={})
    assert load(write(tmp_path, render_toml(cfg))).runtimes == default_config().runtimes


def test_render_shape() -> None:
    text = render_toml(default_config())
    assert text.startswith("version = 2\nroot = ")
    for header in (
        "[grpc]",
        "[debug]",
        "[metrics]",
        f"[{CRI}.containerd]",
        f"[{CRI}.containerd.runtimes.runc]",
        f"[{CRI}.containerd.runtimes.runc.options]",
        f"[{CRI}.registry]",
    ):
        assert f"\n{header}\n" in text
    assert '  BinaryName = "crun"\n' in text
    assert '  default_runtime_name = "runc"\n' in text


def test_empty_file_is_defaults(tmp_path: Path) -> None:
    assert load(write(tmp_path, "")) == default_config()


def test_containerd_style_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
version = 2
root = "/data/ctrdeck"
state = "/run/ctrdeck-alt"
oom_score = -999
disabled_plugins = []

[grpc]
  address = "/run/ctrdeck-alt/api.sock"
  uid = 1000
  gid = 1000
  tcp_tls_cert = ""

[debug]
  level = ""

[metrics]
  address = "127.0.0.1:1338"
  grpc_histogram = false

[timeouts]
  "io.containerd.timeout.shim.cleanup" = "5s"

[{CRI}]
  sandbox_image = "registry.k8s.io/pause:3.9"
  [{CRI}.containerd]
    default_runtime_name = "crun"
    snapshotter = "native"
  [{CRI}.registry]
    config_path = "/etc/containerd/certs.d"
""",
    )
    cfg = load(path)
    assert cfg.root == Path("/data/ctrdeck")
    assert cfg.state == Path("/run/ctrdeck-alt")
    assert cfg.grpc.address == "/run/ctrdeck-alt/api.sock"
    assert (cfg.grpc.uid, cfg.grpc.gid) == (1000, 1000)
    assert cfg.debug.level == "info"
    assert cfg.metrics.address == "127.0.0.1:1338"
    assert cfg.default_runtime == "crun"
    assert cfg.default_snapshotter == "native"
    assert cfg.registry.config_path == "/etc/containerd/certs.d"
    # Modelled keys leave the raw table; the rest stays for other modules.
    assert cfg.plugins == {CRI_PLUGIN: {"sandbox_image": "registry.k8s.io/pause:3.9"}}


def test_runtimes_from_file_override_defaults(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
version = 2
[{CRI}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v1"
[{CRI}.containerd.runtimes.runc.options]
  SystemdCgroup = true
[{CRI}.containerd.runtimes.crun.options]
  BinaryName = "/usr/local/bin/crun"
  Root = "/run/crun"
[{CRI}.containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
""",
    )
    rts = load(path).runtimes
    assert list(rts) == ["runc", "crun", "runsc", "kata"]
    assert rts["runc"] == RuntimeConfig(
        name="runc",
        runtime_type="io.containerd.runc.v1",
        binary_name="runc",
        options={"SystemdCgroup": True},
    )
    assert rts["crun"] == RuntimeConfig(
        name="crun", binary_name="/usr/local/bin/crun", root="/run/crun"
    )
    assert rts["runsc"] == default_config().runtimes["runsc"]
    assert rts["kata"] == RuntimeConfig(name="kata", runtime_type="io.containerd.kata.v2")


def test_default_runtime_may_be_added_by_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f"""
version = 2
[{CRI}.containerd]
  default_runtime_name = "kata"
[{CRI}.containerd.runtimes.kata]
  runtime_type = "io.containerd.kata.v2"
""",
    )
    assert load(path).default_runtime == "kata"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(InvalidArgument) as info:
        load(path)
    assert str(path) in str(info.value)
    assert str(info.value).endswith("invalid argument")


def test_directory_is_not_a_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="is a directory"):
        load(tmp_path)


def test_bad_toml(tmp_path: Path) -> None:
    path = write(tmp_path, "version = 2\n[grpc\n")
    with pytest.raises(InvalidArgument) as info:
        load(path)
    message = str(info.value)
    assert message.startswith(f"{path}: invalid TOML: ")
    assert "line 2" in message


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'root = "\xff"\n')
    with pytest.raises(InvalidArgument, match="invalid TOML"):
        load(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version = 1", "version: only version 2 is supported"),
        ('version = "2"', 'version: expected an integer, got "2"'),
        ("root = 5", "root: expected a string, got 5"),
        ('root = "var/lib/x"', 'root: must be an absolute path, got "var/lib/x"'),
        ('state = ""', 'state: must be an absolute path, got ""'),
        ('root = "/a"\nstate = "/a"', "state: must be a different path from root"),
        ("grpc = 3", "grpc: expected a table, got 3"),
        ('[grpc]\naddress = ""', "grpc.address: must not be empty"),
        ("[grpc]\naddress = 1", "grpc.address: expected a string, got 1"),
        ("[grpc]\ntcp_address = false", "grpc.tcp_address: expected a string, got false"),
        ('[grpc]\nuid = "x"', 'grpc.uid: expected an integer, got "x"'),
        ("[grpc]\nuid = true", "grpc.uid: expected an integer, got true"),
        ("[grpc]\ngid = -1", "grpc.gid: must not be negative, got -1"),
        ("[grpc]\ngid = 1.5", "grpc.gid: expected an integer, got 1.5"),
        ("[grpc]\nmax_recv_message_size = -1", "grpc.max_recv_message_size: must be a positive"),
        ("[grpc]\nmax_send_message_size = -5", "grpc.max_send_message_size: must be a positive"),
        ("[grpc]\nmax_send_message_size = 0", "grpc.max_send_message_size: must be a positive"),
        ("[grpc]\nmax_concurrent_streams = 0", "grpc.max_concurrent_streams: must be a positive"),
        (
            '[grpc]\nidle_timeout = "5s"',
            'grpc.idle_timeout: expected a number of seconds, got "5s"',
        ),
        ("[grpc]\nconnection_timeout = -1", "grpc.connection_timeout: must be a finite number"),
        ("[grpc]\nconnection_timeout = inf", "grpc.connection_timeout: must be a finite number"),
        ('[debug]\nlevel = "loud"', "debug.level: must be one of trace, debug, info, warn, "),
        ("[debug]\nlevel = 3", "debug.level: expected a string, got 3"),
        ("[metrics]\naddress = [1]", "metrics.address: expected a string, got an array"),
        ("plugins = 1", "plugins: expected a table, got 1"),
        ('[plugins]\n"io.x.y" = 1', 'plugins."io.x.y": expected a table, got 1'),
        (
            f'[{CRI}]\ncontainerd = "x"',
            f'{CRI}.containerd: expected a table, got "x"',
        ),
        (
            f'[{CRI}.containerd]\ndefault_runtime_name = ""',
            f"{CRI}.containerd.default_runtime_name: must not be empty",
        ),
        (
            f'[{CRI}.containerd]\ndefault_runtime_name = "nope"',
            f'{CRI}.containerd.default_runtime_name: no runtime named "nope"',
        ),
        (
            f"[{CRI}.containerd]\nsnapshotter = 1",
            f"{CRI}.containerd.snapshotter: expected a string, got 1",
        ),
        (
            f"[{CRI}.containerd]\nruntimes = 1",
            f"{CRI}.containerd.runtimes: expected a table, got 1",
        ),
        (
            f'[{CRI}.containerd.runtimes]\n"a.b" = 1',
            f'{CRI}.containerd.runtimes."a.b": expected a table, got 1',
        ),
        (
            f"[{CRI}.containerd.runtimes.runc]\nruntime_type = 2",
            f"{CRI}.containerd.runtimes.runc.runtime_type: expected a string, got 2",
        ),
        (
            f'[{CRI}.containerd.runtimes.runc]\nruntime_type = ""',
            f"{CRI}.containerd.runtimes.runc.runtime_type: must not be empty",
        ),
        (
            f'[{CRI}.containerd.runtimes.runc]\noptions = "x"',
            f'{CRI}.containerd.runtimes.runc.options: expected a table, got "x"',
        ),
        (
            f"[{CRI}.containerd.runtimes.x.options]\nBinaryName = 1",
            f"{CRI}.containerd.runtimes.x.options.BinaryName: expected a string, got 1",
        ),
        (
            f'[{CRI}.containerd.runtimes.x.options]\nRoot = "rel"',
            f'{CRI}.containerd.runtimes.x.options.Root: must be an absolute path, got "rel"',
        ),
        (f"[{CRI}]\nregistry = 1", f"{CRI}.registry: expected a table, got 1"),
        (
            f"[{CRI}.registry]\nconfig_path = 1",
            f"{CRI}.registry.config_path: expected a string, got 1",
        ),
    ],
)
def test_invalid_value_names_its_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.toml"
    message = load_error(tmp_path, "version = 2\n" + text if "version" not in text else text)
    assert message.startswith(f"{path}: {expected}"), message
    assert message.endswith(": invalid argument")


def test_unknown_keys_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "version = 2\nimports = []\nfuture = { a = 1 }\n"
        "[grpc]\nshiny = true\n[cgroup]\npath = ''\n",
    )
    assert load(path) == default_config()


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    assert load(write(tmp_path, '[debug]\nlevel = "DEBUG"\n')).debug.level == "debug"


# --- overrides -----------------------------------------------------------------


def test_with_overrides() -> None:
    base = default_config()
    cfg = with_overrides(
        base, address="/tmp/x.sock", root="/srv/root", state=Path("/srv/state"), log_level="warn"
    )
    assert cfg.grpc == dataclasses.replace(base.grpc, address="/tmp/x.sock")
    assert cfg.root == Path("/srv/root")
    assert cfg.state == Path("/srv/state")
    assert cfg.debug.level == "warn"
    assert cfg.runtimes == base.runtimes
    assert base.root != cfg.root  # the input is left alone


def test_with_no_overrides_is_identity() -> None:
    base = default_config()
    assert with_overrides(base) == base


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"root": "relative"}, '--root: must be an absolute path, got "relative"'),
        ({"state": ""}, '--state: must be an absolute path, got ""'),
        ({"address": ""}, "--address: must not be empty"),
        ({"log_level": "chatty"}, "--log-level: must be one of trace,"),
        ({"root": "/same", "state": "/same"}, "--state: root and state must differ"),
    ],
)
def test_bad_overrides(kwargs: dict[str, str], expected: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        with_overrides(default_config(), **kwargs)  # type: ignore[arg-type]
    assert str(info.value).startswith(f"command line: {expected}")


def test_config_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        Config(2, Path("/a"), Path("/b"), GrpcConfig("/b/s"))  # type: ignore[misc]
