"""Small helpers shared by integration tests: running ctr, making blobs."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
from pathlib import Path


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def ctr(
    address: Path | str,
    *args: str,
    namespace: str = "default",
    check: bool = True,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """Run Debian's ctr against the engine; fail with its stderr when asked to check."""
    proc = subprocess.run(
        ["ctr", "--address", str(address), "--namespace", namespace, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"ctr {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


async def eventually(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll an (async or plain) predicate until it returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(interval)
