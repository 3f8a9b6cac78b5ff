"""The command palette (ctrl+p): every action by its name, from any pane.

Names are the actions' own, namespaced (`container: kill`, `image: run`,
`console: pull`, `selected: delete`, `namespace: switch to k8s.io`), with the
description beside them; they come from `tui.commands`. An action of another
pane (`image: run` from the containers) shows that pane and acts on its
selected row. Read-only mode leaves out what would change the node, like the
footer does.
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
    "sort": "containers",
}


class ConsoleCommands(Provider):
    def _entries(self) -> list[tuple[str, str, Callable[[], object]]]:
        screen = self.screen
        if not isinstance(screen, MainScreen):
            return []
        main: MainScreen = screen
        out: list[tuple[str, str, Callable[[], object]]] = []
        for c in commands.COMMANDS:
            if c.id == "app.quit" or (main.read_only and c.mutates):
                continue
            group = PREFIX.get(c.id.split(".", 1)[0], "console")
            name = f"{group}: {c.title.rstrip('…')}"
            # The binding id is what a keymap file remaps; the palette is where one looks it up.
            help_text = f"{c.description} · {c.id}"
            out.append((name, help_text, partial(main.command_from_palette, c.id)))
        for name in sorted(str(k) for k in main.node.namespaces):
            if name != main.node.namespace:
                out.append(
                    (f"namespace: switch to {name}", "", partial(main.switch_namespace, name))
                )
        return out

    async def discover(self) -> Hits:
        for name, help_text, callback in self._entries():
            yield DiscoveryHit(name, callback, help=help_text or None)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback in self._entries():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text or None)
