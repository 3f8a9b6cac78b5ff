"""TLS on the engine's TCP listener, with certificates the test makes (tests/tls_certs.py).

With `tcp_tls_cert`, `tcp_tls_key` and `tcp_tls_ca` the engine serves mutual
TLS: grpcurl and the project's client (library and `ctrdeck` commands) connect
with a client certificate from the CA; without one, with one from another CA,
over plaintext, or trusting the wrong CA they are refused with an error that
names the host and says what to do. A certificate for another name is refused
by the client. Reflection and the metrics' call counts work over TLS, the
engine reports each listener and how it is secured, and a plaintext listener
off loopback refuses to start unless `tcp_insecure = true` says so.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from core import status
from core.client import Client, ClientTLS
from core.tls import ConnectFailed
from tests.engine_proc import EngineProcess, run_cli
from tests.integration.test_grpcurl import _free_port, _grpcurl
from tests.tls_certs import Pki, make_pki

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_config(pki: Pki, *, ca: bool = True, cert: Path | None = None, extra: str = "") -> str:
    lines = [
        "version = 2",
        "[grpc]",
        'tcp_address = "127.0.0.1:0"',
        f'tcp_tls_cert = "{cert or pki.server_cert}"',
        f'tcp_tls_key = "{(cert or pki.server_cert).with_suffix(".key")}"',
    ]
    if ca:
        lines.append(f'tcp_tls_ca = "{pki.ca}"')
    return "\n".join(lines) + "\n" + extra


def tcp_listener(engine: EngineProcess) -> tuple[str, str]:
    return asyncio.run(reported_tcp(engine))


async def reported_tcp(engine: EngineProcess) -> tuple[str, str]:
    """The engine's TCP address (`tcp://127.0.0.1:PORT`) and its security, as it reports them."""
    found = await status.probe(str(engine.address))
    assert found.answering, found.problem
    tcp = [x for x in found.listeners if x.address.startswith("tcp://")]
    assert len(tcp) == 1, found.listeners
    return tcp[0].address, tcp[0].security


@pytest.fixture(scope="module")
def mtls_engine(pki: Pki) -> Iterator[tuple[EngineProcess, str]]:
    metrics_port = _free_port()
    proc = EngineProcess(
        config=tls_config(pki, extra=f'[metrics]\naddress = "127.0.0.1:{metrics_port}"\n')
    ).start()
    try:
        address, security = tcp_listener(proc)
        assert security == "mtls"
        yield proc, address
    finally:
        proc.stop(cleanup=True)


def client_tls(pki: Pki) -> ClientTLS:
    return ClientTLS(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))


def where(address: str) -> str:
    return address.removeprefix("tcp://")


# --- the project's client --------------------------------------------------------------


