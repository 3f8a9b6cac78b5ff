"""The Pods view against a real engine serving the CRI: `:pods`, the nesting, and its actions.

A host-network pod (no CNI needed) with one container is made through our CRI
client; the console groups it from the containers' labels alone, then execs
in the container (`x`), stops the pod (`s`) and removes it (`D`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from grpclib.client import Channel
from textual.widgets import Input

from core.api.runtime import v1 as cri
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.integration.test_cri import APP, PAUSE, _image, _import, _remove_namespace_cgroups
from tests.tui.support import until
from tui.app import CtrdeckApp
from tui.commands import PODS
from tui.console import Settings
from tui.screens.inspect import InspectScreen
from tui.screens.main import MainScreen
from tui.screens.pods import ExecScreen
from tui.widgets.pods_table import PodsTable

SIZE = (120, 36)
HOST_NETWORK = cri.LinuxPodSandboxConfig(
    security_context=cri.LinuxSandboxSecurityContext(
        namespace_options=cri.NamespaceOption(network=cri.NamespaceMode.NODE)
    )
)


@pytest.fixture
def cri_engine(tmp_path: Path) -> Iterator[EngineProcess]:
    config = f'version = 2\n[plugins."io.containerd.grpc.v1.cri"]\nsandbox_image = "{PAUSE}"\n'
    config += "restrict_oom_score_adj = true\n"
    engine = EngineProcess(config=config, log_level="info").start()
    try:
        _import(engine, _image(("sleep", "1000000")), PAUSE, tmp_path)
        _import(engine, _image(("sh",)), APP, tmp_path)
        yield engine
    finally:
        engine.stop(cleanup=True)
        _remove_namespace_cgroups()


@pytest.fixture
async def pod(cri_engine: EngineProcess) -> AsyncIterator[tuple[str, str]]:
    channel = Channel(path=str(cri_engine.address))
    rt = cri.RuntimeServiceStub(channel)
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name="web", uid="uid-web", namespace="shop"),
        hostname="web", linux=HOST_NETWORK,
    )  # fmt: skip
    sid = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
    cid = (await rt.create_container(cri.CreateContainerRequest(
        pod_sandbox_id=sid, sandbox_config=config,
        config=cri.ContainerConfig(metadata=cri.ContainerMetadata(name="server"),
                                   image=cri.ImageSpec(image=APP), command=["sleep", "100000"]),
    ))).container_id  # fmt: skip
    await rt.start_container(cri.StartContainerRequest(container_id=cid))
    try:
        yield sid, cid
    finally:
        await rt.remove_pod_sandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=sid))
        channel.close()


def _app(engine: EngineProcess) -> CtrdeckApp:
    address = str(engine.address)
    settings = Settings(address=address, namespace="default")
    return CtrdeckApp(settings, connect=lambda: Client(address, "default"))


async def test_pods_view_nests_containers_and_acts(
    cri_engine: EngineProcess, pod: tuple[str, str]
) -> None:
    sid, cid = pod
    app = _app(cri_engine)
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, MainScreen)
        await pilot.press(":", *"pods", "enter")
        table = screen.query_one(f"#{PODS}", PodsTable)
        await until(pilot, lambda: table.row_count == 2)
        assert app.state.namespace == "k8s.io" and screen.focused_pane() == PODS
        first = table.get_row_at(0)
        assert str(first[0]) == "shop/web" and str(first[1]) == "READY"
        assert str(first[4]) == sid[:13]
        assert str(table.get_row_at(1)[0]) == "└ server" and str(table.get_row_at(1)[4]) == cid[:13]

        await pilot.press("j", "x")
        await until(pilot, lambda: isinstance(app.screen, ExecScreen))
        app.screen.query_one(Input).value = "sh -c 'echo hi; exit 3'"
        await pilot.press("enter")
        await until(pilot, lambda: isinstance(app.screen, InspectScreen))
        await until(pilot, lambda: "hi" in _text(app) and "3" in _text(app))
        await pilot.press("escape")

        await pilot.press("k", "s")
        await pilot.press("y")
        await until(
            pilot, lambda: table.row_count == 2 and str(table.get_row_at(0)[1]) == "NOTREADY"
        )
        await pilot.press("D", "y")
        await until(pilot, lambda: table.row_count == 0)


def _text(app: CtrdeckApp) -> str:
    return " ".join(str(w.render()) for w in app.screen.query("Static"))
