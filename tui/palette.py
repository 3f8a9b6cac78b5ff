"""The command palette (ctrl+p): every action by name, for the pane in focus.

Names are namespaced (`container: start`, `view: images`, `namespace: k8s.io`)
and come from `tui.commands`; read-only mode leaves out what would change the
node, like the footer does.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from tui import commands
from tui.screens.main import MainScreen

PREFIX = {
    "app": "console",
    "view": "view",
    "image": "image",
    "container": "container",
    "table": "selected",
    "namespace": "namespace",
    "events": "events",
}


class ConsoleCommands(Provider):
    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        screen = self.screen
        if not isinstance(screen, MainScreen):
            return []
        main: MainScreen = screen
        pane = main.focused_pane()
        out: list[tuple[str, str, Callable[[], object]]] = []
        for c in commands.COMMANDS:
            if c.id == "app.quit" or (main.read_only and c.mutates):
                continue
            if commands.SCREEN not in c.panes and pane not in c.panes:
                continue
            group = PREFIX.get(c.id.split(".", 1)[0], "console")
            out.append((f"{group}: {c.description}", c.id, partial(main.action_command, c.id)))
        for name in sorted(str(k) for k in main.node.namespaces):
            if name != main.node.namespace:
                out.append(
                    (f"namespace: switch to {name}", "", partial(main.switch_namespace, name))
                )
        return out

    async def discover(self) -> Hits:
        for name, help_id, callback in self._entries():
            yield DiscoveryHit(name, callback, help=help_id or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_id, callback in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_id or None)
