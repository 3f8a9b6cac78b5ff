"""Fault script for issue 10 item 5: what another local user can read of a running container.

Starts this checkout's engine in a temporary root, runs a busybox container
(runc) whose environment holds a secret token and which echoes it to its
output, adds an exec with the same token, then, as user `nobody` with no
groups, tries to list every directory and read every regular file under the
engine's root and state. Prints how many it could list and read, and which
files it read the token from. Needs root, runc, busybox-static and setpriv.

    .venv/bin/python -m scripts.fault_private_bundles
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from pathlib import Path

from core.api.containerd.services.containers import v1 as containers
from core.api.containerd.services.tasks import v1 as tasks
from core.client import Client
from tests.engine_proc import EngineProcess
from tests.integration.test_task_hardening import SECRET, everything_under, read_as_nobody
from tests.integration.test_tasks import (
    cleanup_namespace,
    make_rootfs,
    process_any,
    remove_namespace_cgroups,
    rootfs_mounts,
    spec_any,
)


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="ctrdeck-fault-", dir="/tmp"))
    rootfs = make_rootfs(work)
    engine = EngineProcess().start()
    client = Client(str(engine.address), "fault")
    try:
        spec = spec_any("fault", "secretive", ["sh", "-c", "echo $SECRET_TOKEN; sleep 1000"])
        body = json.loads(spec.value)
        body["process"]["env"].append(f"SECRET_TOKEN={SECRET}")
        spec.value = json.dumps(body).encode()
        await client.containers.create(
            containers.CreateContainerRequest(
                container=containers.Container(
                    id="secretive",
                    runtime=containers.ContainerRuntime(name="io.containerd.runc.v2"),
                    spec=spec,
                )
            )
        )
        await client.tasks.create(
            tasks.CreateTaskRequest(container_id="secretive", rootfs=rootfs_mounts(rootfs))
        )
        await client.tasks.start(tasks.StartRequest(container_id="secretive"))
        exec_spec = process_any(["sleep", "1000"])
        exec_body = json.loads(exec_spec.value)
        exec_body["env"].append(f"SECRET_TOKEN={SECRET}")
        exec_spec.value = json.dumps(exec_body).encode()
        await client.tasks.exec(
            tasks.ExecProcessRequest(container_id="secretive", exec_id="peek", spec=exec_spec)
        )
        await client.tasks.start(tasks.StartRequest(container_id="secretive", exec_id="peek"))
        await asyncio.sleep(1)
        paths = everything_under(engine.root, engine.state)
        seen = read_as_nobody(paths, SECRET)
        base = str(engine.base)
        print(f"paths under root and state: {len(paths)}")
        print(f"directories nobody can list: {len(seen['L'])}")
        print(f"files nobody can read: {len(seen['R'])}")
        for path in seen["R"]:
            print(f"  read: {path.replace(base, '<base>')}")
        print(f"files nobody read the secret from: {len(seen['S'])}")
        for path in seen["S"]:
            print(f"  secret: {path.replace(base, '<base>')}")
    finally:
        await cleanup_namespace(client)
        client.close()
        engine.stop(cleanup=True)
        remove_namespace_cgroups("fault")
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
