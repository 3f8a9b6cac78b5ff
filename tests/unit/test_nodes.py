"""Node URLs and nodes.toml: every form parses, and every bad one is a clear problem on its row."""

from __future__ import annotations

from pathlib import Path

import pytest

from tui import nodes
from tui.nodes import SSH, TCP, UNIX, parse_flag, parse_url


def test_socket_path_and_unix_url() -> None:
    assert parse_url("a", "/run/x.sock") == nodes.NodeSpec("a", "/run/x.sock", UNIX, "/run/x.sock")
    spec = parse_url("a", "unix:///run/x.sock?namespace=k8s.io")
    assert (spec.kind, spec.address, spec.namespace, spec.problem) == (
        UNIX,
        "/run/x.sock",
        "k8s.io",
        "",
    )


def test_ssh_url_forms() -> None:
    spec = parse_url("web", "ssh://ops@web1:2222/run/ctrdeck/ctrdeck.sock?namespace=k8s.io")
    assert (spec.kind, spec.user, spec.host, spec.port) == (SSH, "ops", "web1", 2222)
    assert (spec.remote_path, spec.namespace) == ("/run/ctrdeck/ctrdeck.sock", "k8s.io")
    bare = parse_url("web", "ssh://web1")
    assert (bare.user, bare.port, bare.remote_path, bare.problem) == ("", None, "", "")
    assert bare.ssh_destination() == "web1"


def test_tcp_url_keeps_tls() -> None:
    spec = parse_url("db", "tcp://[::1]:10000")
    assert (spec.kind, spec.address, spec.port) == (TCP, "tcp://[::1]:10000", 10000)
    assert spec.host == "::1"


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("", "empty URL"),
        ("relative.sock", "absolute"),
        ("ftp://x", "unknown scheme 'ftp'"),
        ("tcp://host", "needs a port"),
        ("tcp://host:99999", "port must be a number"),
        ("ssh://", "needs a host"),
        ("ssh://u:pw@host", "no passwords"),
        ("ssh://host?ns=x", "unknown option 'ns'"),
        ("ssh://host?namespace=", "needs one namespace"),
        ("unix://host/x.sock", "absolute path"),
    ],
)
def test_malformed_urls_are_problems_not_crashes(url: str, says: str) -> None:
    spec = parse_url("n", url)
    assert says in spec.problem


def test_flag_needs_name_and_url() -> None:
    assert "use NAME=URL" in parse_flag("/run/x.sock").problem
    assert "node name" in parse_flag("bad name=/x.sock").problem
    assert parse_flag("a=/x.sock").address == "/x.sock"


def test_a_name_used_twice_is_marked_and_kept_apart() -> None:
    specs = nodes.unique([parse_url("a", "/x.sock"), parse_url("a", "/y.sock")])
    assert [s.name for s in specs] == ["a", "a#2"]
    assert specs[0].problem == ""
    assert "used twice" in specs[1].problem and "/y.sock" in specs[1].problem


def test_nodes_toml(tmp_path: Path) -> None:
    path = tmp_path / "nodes.toml"
    path.write_text(
        'ssh_config = "/etc/ssh/x_config"\n'
        "[nodes]\n"
        'local = "/run/containerd/containerd.sock"\n'
        'web = "ssh://ops@web1?namespace=k8s.io"\n'
        '[nodes.db]\nurl = "tcp://127.0.0.1:10000"\nplaintext = true\nnamespace = "prod"\n'
        '[nodes.odd]\nurl = "/x.sock"\ncolour = "red"\n'
    )
    found = nodes.load(path)
    assert found.ssh_config == Path("/etc/ssh/x_config")
    by_name = {s.name: s for s in found.nodes}
    assert by_name["web"].namespace == "k8s.io"
    assert (by_name["db"].tls, by_name["db"].namespace) == (None, "prod")
    assert "unknown key colour" in by_name["odd"].problem


def test_nodes_toml_missing_is_empty_and_broken_is_an_error(tmp_path: Path) -> None:
    assert nodes.load(tmp_path / "none.toml").nodes == ()
    bad = tmp_path / "bad.toml"
    bad.write_text("[nodes\n")
    with pytest.raises(nodes.NodesError, match=r"bad\.toml"):
        nodes.load(bad)


def test_unreadable_tls_files_are_the_nodes_problem(tmp_path: Path) -> None:
    path = tmp_path / "nodes.toml"
    path.write_text(f'[nodes.db]\nurl = "tcp://db:1"\ntls_ca = "{tmp_path}/missing.pem"\n')
    (spec,) = nodes.load(path).nodes
    assert "missing.pem" in spec.problem
