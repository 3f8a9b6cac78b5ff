"""Regenerate screenshots/*.svg from a real engine session.

Starts a throwaway engine and a docker-registry on 127.0.0.1, pushes the test
images (busybox, a multi-layer image, a two-platform index), pulls them with
Debian's `ctr`, runs real containers through the console's own operations,
then drives the console with Pilot and saves each view as an SVG. The fleet
console's views (`nodes.svg`, `all-nodes.svg`) come from that engine beside two
more, one reached through Debian's sshd on 127.0.0.1 (tests/sshd.py), and a
node whose socket is gone. Everything it started (containers, engines, sshd,
registry, temp dirs) is removed at the end.

    .venv/bin/python scripts/screenshots.py [--out screenshots] [--only fleet]

The browser picture of `ctrdeck serve` (screenshots/serve-browser.png) comes
from the real-browser test instead:

    CTRDECK_UPDATE_SCREENSHOTS=1 .venv/bin/python -m pytest tests/tui/test_serve.py
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from textual.pilot import Pilot  # noqa: E402
from textual.widgets import Input  # noqa: E402

from core.api.containerd.services.namespaces import v1 as namespaces_api  # noqa: E402
from core.client import Client  # noqa: E402
from tests.engine_proc import EngineProcess  # noqa: E402
from tests.helpers import ctr  # noqa: E402
from tests.registry import (  # noqa: E402
    busybox_image,
    layered_image,
    multiplatform_image,
    running_registry,
)
from tests.sshd import sshd  # noqa: E402
from tests.tui.support import chatty_image, seed_container, worker_image  # noqa: E402
from tui import operations  # noqa: E402
from tui.app import CtrdeckApp, Settings  # noqa: E402
from tui.fleet import UP  # noqa: E402
from tui.fleet_app import FleetApp  # noqa: E402
from tui.nodes import parse_url  # noqa: E402
from tui.nodes_cli import FleetPlan  # noqa: E402
from tui.screens.dialogs import RunScreen  # noqa: E402
from tui.screens.processes import ProcessesScreen  # noqa: E402
from tui.spec import RunOptions  # noqa: E402

CONTAINERS = ("web-1", "web-2", "batch-7", "worker-3")


async def wait_for(pilot: Pilot[Any], predicate: Callable[[], object], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the console did not reach the expected state")
        await pilot.pause(0.1)


def status(app: CtrdeckApp, cid: str) -> str:
    row = app.state.containers.get(cid)
    return row.status if row else ""


def select(app: CtrdeckApp, cid: str) -> None:
    app.main.table("containers").select_key(cid)


async def seed(address: str, refs: dict[str, str]) -> None:
    client = Client(address, "default")
    try:
        await operations.run(client, refs["chatty"], RunOptions("web-1", "overlayfs"))
        await operations.run(client, refs["chatty"], RunOptions("web-2", "overlayfs"))
        await operations.pause_or_resume(client, "web-2")
        await operations.run(client, refs["busybox"], RunOptions("batch-7", "overlayfs"))
        await operations.run(client, refs["worker"], RunOptions("worker-3", "overlayfs"))
        await client.with_namespace("k8s.io").namespaces.create(
            namespaces_api.CreateNamespaceRequest(
                namespace=namespaces_api.Namespace(name="k8s.io", labels={"team": "platform"})
            )
        )
    finally:
        client.close()


async def cleanup(address: str) -> None:
    client = Client(address, "default")
    try:
        for cid in CONTAINERS:
            try:
                await operations.delete_container(client, cid)
            except operations.ConsoleError as exc:
                print(f"cleanup: {exc.message}", file=sys.stderr)
    finally:
        client.close()


async def shoot(address: str, refs: dict[str, str], out: Path) -> list[Path]:
    saved: list[Path] = []
    settings = Settings(address=address, namespace="default", teaching=True)
    app = CtrdeckApp(settings, connect=lambda: Client(address, "default"))

    def save(name: str) -> None:
        saved.append(Path(app.save_screenshot(f"{name}.svg", str(out))))

    async def step(pilot: Pilot[Any], keys: tuple[str, ...], ready: Callable[[], object]) -> None:
        await pilot.press(*keys)
        await wait_for(pilot, ready)
        await pilot.pause(0.6)

    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: len(app.state.containers) == len(CONTAINERS))
        await wait_for(pilot, lambda: app.state.containers["batch-7"].status == "STOPPED")
        # Two metric samples, so CPU shows a figure (worker-3 works a little).
        await wait_for(pilot, lambda: (app.state.containers["worker-3"].cpu or 0) > 0)
        # Live actions with teaching on: their events and ctr lines land in the log.
        select(app, "web-2")
        await step(pilot, ("space",), lambda: status(app, "web-2") == "RUNNING")
        await step(pilot, ("space",), lambda: status(app, "web-2") == "PAUSED")
        select(app, "web-1")
        await step(pilot, ("enter",), lambda: len(app.screen.query(".section")) > 2)
        save("inspect-container")
        await pilot.press("escape")
        await pilot.pause(0.5)
        save("main")
        await step(pilot, ("2",), lambda: app.main.table("images").row_count == 4)
        save("images")
        await step(pilot, ("r",), lambda: isinstance(app.screen, RunScreen))
        for field in app.screen.query(Input):
            field.cursor_blink = False
        app.screen.query_one("#run-env", Input).value = "GREETING=hello"
        await pilot.pause(0.3)
        save("run")
        await pilot.press("escape")
        await step(pilot, ("3",), lambda: app.main.table("snapshots").row_count > 0)
        save("snapshots")
        await step(pilot, ("2", "g", "enter"), lambda: len(app.screen.query(".section")) > 2)
        save("inspect-image")
        await step(pilot, ("escape", "1", "question_mark"), lambda: app.screen.id != "main")
        save("help")
        await pilot.press("escape")
        select(app, "web-1")
        await step(pilot, ("l",), lambda: bool(app.screen.query("#logs-view").first().lines))
        save("logs")
        await pilot.press("escape")
        select(app, "worker-3")
        await step(pilot, ("P",), lambda: isinstance(app.screen, ProcessesScreen))
        processes = cast(ProcessesScreen, app.screen)
        await wait_for(pilot, lambda: any(r.cpu for r in processes.rows.values()))
        save("processes")
        await pilot.press("escape")
        await step(
            pilot,
            ("colon", *"top", "enter"),
            lambda: app.main.table("containers").sort_by == ("cpu", True),
        )
        save("top")
        await pilot.press("escape")
        await step(pilot, ("colon", *"events", "enter"), lambda: app.main.maximized is not None)
        save("events-zoomed")
        await pilot.press("escape")
        await pilot.press("p")
        await pilot.pause(0.3)
        app.screen.query_one("#pull-ref", Input).value = refs["layered"]
        await pilot.click("#pull-plain-http")
        await pilot.click("#pull-go")
        job = app.pull_job
        assert job is not None
        await wait_for(pilot, lambda: job.finished, timeout=60)
        await pilot.pause(0.5)
        save("pull")
    async with CtrdeckApp(settings, connect=lambda: Client(address, "default")).run_test(
        size=(80, 24)
    ) as pilot:
        small = cast(CtrdeckApp, pilot.app)
        await wait_for(pilot, lambda: len(small.state.containers) == len(CONTAINERS))
        await wait_for(pilot, lambda: (small.state.containers["worker-3"].cpu or 0) > 0)
        # Something in the small event log: a resume and a pause, with their ctr lines.
        select(small, "web-2")
        await step(pilot, ("space",), lambda: status(small, "web-2") == "RUNNING")
        await step(pilot, ("space",), lambda: status(small, "web-2") == "PAUSED")
        select(small, "worker-3")
        await pilot.pause(0.5)
        saved.append(Path(small.save_screenshot("main-80x24.svg", str(out))))
    return saved


FLEET_CONTAINERS = {
    "db": ("postgres-0", "postgres-1", "backup-nightly"),
    "edge": ("haproxy", "certbot", "node-exporter", "promtail"),
}


async def shoot_fleet(address: str, out: Path) -> list[Path]:
    """The Nodes pane and the all-nodes view, over real engines and a real sshd."""
    saved: list[Path] = []
    extra = {name: EngineProcess().start() for name in FLEET_CONTAINERS}
    try:
        for name, engine in extra.items():
            client = Client(str(engine.address), "default")
            try:
                for cid in FLEET_CONTAINERS[name]:
                    await seed_container(client, cid, f"registry.example.com/{name}/{cid}:1")
            finally:
                client.close()
        with sshd("edge-1") as server:
            specs = [
                parse_url("local", address),
                parse_url("db-1", str(extra["db"].address)),
                parse_url("edge-1", f"ssh://edge-1{extra['edge'].address}"),
                parse_url("gone", "/run/nowhere/containerd.sock"),
            ]
            settings = Settings(address="", namespace="default", teaching=True)
            app = FleetApp(settings, FleetPlan(specs, server.ssh_config))
            async with app.run_test(size=(120, 36)) as pilot:
                nodes = app.fleet.nodes
                up = ("local", "db-1", "edge-1")
                await wait_for(pilot, lambda: all(nodes[n].status.phase == UP for n in up))
                await wait_for(pilot, lambda: len(app.state.containers) == len(CONTAINERS))
                await pilot.press("colon", *"node db-1", "enter")
                await pilot.pause(1.0)
                app.main.query_one("#nodes").focus()
                await pilot.pause(0.6)
                saved.append(Path(app.save_screenshot("nodes.svg", str(out))))
                await pilot.press("0")
                await pilot.pause(1.0)
                saved.append(Path(app.save_screenshot("all-nodes.svg", str(out))))
    finally:
        for engine in extra.values():
            engine.stop(cleanup=True)
    return saved


async def session(out: Path, step_timeout: float, only: str = "") -> list[Path]:
    engine = EngineProcess().start()
    address = str(engine.address)
    try:
        with running_registry() as registry:
            refs = {
                "busybox": registry.push(busybox_image(), "library/busybox", "1.36"),
                "chatty": registry.push(chatty_image(), "demo/web", "1.0"),
                "layered": registry.push(layered_image(), "demo/layered", "2"),
                "multi": registry.push(multiplatform_image(), "demo/multi", "latest"),
                "worker": registry.push(worker_image(), "demo/worker", "1.0"),
            }
            for name in ("busybox", "chatty", "multi", "worker"):
                ctr(engine.address, "images", "pull", "--plain-http", refs[name])
            try:
                await seed(address, refs)
                saved = []
                if only != "fleet":
                    saved += await asyncio.wait_for(shoot(address, refs, out), step_timeout)
                return saved + await asyncio.wait_for(shoot_fleet(address, out), step_timeout)
            finally:
                await cleanup(address)
    finally:
        engine.stop(cleanup=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.add_argument("--only", choices=("fleet",), help="only the fleet console's views")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("TZ", "UTC")
    time.tzset()
    saved = asyncio.run(session(args.out, args.timeout, args.only or ""))
    for path in saved:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
