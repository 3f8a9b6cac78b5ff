"""Regenerate screenshots/pods.svg: the console's Pods view from a real session with pods.

Starts a throwaway engine in a network namespace of its own (CNI bridge, as
the CRI integration tests do), runs three pods through our CRI client (a web
pod with a server and a sidecar, a job whose container has exited, a pod that
is stopped), opens the console, types `:pods` and saves the view. Everything
it started (pods, engine, netns, temp dirs) is removed at the end.

    .venv/bin/python scripts/screenshot_pods.py [--out screenshots]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.api.runtime import v1 as cri  # noqa: E402
from core.client import Client  # noqa: E402
from tests.integration.test_cri import (  # noqa: E402
    APP,
    PAUSE,
    Node,
    _image,
    _import,
    _remove_all,
    _test_netns,
    container_config,
    pod_config,
)
from tui.app import CtrdeckApp, Settings  # noqa: E402
from tui.commands import PODS  # noqa: E402
from tui.widgets.pods_table import PodsTable  # noqa: E402


async def seed(node: Node, tmp: Path) -> None:
    rt = node.runtime

    async def pod(name: str, namespace: str, containers: list[cri.ContainerConfig]) -> str:
        config = pod_config(name, tmp)
        config.metadata.namespace = namespace
        config.labels = {"app": name}
        sid = (await rt.run_pod_sandbox(cri.RunPodSandboxRequest(config=config))).pod_sandbox_id
        for c in containers:
            created = await rt.create_container(
                cri.CreateContainerRequest(pod_sandbox_id=sid, config=c, sandbox_config=config)
            )
            await rt.start_container(cri.StartContainerRequest(container_id=created.container_id))
        return sid

    await pod("web-7d9f", "shop", [
        container_config("nginx", "sh", "-c", "exec httpd -f -p 8080"),
        container_config("log-shipper", "sleep", "100000"),
    ])  # fmt: skip
    await pod("report-28431", "batch", [container_config("report", "sh", "-c", "exit 0")])
    stopped = await pod("cache-0", "shop", [container_config("redis", "sleep", "100000")])
    await rt.stop_pod_sandbox(cri.StopPodSandboxRequest(pod_sandbox_id=stopped))


async def shoot(node: Node, out: Path) -> Path:
    address = str(node.engine.address)
    settings = Settings(address=address, namespace="default")
    app = CtrdeckApp(settings, connect=lambda: Client(address, "default"))
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.press(":", *"pods", "enter")
        table = app.screen.query_one(f"#{PODS}", PodsTable)
        deadline = time.monotonic() + 30
        while not (table.row_count == 7 and sum(1 for v in table.ips.values() if v) == 3):
            if time.monotonic() > deadline:
                rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
                raise SystemExit(f"the Pods view did not fill in time: {rows} {table.ips}")
            await pilot.pause(0.1)
        await pilot.press("j")
        await pilot.pause(0.8)
        return Path(app.save_screenshot("pods.svg", str(out)))


async def session(out: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="shot-pods-"))
    try:
        with _test_netns() as netns:
            node = Node(tmp, netns)
            node.start()
            try:
                _import(node.engine, _image(("sleep", "1000000")), PAUSE, tmp)
                _import(node.engine, _image(("sh",)), APP, tmp)
                await seed(node, tmp)
                return await shoot(node, out)
            finally:
                with contextlib.suppress(Exception):
                    await _remove_all(node)
                node.close()
                node.engine.stop()
                subprocess.run(["umount", "-R", str(node.engine.base)], capture_output=True)
                shutil.rmtree(node.engine.base, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    args = parser.parse_args()
    os.environ.setdefault("TZ", "UTC")
    print(asyncio.run(session(args.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