async def test_client_connects_with_mutual_tls(mtls_engine, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    engine, address = mtls_engine
    async with Client(address, "default", tls=client_tls(pki)) as client:
        version = await client.server_version()
        assert "ctrdeck" in version.version
        # A second stub on the same channel: one handshake, many calls.
        from core.api.containerd.services.namespaces import v1 as namespaces

        listed = await client.namespaces.list(namespaces.ListNamespacesRequest())
        assert isinstance(listed.namespaces, list)
    found = await status.probe(address, tls=client_tls(pki))
    assert found.answering, found.problem
    assert [(x.kind, x.address, x.security) for x in found.listeners] == [
        ("grpc", f"unix://{engine.address}", "plaintext"),
        ("grpc", address, "mtls"),
        ("metrics", found.listeners[2].address, "plaintext"),
    ]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no client certificate", "requires a client certificate"),
        ("client certificate from another CA", "refused this client's certificate"),
        ("plaintext", "closed the connection before answering"),
        ("trusting another CA", "signed by a CA this client does not trust"),
    ],
)
async def test_client_is_refused_in_words(mtls_engine, pki: Pki, case: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    _, address = mtls_engine
    tls: ClientTLS | None = {
        "no client certificate": ClientTLS(ca=str(pki.ca)),
        "client certificate from another CA": ClientTLS(
            ca=str(pki.ca), cert=str(pki.other_client_cert), key=str(pki.other_client_key)
        ),
        "plaintext": None,
        "trusting another CA": ClientTLS(
            ca=str(pki.other_ca), cert=str(pki.client_cert), key=str(pki.client_key)
        ),
    }[case]
    client = Client(address, "default", tls=tls, timeout=10)
    try:
        with pytest.raises(ConnectFailed) as caught:
            await client.server_version()
    finally:
        client.close()
    message = str(caught.value)
    assert expected in message
    assert where(address) in message
    down = await status.probe(address, tls=tls)
    assert not down.answering
    assert expected in down.problem


async def test_a_certificate_for_another_name_is_refused(pki: Pki) -> None:
    engine = EngineProcess(config=tls_config(pki, ca=False, cert=pki.wrong_name_cert)).start()
    try:
        address, security = await reported_tcp(engine)
        assert security == "tls"
        client = Client(address, "default", tls=ClientTLS(ca=str(pki.ca)), timeout=10)
        try:
            with pytest.raises(ConnectFailed) as caught:
                await client.server_version()
        finally:
            client.close()
        assert "not issued for that name" in str(caught.value)
        assert where(address) in str(caught.value)
    finally:
        engine.stop(cleanup=True)


async def test_tls_without_a_ca_serves_any_client(pki: Pki) -> None:
    engine = EngineProcess(config=tls_config(pki, ca=False)).start()
    try:
        address, security = await reported_tcp(engine)
        assert security == "tls"
        async with Client(address, "default", tls=ClientTLS(ca=str(pki.ca))) as client:
            assert "ctrdeck" in (await client.server_version()).version
        # A client that expects plaintext is told the listener speaks TLS.
        plain = Client(address, "default", timeout=10)
        try:
            with pytest.raises(ConnectFailed, match="closed the connection before answering"):
                await plain.server_version()
        finally:
            plain.close()
    finally:
        engine.stop(cleanup=True)


# --- grpcurl, reflection and metrics --------------------------------------------------------


def test_grpcurl_with_mutual_tls_lists_calls_and_is_counted(mtls_engine, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    _, address = mtls_engine
    grpcurl = _grpcurl()
    creds = ["-cacert", str(pki.ca), "-cert", str(pki.client_cert), "-key", str(pki.client_key)]
    target = where(address)
    listed = subprocess.run(
        [grpcurl, *creds, target, "list"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.split()
    assert "containerd.services.images.v1.Images" in listed
    assert "grpc.health.v1.Health" in listed
    called = subprocess.run(
        [
            grpcurl,
            *creds,
            "-H",
            "containerd-namespace: default",
            target,
            "containerd.services.version.v1.Version/Version",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "ctrdeck" in json.loads(called)["version"]
    refused = subprocess.run(
        [grpcurl, "-cacert", str(pki.ca), target, "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
    plaintext = subprocess.run(
        [grpcurl, "-plaintext", target, "list"], capture_output=True, text=True, timeout=30
    )
    assert plaintext.returncode != 0
    found = asyncio.run(status.probe(address, tls=client_tls(pki)))
    metrics_url = next(x.address for x in found.listeners if x.kind == "metrics")
    with urllib.request.urlopen(metrics_url, timeout=10) as resp:
        scraped = resp.read().decode()
    assert any(
        line.startswith("ctrdeck_grpc_requests_total{")
        and "/containerd.services.version.v1.Version/Version" in line
        for line in scraped.splitlines()
    ), scraped


# --- the ctrdeck commands ----------------------------------------------------------------


def test_commands_take_tls_options(mtls_engine, pki: Pki) -> None:  # type: ignore[no-untyped-def]
    engine, address = mtls_engine
    creds = ["--tls-ca", str(pki.ca), "--tls-cert", str(pki.client_cert)]
    creds += ["--tls-key", str(pki.client_key)]
    shown = run_cli("engine", "status", "-a", address, *creds)
    assert shown.returncode == 0, shown.stderr
    assert f"{address}  mTLS" in shown.stdout
    assert f"unix://{engine.address}  plaintext" in shown.stdout
    as_json = json.loads(run_cli("engine", "status", "--json", "-a", address, *creds).stdout)
    assert {"kind": "grpc", "address": address, "security": "mtls"} in as_json["listeners"]
    # Reaching the engine is proven by its answer about an image it does not have.
    removed = run_cli("images", "rm", "-a", address, *creds, "no-such-image")
    assert removed.returncode == 1
    assert "not found" in removed.stderr
    refused = run_cli("engine", "status", "-a", address, "--tls-ca", str(pki.ca))
    assert refused.returncode == 1
    assert "requires a client certificate" in refused.stderr
    assert where(address) in refused.stderr
    assert "Traceback" not in refused.stderr
    console = run_cli("-a", address, "--tls-ca", str(pki.other_ca))
    assert console.returncode == 1
    assert "does not trust" in console.stdout
    assert where(address) in console.stdout
    assert "Traceback" not in console.stdout + console.stderr
    wrong = run_cli("engine", "status", "-a", str(engine.address), "--tls-ca", str(pki.ca))
    assert wrong.returncode == 2
    assert "only for a tcp://host:port address" in wrong.stderr
    serve = run_cli("engine", "-a", address, "--root", "/nonexistent/r")
    assert serve.returncode == 2
    assert "the TCP listener is [grpc] tcp_address and tcp_tls_*" in serve.stderr


# --- the listener's settings ---------------------------------------------------------------


def run_engine(base: Path, config: str) -> subprocess.CompletedProcess[str]:
    """`ctrdeck engine` with `config`, expected to refuse to start."""
    base.mkdir(parents=True, exist_ok=True)
    (base / "config.toml").write_text(config)
    cmd = ["engine", "--config", str(base / "config.toml"), "--root", str(base / "root")]
    cmd += ["--state", str(base / "state"), "--address", str(base / "s.sock")]
    return run_cli(*cmd)


def test_plaintext_off_loopback_refuses_to_start(tmp_path: Path) -> None:
    refused = run_engine(tmp_path, 'version = 2\n[grpc]\ntcp_address = "0.0.0.0:0"\n')
    assert refused.returncode == 2
    assert "grpc.tcp_address" in refused.stderr
    assert "not a loopback address and the listener has no TLS" in refused.stderr
    assert "tcp_insecure = true" in refused.stderr
    assert not (tmp_path / "s.sock").exists()


def test_plaintext_off_loopback_starts_when_the_config_says_so() -> None:
    engine = EngineProcess(
        config='version = 2\n[grpc]\ntcp_address = "0.0.0.0:0"\ntcp_insecure = true\n'
    ).start()
    try:
        address, security = tcp_listener(engine)
        assert address.startswith("tcp://0.0.0.0:")
        assert security == "plaintext"
        log = engine.log.read_text()
        assert "serving gRPC on tcp://0.0.0.0:" in log
        assert "plaintext off loopback (grpc.tcp_insecure = true)" in log
    finally:
        engine.stop(cleanup=True)


def test_unreadable_certificates_refuse_to_start(tmp_path: Path, pki: Pki) -> None:
    missing = tmp_path / "missing.pem"
    refused = run_engine(
        tmp_path,
        tls_config(pki).replace(str(pki.server_cert), str(missing)),
    )
    assert refused.returncode == 1
    assert f"grpc.tcp_tls_cert {missing}: no such file" in refused.stderr
    assert not (tmp_path / "s.sock").exists()
    mismatched = run_engine(
        tmp_path / "b", tls_config(pki).replace(str(pki.server_key), str(pki.client_key))
    )
    assert mismatched.returncode == 1
    assert "is not the private key of grpc.tcp_tls_cert" in mismatched.stderr


async def test_nothing_listening_is_said_in_words() -> None:
    address = f"tcp://127.0.0.1:{_free_port()}"
    client = Client(address, "default", tls=ClientTLS(), timeout=10)
    try:
        with pytest.raises(ConnectFailed, match=f"nothing is listening on {where(address)}"):
            await client.server_version()
    finally:
        client.close()


def test_a_tcp_address_in_use_refuses_to_start(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = run_engine(tmp_path, f'version = 2\n[grpc]\ntcp_address = "127.0.0.1:{port}"\n')
    assert refused.returncode == 1
    assert f"grpc.tcp_address 127.0.0.1:{port} is already in use" in refused.stderr
    assert not (tmp_path / "s.sock").exists()
