"""The Pods table: each pod (state, IP, age) with its containers nested under it.

Rows are keyed `(pod sort key, pod uid, container id)`, the pod's own row with
an empty container id, so the table's key order puts each pod's containers
right under it. Pod IPs are read once per pause container (`tui.pods`) and
kept; everything shown is plain text.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from rich.text import Text
from textual.binding import Binding

from tui import commands
from tui.commands import PODS
from tui.pods import CONTAINER_NAME, Pod, group
from tui.state import ContainerRow, age
from tui.widgets.tables import Cells, Column, ResourceTable, fit

IpLookup = Callable[[str], Awaitable[str]]


class PodsTable(ResourceTable):
    PANE = PODS
    BINDINGS: ClassVar[list[Binding]] = commands.bindings(PODS)
    COLUMNS = (
        Column("name", "POD / CONTAINER", 30, essential=True),
        Column("state", "STATE", 12, essential=True),
        Column("ip", "IP", 15, keep=4),
        Column("age", "AGE", 6, keep=3),
        Column("id", "ID", 14, keep=2),
        Column("image", "IMAGE", 24, keep=1),
    )

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.ips: dict[str, str] = {}
        self.pods: dict[str, Pod] = {}
        self._asked: set[str] = set()
        self._last: tuple[Mapping[str, ContainerRow], datetime, Mapping[str, str]] | None = None

    @staticmethod
    def pod_cells(pod: Pod, ip: str, now: datetime, styles: Mapping[str, str]) -> Cells:
        created = pod.sandbox.created if pod.sandbox is not None else None
        style = styles.get("RUNNING" if pod.state == "READY" else "dim", "")
        return {
            "name": fit(f"{pod.namespace}/{pod.name}", 30),
            "state": Text.styled(pod.state, style),
            # A stopped pod's address is released: the recorded one is no longer its own.
            "ip": (ip or "-") if pod.state == "READY" else "-",
            "age": age(created, now),
            "id": pod.id[:13] or "-",
            "image": "",
        }

    @staticmethod
    def container_cells(row: ContainerRow, last: bool, now: datetime,
                        styles: Mapping[str, str]) -> Cells:  # fmt: skip
        # A CRI container's task goes once it exits: no task is "-", as in Containers.
        status = row.status or "-"
        label = f"EXITED({row.exit_status})" if status == "STOPPED" else status
        branch = "└ " if last else "├ "
        return {
            "name": fit(branch + row.labels.get(CONTAINER_NAME, row.id), 30),
            "state": Text.styled(label, styles.get(status, styles.get("dim", ""))),
            "ip": "",
            "age": age(row.created, now),
            "id": row.id[:13],
            "image": fit(row.image, 24, keep_right=True),
        }

    def show(
        self,
        containers: Mapping[str, ContainerRow],
        now: datetime,
        styles: Mapping[str, str],
        lookup: IpLookup | None,
    ) -> None:
        self._last = (containers, now, styles)
        pods = group(containers)
        self.pods = {p.uid: p for p in pods}
        rows: dict[Hashable, Cells] = {}
        for pod in pods:
            sort = f"{pod.namespace}/{pod.name}"
            rows[(sort, pod.uid, "")] = self.pod_cells(pod, self.ips.get(pod.id, ""), now, styles)
            for i, row in enumerate(pod.containers):
                last = i == len(pod.containers) - 1
                rows[(sort, pod.uid, row.id)] = self.container_cells(row, last, now, styles)
        self.sync(rows)
        wanted = [p.id for p in pods if p.id and p.id not in self._asked]
        if wanted and lookup is not None:
            self._asked.update(wanted)
            self.run_worker(self._look_up(wanted, lookup), group="pod-ips")

    def order_key(self, rid: str, cells: Cells) -> Any:
        """Rows go by their key, never by a column: a pod, then its containers under it."""
        return rid

    async def _look_up(self, ids: list[str], lookup: IpLookup) -> None:
        for sandbox_id in ids:
            try:
                self.ips[sandbox_id] = await lookup(sandbox_id)
            except Exception:
                # A pod that went meanwhile, or an engine that keeps no record: no IP.
                self.ips[sandbox_id] = ""
        if self._last is not None:
            self.show(*self._last, None)

    def selection(self) -> tuple[Pod, ContainerRow | None] | None:
        """The selected pod, and the selected container when the row is one."""
        key = self.selected_key()
        if not isinstance(key, tuple):
            return None
        pod = self.pods.get(key[1])
        if pod is None:
            return None
        container = next((c for c in pod.containers if c.id == key[2]), None)
        return pod, container
