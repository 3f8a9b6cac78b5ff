"""The CRI's pure parts: its config keys, CNI conf loading, resolv.conf, spec building."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.api.runtime import v1 as cri
from core.config import from_dict
from core.cri import cni, files, spec
from core.cri.config import CriConfig, from_config, netns_dir
from core.errors import InvalidArgument

ROOT = {"root": "/tmp/r", "state": "/tmp/s", "grpc": {"address": "/tmp/s/sock"}}


def _cri(table: dict) -> CriConfig:  # type: ignore[type-arg]
    return from_config(from_dict({**ROOT, "plugins": {"io.containerd.grpc.v1.cri": table}}))


def test_containerd_defaults_and_overrides() -> None:
    defaults = from_config(from_dict(ROOT))
    assert defaults.sandbox_image == "registry.k8s.io/pause:3.6"
    assert (defaults.stream_server_address, defaults.stream_server_port) == ("127.0.0.1", "0")
    assert defaults.cni.bin_dir == "/opt/cni/bin" and defaults.cni.conf_dir == "/etc/cni/net.d"
    assert not defaults.restrict_oom_score_adj and not defaults.netns_mounts_under_state_dir
    assert netns_dir(defaults, Path("/tmp/s")) == Path("/var/run/netns")
    custom = _cri({
        "sandbox_image": "pause:1", "restrict_oom_score_adj": True,
        "netns_mounts_under_state_dir": True, "stream_server_port": 10010,
        "cni": {"bin_dir": "/usr/lib/cni", "max_conf_num": 2, "plugin_timeout": 3},
    })  # fmt: skip
    assert custom.sandbox_image == "pause:1" and custom.restrict_oom_score_adj
    assert custom.stream_server_port == "10010" and custom.cni.plugin_timeout == 3.0
    assert netns_dir(custom, Path("/tmp/s")) == Path("/tmp/s/netns")


@pytest.mark.parametrize(
    "table",
    [
        {"sandbox_image": 5},
        {"restrict_oom_score_adj": "yes"},
        {"stream_server_port": "http"},
        {"cni": {"max_conf_num": True}},
        {"cni": {"plugin_timeout": 0}},
        {"cni": "x"},
    ],
)
def test_a_key_of_the_wrong_type_is_refused_by_name(table: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgument, match=r"io\.containerd\.grpc\.v1\.cri"):
        _cri(table)


def test_conf_lists_load_in_name_order_and_bad_ones_are_skipped(tmp_path: Path) -> None:
    conf = cni.CniConfig(bin_dir=str(tmp_path / "bin"), conf_dir=str(tmp_path), max_conf_num=5)
    assert cni.load(conf) == []
    assert "no network config" in cni.not_ready_reason(conf)
    (tmp_path / "05-broken.conflist").write_text("{not json")
    (tmp_path / "10-a.conflist").write_text(
        json.dumps({"name": "a", "cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]})
    )
    (tmp_path / "20-b.conf").write_text(json.dumps({"name": "b", "type": "ptp"}))
    assert [n.name for n in cni.load(conf)] == ["a", "b"]
    assert 'plugin "bridge" not found' in cni.not_ready_reason(conf)
    (tmp_path / "bin").mkdir()
    for name in ("bridge", "ptp"):
        (tmp_path / "bin" / name).write_text("")
    assert cni.not_ready_reason(conf) == ""


def test_resolv_conf_from_dns_config() -> None:
    dns = cri.DnsConfig(
        servers=["10.0.0.10", "10.0.0.11"], searches=["a.test"], options=["ndots:5"]
    )
    assert files.resolv_conf(dns) == (
        "nameserver 10.0.0.10\nnameserver 10.0.0.11\nsearch a.test\noptions ndots:5\n"
    )


def test_oom_score_is_never_set_below_the_engines_own_when_restricted() -> None:
    own = spec.own_oom_score_adj()
    assert spec.oom_score_adj(own - 500, restrict=True) == own
    assert spec.oom_score_adj(own + 5, restrict=True) == own + 5


def test_capabilities_add_drop_and_all() -> None:
    process = {"capabilities": {"bounding": ["CAP_CHOWN", "CAP_KILL"]}}
    spec._capabilities(process, cri.Capability(add_capabilities=["net_admin"],
                                               drop_capabilities=["KILL"]), False)  # fmt: skip
    assert process["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_NET_ADMIN"]
    spec._capabilities(process, cri.Capability(drop_capabilities=["ALL"]), False)
    assert process["capabilities"]["effective"] == []
    spec._capabilities(process, None, True)
    assert set(process["capabilities"]["permitted"]) == set(spec.all_caps())
