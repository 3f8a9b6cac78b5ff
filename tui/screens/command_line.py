"""The `:` command line of the main screen: jumps, `:ns`, `:pull`, `:run` and the rest.

`CommandLine` parses one entry and calls the same handlers the keys call, so a
command typed here behaves (and teaches) exactly as its key does. It is mixed
into `MainScreen` and owns no layout.
"""

from __future__ import annotations

import shlex

from textual import on
from textual.widgets import Input

from tui import commands, operations
from tui.commands import CONTAINERS, CONTENT, EVENTS, IMAGES, NAMESPACES, SNAPSHOTS
from tui.screens.actions import Actions
from tui.screens.pull import registry_host
from tui.spec import RunOptions

JUMPS = {
    "images": IMAGES,
    "image": IMAGES,
    "img": IMAGES,
    "containers": CONTAINERS,
    "container": CONTAINERS,
    "ctr": CONTAINERS,
    "snapshots": SNAPSHOTS,
    "snapshot": SNAPSHOTS,
    "snap": SNAPSHOTS,
    "content": CONTENT,
    "blobs": CONTENT,
    "events": EVENTS,
    "namespaces": NAMESPACES,
}
CMDLINE_HELP = (
    ":images  :containers  :snapshots  :content  :pods  :events  :ns NAME  :pull REF  "
    ":run IMAGE [ARGS]  "
    ":engine  :top  :sh [CMD]  :theme light|dark  :teach  :q"
)


class CommandLine(Actions):
    """The `:` line: each entry runs the handler its key would."""

    def pull_line(self, args: list[str]) -> None:
        """`:pull REF [--plain-http] [--snapshotter S] [--platform P] [--user NAME]` pulls at once.

        With `--user` the pull dialog opens filled in and asks for the password: a secret
        typed on the command line would sit in its history and on the screen.
        """
        if self.read_only:
            self.refuse(commands.BY_ID["app.pull"])
            return
        if not args:
            self.open_pull()
            return
        ref, plain_http, user = "", False, ""
        snapshotter, platform = self.console.settings.snapshotter, ""
        words = iter(args)
        for word in words:
            name, eq, value = word.partition("=")
            if name in ("--snapshotter", "--platform", "--user"):
                value = value if eq else next(words, "")
                if not value:
                    self.notify(f":pull {name} needs a value", severity="error", markup=False)
                    return
                if name == "--snapshotter":
                    snapshotter = value
                elif name == "--platform":
                    platform = value
                elif ":" in value:
                    self.notify(
                        ":pull --user takes a NAME only; the dialog asks for the password",
                        severity="error",
                        markup=False,
                    )
                    return
                else:
                    user = value
            elif word == "--plain-http":
                plain_http = True
            elif word.startswith("-") or ref:
                self.notify(
                    f":pull does not take {word!r}: "
                    ":pull REF [--plain-http] [--snapshotter S] [--platform P] [--user NAME]",
                    severity="error",
                    markup=False,
                )
                return
            else:
                ref = word
        if not ref or user:
            if ref and plain_http:
                self.console.plain_http[registry_host(ref)] = True
            self.open_pull(ref, user=user, snapshotter=snapshotter, platform=platform)
            return
        self.start_pull(operations.pull_request(ref, snapshotter, platform, plain_http))

    @on(Input.Submitted, "#cmdline")
    def command_line(self, event: Input.Submitted) -> None:
        event.input.add_class("hidden")
        self.table(self._pane).focus()
        self.run_line(event.value)

    def run_line(self, text: str) -> None:
        """Run one command-line entry (without its leading colon)."""
        words = text.strip().lstrip(":").split()
        if not words:
            return
        verb, args = words[0].lower(), words[1:]
        if verb in ("q", "quit", "exit"):
            self.app.exit()
        elif verb in JUMPS:
            self.show_pane(JUMPS[verb])
            if JUMPS[verb] == EVENTS:
                self.zoom(EVENTS)
        elif verb in ("pods", "pod"):
            self.do_view_pods(self._pane)  # type: ignore[attr-defined]
        elif verb in ("ns", "namespace"):
            if args:
                self.switch_namespace(args[0])
            else:
                self.do_app_namespace(self._pane)
        elif verb == "theme" and args and args[0] in ("light", "dark"):
            self.console.set_theme(args[0])
        elif verb in ("teach", "teaching"):
            wanted = not self.console.settings.teaching if not args else args[0] == "on"
            if wanted != self.console.settings.teaching:
                self.do_app_teach(self._pane)
        elif verb == "help":
            self.do_app_help(self._pane)
        elif verb == "engine":
            self.do_app_engine(self._pane)
        elif verb == "top":
            self.show_top()
        elif verb in ("sh", "shell", "exec"):
            self.shell_line(args)
        elif verb == "record":
            self.console.record(args)
        elif verb in ("run", "pull"):
            try:
                args = shlex.split(text.strip().lstrip(":"))[1:]
            except ValueError as exc:
                self.notify(f":{verb}: {exc}", severity="error", markup=False)
                return
            (self.run_line_run if verb == "run" else self.pull_line)(args)
        else:
            self.notify(f"unknown command :{text.strip()}; try {CMDLINE_HELP}", severity="error")

    def run_line_run(self, args: list[str]) -> None:
        """`:run IMAGE [ARGS...]`: run at once with the image's defaults and these arguments."""
        if self.read_only:
            self.refuse(commands.BY_ID["image.run"])
            return
        client = self.client()
        if not args or client is None:
            if not args:
                self.notify(":run needs an image: :run IMAGE [ARGS...]", severity="warning")
            return
        image = args[0]
        options = RunOptions(
            container_id=self.suggested_id(image),
            snapshotter=self.console.settings.snapshotter,
            args=tuple(args[1:]),
        )
        self.run_image(client, image, options)
