"""containerd's hosts directory: endpoint order, capabilities, TLS and plain HTTP."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import InvalidArgument
from core.images.hosts import ALL_CAPABILITIES, Endpoint, Hosts
from core.images.registry import RegistryClient, RetryPolicy


def write(root: Path, name: str, text: str) -> Path:
    directory = root / name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.toml").write_text(text)
    return directory


def test_defaults_without_a_hosts_dir() -> None:
    assert Hosts().endpoints("docker.io") == [Endpoint("https", "registry-1.docker.io")]
    assert Hosts().endpoints("quay.io") == [Endpoint("https", "quay.io")]
    # Loopback is tried with TLS first and may fall back to plain HTTP, as in containerd 1.7+.
    for host in ("127.0.0.1:5000", "localhost:5000", "127.3.4.5", "[::1]:5000", "LOCALHOST"):
        assert Hosts().endpoints(host) == [Endpoint("https", host, http_fallback=True)], host
    # Anywhere else plain HTTP stays opt-in.
    for host in ("10.0.0.1:5000", "quay.io", "localhost.example:5000", "[fe80::1]:5000"):
        assert not Hosts().endpoints(host)[0].http_fallback, host
    plain = Hosts(plain_http=True).endpoints("127.0.0.1:5000")
    assert plain == [Endpoint("http", "127.0.0.1:5000")]
    assert plain[0].base_url == "http://127.0.0.1:5000/v2"
    # docker.io stays HTTPS even when plain HTTP is asked for, as in containerd.
    assert Hosts(plain_http=True).endpoints("docker.io")[0].scheme == "https"


def test_mirrors_first_then_server(tmp_path: Path) -> None:
    d = write(
        tmp_path,
        "docker.io",
        """
server = "https://registry-1.docker.io"

[host."http://127.0.0.1:5001"]
  capabilities = ["pull", "resolve"]
  header = { X-Trace = "1", X-Multi = ["a", "b"] }

[host."https://mirror.example/registry"]
  capabilities = ["pull"]
  skip_verify = true
  ca = "mirror-ca.pem"

[host."mirror2.example:8443"]
  ca = ["/etc/ca1.pem", "ca2.pem"]
  client = [["c.cert", "c.key"], "both.pem"]
  override_path = true
""",
    )
    eps = Hosts(str(tmp_path)).endpoints("docker.io")
    assert [e.base_url for e in eps] == [
        "http://127.0.0.1:5001/v2",
        "https://mirror.example/registry/v2",
        "https://mirror2.example:8443",
        "https://registry-1.docker.io/v2",
    ]
    assert eps[0].capabilities == {"pull", "resolve"}
    assert eps[0].header == (("X-Trace", "1"), ("X-Multi", "a"), ("X-Multi", "b"))
    assert eps[1].capabilities == {"pull"} and eps[1].skip_verify
    assert eps[1].ca_files == (str(d / "mirror-ca.pem"),)
    assert eps[2].ca_files == ("/etc/ca1.pem", str(d / "ca2.pem"))
    assert eps[2].client_pairs == ((str(d / "c.cert"), str(d / "c.key")), (str(d / "both.pem"), ""))
    assert eps[2].capabilities == ALL_CAPABILITIES
    assert eps[3].capabilities == ALL_CAPABILITIES
    # Mirrors hand over to the next endpoint at once; only the server retries.
    assert [e.mirror for e in eps] == [True, True, True, False]
    client = RegistryClient(Hosts(str(tmp_path)), retry=RetryPolicy(attempts=5))
    assert [client.policy(e).attempts for e in eps] == [1, 1, 1, 5]


def test_port_directory_default_dir_and_missing_server(tmp_path: Path) -> None:
    write(tmp_path, "reg.local_5000_", '[host."http://10.0.0.1:80"]\n')
    write(tmp_path, "_default", 'server = "http://fallback.local"\n')
    eps = Hosts(str(tmp_path)).endpoints("reg.local:5000")
    # Without `server`, the registry host itself comes last, with the default scheme.
    assert [e.base_url for e in eps] == ["http://10.0.0.1:80/v2", "https://reg.local:5000/v2"]
    assert Hosts(str(tmp_path), plain_http=True).endpoints("reg.local:5000")[1].scheme == "http"
    assert [e.base_url for e in Hosts(str(tmp_path)).endpoints("other.io")] == [
        "http://fallback.local/v2"
    ]


def test_several_roots_and_certs_d_layout(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    certs = second / "secure.io"
    certs.mkdir(parents=True)
    (certs / "ca.crt").write_text("x")
    (certs / "client.cert").write_text("x")
    (certs / "client.key").write_text("x")
    first.mkdir()
    eps = Hosts(f"{first}:{second}").endpoints("secure.io")
    assert eps == [
        Endpoint(
            "https",
            "secure.io",
            ca_files=(str(certs / "ca.crt"),),
            client_pairs=((str(certs / "client.cert"), str(certs / "client.key")),),
        )
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("server = [", "invalid .*hosts.toml"),
        ('server = "ftp://x"', "not an http"),
        ('[host."http://m"]\ncapabilities = ["pull", "fly"]', "unknown capability 'fly'"),
        ('[host."http://m"]\nskip_verify = "yes"', r'host."http://m".skip_verify must be'),
        ("ca = 3", "ca must be"),
        ("header = { X = 1 }", "header.X must be"),
        ("server = 5", "'server' must be"),
    ],
)
def test_invalid_hosts_toml(tmp_path: Path, text: str, message: str) -> None:
    write(tmp_path, "bad.io", text)
    with pytest.raises(InvalidArgument, match=message):
        Hosts(str(tmp_path)).endpoints("bad.io")


def test_missing_ca_file_is_reported(tmp_path: Path) -> None:
    ep = Endpoint("https", "x.io", ca_files=(str(tmp_path / "absent.pem"),))
    with pytest.raises(InvalidArgument, match=r"absent\.pem"):
        ep.ssl_context()


def test_loopback_fallback_only_without_explicit_tls(tmp_path: Path) -> None:
    write(
        tmp_path,
        "127.0.0.1:5000",
        """
server = "https://127.0.0.1:5000"

[host."https://127.0.0.1:5001"]
  ca = "ca.pem"

[host."https://localhost:5002"]
""",
    )
    eps = Hosts(str(tmp_path)).endpoints("127.0.0.1:5000")
    assert [(e.host, e.http_fallback) for e in eps] == [
        ("127.0.0.1:5001", False),
        ("localhost:5002", True),
        ("127.0.0.1:5000", True),
    ]
