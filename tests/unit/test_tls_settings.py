"""The TCP listener's TLS settings, the loopback rule, listener exports, and client options.

Config: containerd's `tcp_tls_*` keys and our `tcp_insecure` round-trip through
`ctrdeck config default`'s TOML, go together, and a plaintext listener off
loopback is refused with the reason and the way out. Clients: addresses and
TLS flags are checked before anything connects.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from core import listeners
from core.client import ClientTLS, open_channel, tcp_host_port
from core.config import from_dict, load, render_toml
from core.errors import InvalidArgument
from core.tls import TCPChannel, listener_security, server_context
from tests.tls_certs import Pki, make_pki
from tui import launcher


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def grpc(**keys: object) -> dict[str, object]:
    return {"version": 2, "grpc": keys}


def test_tls_keys_round_trip(tmp_path: Path) -> None:
    cfg = from_dict(
        grpc(
            tcp_address="0.0.0.0:10000",
            tcp_tls_cert="/etc/ctrdeck/tls/server.pem",
            tcp_tls_key="/etc/ctrdeck/tls/server.key",
            tcp_tls_ca="/etc/ctrdeck/tls/ca.pem",
        )
    )
    text = render_toml(cfg)
    assert 'tcp_tls_ca = "/etc/ctrdeck/tls/ca.pem"' in text
    assert "tcp_insecure = false" in text
    (tmp_path / "c.toml").write_text(text)
    assert load(tmp_path / "c.toml") == cfg


def test_default_config_shows_the_keys_empty() -> None:
    text = render_toml(from_dict({}))
    for line in ('tcp_tls_ca = ""', 'tcp_tls_cert = ""', 'tcp_tls_key = ""'):
        assert line in text


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ({"tcp_tls_cert": "/c.pem"}, "grpc.tcp_tls_key: must be set with grpc.tcp_tls_cert"),
        ({"tcp_tls_key": "/k.pem"}, "grpc.tcp_tls_cert: must be set with grpc.tcp_tls_key"),
        ({"tcp_tls_ca": "/ca.pem"}, "grpc.tcp_tls_ca: requires grpc.tcp_tls_cert"),
        ({"tcp_tls_cert": "c.pem", "tcp_tls_key": "/k"}, "must be an absolute path"),
        ({"tcp_insecure": "yes"}, "grpc.tcp_insecure: expected true or false"),
        ({"tcp_address": "10000"}, "grpc.tcp_address: must be host:port"),
        ({"tcp_address": "0.0.0.0:10000"}, "is not a loopback address and the listener has no TLS"),
        ({"tcp_address": "[::]:10000"}, "Set grpc.tcp_tls_cert and grpc.tcp_tls_key"),
        ({"tcp_address": "node1.example:10000"}, "or grpc.tcp_insecure = true"),
    ],
)
def test_bad_tls_settings_are_refused(keys: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        from_dict(grpc(**keys), source="config.toml")
    assert problem in str(caught.value)
    assert str(caught.value).startswith("config.toml: grpc.")


@pytest.mark.parametrize(
    "keys",
    [
        {"tcp_address": "127.0.0.1:10000"},
        {"tcp_address": "127.8.9.10:10000"},
        {"tcp_address": "[::1]:10000"},
        {"tcp_address": "localhost:10000"},
        {"tcp_address": "0.0.0.0:10000", "tcp_insecure": True},
        {"tcp_address": "0.0.0.0:10000", "tcp_tls_cert": "/c", "tcp_tls_key": "/k"},
    ],
)
def test_allowed_listeners(keys: dict[str, object]) -> None:
    cfg = from_dict(grpc(**keys))
    assert cfg.grpc.tcp_address == keys["tcp_address"]


def test_listener_security_and_exports() -> None:
    assert listener_security("", "") == "plaintext"
    assert listener_security("/c", "") == "tls"
    assert listener_security("/c", "/ca") == "mtls"
    facts = listeners.exports("/run/x.sock", "127.0.0.1:10000", "mtls", "127.0.0.1:1338")
    assert listeners.from_exports(facts) == [
        listeners.Listener("grpc", "unix:///run/x.sock", "plaintext"),
        listeners.Listener("grpc", "tcp://127.0.0.1:10000", "mtls"),
        listeners.Listener("metrics", "http://127.0.0.1:1338/metrics", "plaintext"),
    ]
    assert listeners.from_exports({}) == []
    assert listeners.format_tcp("::1", 5) == "[::1]:5"


def test_server_context_requires_client_certificates_only_with_a_ca(pki: Pki) -> None:
    import ssl

    mtls = server_context(str(pki.server_cert), str(pki.server_key), str(pki.ca))
    assert mtls.verify_mode == ssl.CERT_REQUIRED
    assert len(mtls.get_ca_certs()) == 1
    tls = server_context(str(pki.server_cert), str(pki.server_key))
    assert tls.verify_mode == ssl.CERT_NONE
    with pytest.raises(InvalidArgument, match=r"grpc\.tcp_tls_ca .*: not a PEM CA certificate"):
        server_context(str(pki.server_cert), str(pki.server_key), str(pki.server_key))


async def test_tcp_addresses() -> None:
    assert tcp_host_port("tcp://10.0.0.5:10000") == ("10.0.0.5", 10000)
    assert tcp_host_port("tcp://[fd00::5]:10000") == ("fd00::5", 10000)
    for bad in ("tcp://host", "tcp://:10", "tcp://h:99999"):
        with pytest.raises(InvalidArgument, match="must be tcp://host:port"):
            tcp_host_port(bad)
    assert isinstance(open_channel("tcp://127.0.0.1:1", None), TCPChannel)
    with pytest.raises(InvalidArgument, match="apply to tcp:// addresses"):
        open_channel("/run/x.sock", ClientTLS())
    with pytest.raises(InvalidArgument, match="use a socket path, unix:// or tcp://"):
        open_channel("https://node:443", None)


def args(address: str, **flags: object) -> argparse.Namespace:
    defaults = {"tls_ca": None, "tls_cert": None, "tls_key": None, "plaintext": False}
    return argparse.Namespace(address=address, **{**defaults, **flags})


def test_launcher_target(pki: Pki) -> None:
    assert launcher.target(args("unix:///run/x.sock")) == launcher.Target("/run/x.sock")
    assert launcher.target(args("tcp://h:1", plaintext=True)) == launcher.Target("tcp://h:1")
    # TLS is the default over TCP, against the system's roots without --tls-ca.
    assert launcher.target(args("tcp://h:1")).tls == ClientTLS()
    full = launcher.target(
        args(
            "tcp://h:1",
            tls_ca=str(pki.ca),
            tls_cert=str(pki.client_cert),
            tls_key=str(pki.client_key),
        )
    )
    assert full.tls == ClientTLS(str(pki.ca), str(pki.client_cert), str(pki.client_key))
    for bad, problem in [
        (args("/run/x.sock", tls_ca="/ca"), "--tls-ca: only for a tcp://host:port address"),
        (args("tcp://h:1", plaintext=True, tls_ca="/ca"), "--plaintext contradicts --tls-ca"),
        (args("tcp://h:1", tls_key=str(pki.client_key)), "--tls-key needs --tls-cert"),
        (args("tcp://h:1", tls_ca="/nonexistent.pem"), "--tls-ca /nonexistent.pem: no such file"),
        (
            args("tcp://h:1", tls_cert=str(pki.client_cert), tls_key=str(pki.server_key)),
            "is not the private key of --tls-cert",
        ),
    ]:
        with pytest.raises(launcher.LaunchError, match=problem):
            launcher.target(bad)


def test_engine_stop_refuses_a_tcp_address() -> None:
    with pytest.raises(launcher.LaunchError, match="run it on the engine's host"):
        launcher.stop("tcp://127.0.0.1:1")
