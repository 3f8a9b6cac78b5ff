"""The CRI's own records of pods and containers, as JSON files under the engine's root.

The containerd API has no room for a pod's CRI config, its network
attachment or a container's log path and exit reason, so each pod and
container also has a small record here, written atomically (and fsynced)
before the call that made it returns. A restarted engine reads them back, and
with them finds the netns to DEL from and the logs to reopen.
"""

from __future__ import annotations

import base64
import functools
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import betterproto2

Parsed = TypeVar("Parsed", bound=betterproto2.Message)


@dataclass
class SandboxRecord:
    id: str
    name: str
    config: str  # the PodSandboxConfig's wire bytes, base64
    runtime_handler: str
    netns: str
    created_at: int
    state: str = "ready"
    network: dict[str, Any] = field(default_factory=dict)
    pid: int = 0


@dataclass
class ContainerRecord:
    id: str
    sandbox_id: str
    name: str
    config: str  # the ContainerConfig's wire bytes, base64
    image_ref: str
    image_name: str
    log_path: str
    created_at: int
    started_at: int = 0
    finished_at: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""


def encode(message_bytes: bytes) -> str:
    return base64.b64encode(message_bytes).decode()


def decode(text: str) -> bytes:
    return base64.b64decode(text)


@functools.lru_cache(maxsize=8192)
def parsed(message: type[Parsed], encoded: str) -> Parsed:
    """A record's CRI config, parsed once per distinct encoding: List walks every record."""
    return message.parse(decode(encoded))


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        for kind in ("sandboxes", "containers"):
            (root / kind).mkdir(parents=True, exist_ok=True, mode=0o700)

    def _path(self, kind: str, record_id: str) -> Path:
        return self.root / kind / f"{record_id}.json"

    def _save(self, kind: str, record_id: str, data: dict[str, Any]) -> None:
        path = self._path(kind, record_id)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(data).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(path)

    def save_sandbox(self, record: SandboxRecord) -> None:
        self._save("sandboxes", record.id, asdict(record))

    def save_container(self, record: ContainerRecord) -> None:
        self._save("containers", record.id, asdict(record))

    def delete_sandbox(self, sandbox_id: str) -> None:
        self._path("sandboxes", sandbox_id).unlink(missing_ok=True)

    def delete_container(self, container_id: str) -> None:
        self._path("containers", container_id).unlink(missing_ok=True)

    def _load(self, kind: str) -> list[dict[str, Any]]:
        out = []
        for path in sorted((self.root / kind).glob("*.json")):
            try:
                out.append(json.loads(path.read_text()))
            except (OSError, ValueError):
                continue
        return out

    def sandboxes(self) -> list[SandboxRecord]:
        return [SandboxRecord(**d) for d in self._load("sandboxes")]

    def containers(self) -> list[ContainerRecord]:
        return [ContainerRecord(**d) for d in self._load("containers")]
