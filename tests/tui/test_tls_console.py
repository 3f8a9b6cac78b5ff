"""The console on a `tcp://` node over mutual TLS, with certificates the test makes.

The console attaches to the engine's TLS listener with a client certificate,
shows what the engine holds (an image seeded through the Unix socket), and its
engine view lists the listeners with their security. With a certificate the
engine does not trust, the banner says so, naming the host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from textual.widgets import Static

from core import status
from core.client import Client, ClientTLS
from tests.engine_proc import EngineProcess
from tests.tls_certs import Pki, make_pki
from tests.tui.support import seed_image, until
from tests.tui.test_console import plain
from tests.tui.test_engine_view import engine_view, view_text
from tui.app import CtrdeckApp, Settings
from tui.screens.main import MainScreen

pytestmark = pytest.mark.integration


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


@pytest.fixture
def mtls_engine(pki: Pki) -> Iterator[EngineProcess]:
    config = (
        'version = 2\n[grpc]\ntcp_address = "127.0.0.1:0"\n'
        f'tcp_tls_cert = "{pki.server_cert}"\ntcp_tls_key = "{pki.server_key}"\n'
        f'tcp_tls_ca = "{pki.ca}"\n'
    )
    proc = EngineProcess(config=config).start()
    try:
        yield proc
    finally:
        proc.stop(cleanup=True)


@pytest.fixture
async def tcp_address(mtls_engine: EngineProcess) -> AsyncIterator[str]:
    found = await status.probe(str(mtls_engine.address))
    yield next(x.address for x in found.listeners if x.address.startswith("tcp://"))


def tcp_console(address: str, tls: ClientTLS) -> CtrdeckApp:
    settings = Settings(address=address, namespace="default", tls=tls)
    return CtrdeckApp(settings, connect=lambda: Client(address, "default", tls=tls))


def banner(app: CtrdeckApp) -> str:
    return plain(app.main.query_one("#banner", Static))


async def test_console_attaches_over_mutual_tls(
    mtls_engine: EngineProcess, tcp_address: str, pki: Pki
) -> None:
    async with Client(str(mtls_engine.address), "default") as local:
        await seed_image(local, "docker.io/library/busybox:tls")
    tls = ClientTLS(ca=str(pki.ca), cert=str(pki.client_cert), key=str(pki.client_key))
    app = tcp_console(tcp_address, tls)
    async with app.run_test(size=(200, 36)) as pilot:
        await until(pilot, lambda: app.state.connected)
        await until(pilot, lambda: any("busybox:tls" in str(k) for k in app.state.images))
        await pilot.press("e")
        screen = await engine_view(pilot)
        text = view_text(screen)
        assert f"{tcp_address}  mTLS" in text
        assert f"unix://{mtls_engine.address}  plaintext" in text
        await pilot.press("escape")
        await until(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_console_says_why_an_untrusted_certificate_is_refused(
    tcp_address: str, pki: Pki
) -> None:
    tls = ClientTLS(ca=str(pki.ca), cert=str(pki.other_client_cert), key=str(pki.other_client_key))
    app = tcp_console(tcp_address, tls)
    async with app.run_test(size=(200, 36)) as pilot:
        host = tcp_address.removeprefix("tcp://")
        await until(pilot, lambda: "refused this client's certificate" in banner(app))
        assert host in banner(app)
        assert not app.state.connected
