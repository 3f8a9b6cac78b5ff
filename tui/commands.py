"""Every action of the console, declared once.

A `Command` names its binding id (what a keymap file remaps), its default keys,
the panes it acts in, whether it changes the node (read-only mode hides and
refuses those), whether it asks first, the `ctr` command line it is
equivalent to (the teaching toggle writes that line into the event log), and
for a container the task statuses it applies to (the footer offers no start
for a running one). The key bindings, the footer, the help screen and the
command palette are all derived from this table, so they cannot disagree.
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from textual.binding import Binding

CONTAINERS = "containers"
IMAGES = "images"
SNAPSHOTS = "snapshots"
CONTENT = "content"
PODS = "pods"
NAMESPACES = "namespaces"
EVENTS = "events"
SCREEN = "screen"

RESOURCE_PANES = (CONTAINERS, IMAGES, SNAPSHOTS, CONTENT, PODS)
PANE_TITLES = {
    CONTAINERS: "Containers",
    IMAGES: "Images",
    SNAPSHOTS: "Snapshots",
    CONTENT: "Content",
    PODS: "Pods",
    NAMESPACES: "Namespaces",
    EVENTS: "Events",
    SCREEN: "Everywhere",
}


@dataclass(frozen=True)
class Command:
    id: str
    keys: str
    title: str
    description: str
    panes: tuple[str, ...]
    action: str = ""
    mutates: bool = False
    confirm: bool = False
    ctr: Mapping[str, str] = field(default_factory=dict)
    show: bool = True
    key_display: str | None = None
    # The selected container's task statuses the command applies to ("" is no task); () is any.
    statuses: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        """The part after the dot, which is also the screen's handler suffix."""
        return self.id.rsplit(".", 1)[-1]

    def binding(self) -> Binding:
        action = self.action or f"screen.command('{self.id}')"
        return Binding(
            self.keys,
            action,
            self.title,
            show=self.show,
            key_display=self.key_display,
            id=self.id,
        )

    def ctr_line(self, pane: str, flags: str = "", tail: str = "", **fields: str) -> str | None:
        """The equivalent `ctr` invocation, quoted for a shell, or None when there is none.

        `flags` is a ready-made run of options and `tail` of trailing arguments
        (both already quoted); every other field is a value and gets quoted here.
        """
        template = self.ctr.get(pane) or self.ctr.get("*")
        if template is None:
            return None
        return _fill(template, flags=flags, tail=tail, **fields)


def _fill(template: str, flags: str = "", tail: str = "", **fields: str) -> str:
    quoted = {k: shlex.quote(v) for k, v in fields.items()}
    return template.format(flags=flags, tail=tail, **quoted)


# Shift+letter sorts the containers table, as in k9s (`D` deletes and `T` themes already).
SORT_KEYS = (("N", "name"), ("S", "status"), ("A", "age"), ("C", "cpu"), ("M", "mem"))

COMMANDS: tuple[Command, ...] = (
    # Everywhere on the main screen.
    Command(
        id="app.pull",
        keys="p",
        title="pull",
        description="Pull an image from a registry, with per-layer progress",
        panes=(SCREEN,),
        mutates=True,
        ctr={"*": "ctr -n {ns} images pull{flags} {ref}"},
    ),
    Command(
        id="app.help",
        keys="question_mark",
        title="help",
        description="Keys of the focused pane",
        panes=(SCREEN,),
        key_display="?",
    ),
    Command(
        id="app.command_line",
        keys="colon",
        title="jump",
        description="Command line: :images, :containers, :ns NAME, :q",
        panes=(SCREEN,),
        key_display=":",
    ),
    Command(
        id="app.teach",
        keys="t",
        title="teach",
        description="Show the equivalent ctr command of every action in the event log",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="app.namespace",
        keys="n",
        title="namespace",
        description="Switch namespace",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="app.theme",
        keys="T",
        title="theme",
        description="Toggle the light and dark themes",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="app.engine",
        keys="e",
        title="engine",
        description="Engine health: uptime and every plugin's status (:engine)",
        panes=(SCREEN,),
        show=False,
        ctr={"*": "ctr plugins ls"},
    ),
    Command(
        id="view.containers",
        keys="1",
        title="containers",
        description="Show containers",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="view.images",
        keys="2",
        title="images",
        description="Show images",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="view.snapshots",
        keys="3",
        title="snapshots",
        description="Show snapshots of every snapshotter",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="view.content",
        keys="4",
        title="content",
        description="Show content blobs",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="view.pods",
        keys="5",
        title="pods",
        description="Show Kubernetes pods (the k8s.io namespace) with their containers",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="app.zoom",
        keys="z,plus",
        title="zoom",
        description="Zoom the focused pane to the full screen, and back (esc too)",
        panes=(SCREEN,),
        show=False,
    ),
    Command(
        id="app.quit",
        keys="q",
        title="quit",
        description="Quit the console (the engine and its containers keep running)",
        panes=(SCREEN,),
        action="app.quit",
    ),
    # The selected row of a resource table.
    Command(
        id="image.run",
        keys="r",
        title="run",
        description="Run a new container from the selected image: command, env, mount, tty, --rm",
        panes=(IMAGES,),
        mutates=True,
        ctr={IMAGES: "ctr -n {ns} run{flags} {ref} {id}{tail}"},
    ),
    Command(
        id="container.start",
        keys="s",
        title="start",
        description="Start the selected container's task",
        panes=(CONTAINERS,),
        mutates=True,
        statuses=("", "CREATED", "STOPPED", "UNKNOWN"),
        ctr={CONTAINERS: "ctr -n {ns} task start -d {id}"},
    ),
    Command(
        id="container.pause",
        keys="space",
        title="pause/resume",
        description="Pause a running task, resume a paused one",
        panes=(CONTAINERS,),
        mutates=True,
        key_display="␣",
        statuses=("RUNNING", "PAUSED"),
        ctr={CONTAINERS: "ctr -n {ns} task {verb} {id}"},
    ),
    Command(
        id="container.kill",
        keys="ctrl+k",
        title="kill…",
        description="Send a signal (chosen from a list) to the selected task",
        panes=(CONTAINERS,),
        mutates=True,
        statuses=("RUNNING", "PAUSED", "PAUSING", "CREATED", "UNKNOWN"),
        ctr={CONTAINERS: "ctr -n {ns} task kill{flags} -s {signal} {id}"},
    ),
    Command(
        id="container.logs",
        keys="l",
        title="logs",
        description="Follow the selected container's log (/ searches)",
        panes=(CONTAINERS,),
    ),
    Command(
        id="container.shell",
        keys="x",
        title="shell",
        description="A shell in the running container (/bin/sh; :sh CMD picks another)",
        panes=(CONTAINERS,),
        mutates=True,
        statuses=("RUNNING",),
        ctr={CONTAINERS: "ctr -n {ns} task exec -t --exec-id {exec_id} {id}{tail}"},
    ),
    Command(
        id="container.processes",
        keys="P",
        title="processes",
        description="The container's processes: user, CPU, memory, command; ctrl+k signals one",
        panes=(CONTAINERS,),
        statuses=("RUNNING", "PAUSED"),
        ctr={CONTAINERS: "ctr -n {ns} task ps {id}"},
    ),
    *(
        Command(
            id=f"sort.{column}",
            keys=key,
            title=f"sort {column}",
            description=f"Sort containers by {column} (again: the other way)",
            panes=(CONTAINERS,),
            key_display=key,
            # The footer has room for one: CPU, what ctop opens with; help lists them all.
            show=column == "cpu",
        )
        for key, column in SORT_KEYS
    ),
    Command(
        id="table.copy",
        keys="y",
        title="copy",
        description="Copy the selected id or reference to the clipboard (OSC 52, works over SSH)",
        panes=(CONTAINERS, IMAGES, SNAPSHOTS, CONTENT, NAMESPACES),
    ),
    Command(
        id="table.delete",
        keys="D",
        title="delete…",
        description="Delete the selected object, after asking",
        panes=(CONTAINERS, IMAGES, SNAPSHOTS, CONTENT, NAMESPACES),
        mutates=True,
        confirm=True,
        ctr={
            CONTAINERS: "ctr -n {ns} containers rm {id}",
            IMAGES: "ctr -n {ns} images rm {ref}",
            SNAPSHOTS: "ctr -n {ns} snapshots --snapshotter {snapshotter} rm {key}",
            CONTENT: "ctr -n {ns} content rm {digest}",
            NAMESPACES: "ctr namespaces rm {name}",
        },
    ),
    Command(
        id="table.inspect",
        keys="enter",
        title="inspect",
        description="Inspect the selected object",
        panes=(CONTAINERS, IMAGES, SNAPSHOTS, CONTENT),
        key_display="⏎",
        ctr={
            CONTAINERS: "ctr -n {ns} containers info {id}",
            IMAGES: "ctr -n {ns} images ls name=={ref}",
            SNAPSHOTS: "ctr -n {ns} snapshots --snapshotter {snapshotter} info {key}",
            CONTENT: "ctr -n {ns} content get {digest}",
        },
    ),
    Command(
        id="pod.stop",
        keys="s",
        title="stop pod…",
        description="Stop the selected pod (its containers and network), after asking",
        panes=(PODS,),
        mutates=True,
        confirm=True,
        # ctr has no pods: the line that runs as is is ctrdeck's own crictl-like command.
        ctr={PODS: "ctrdeck cri stop {id}"},
    ),
    Command(
        id="pod.remove",
        keys="D",
        title="remove…",
        description="Remove the selected pod, or the selected container of a pod, after asking",
        panes=(PODS,),
        mutates=True,
        confirm=True,
        ctr={PODS: "ctrdeck cri rm {id}"},
    ),
    Command(
        id="pod.logs",
        keys="l",
        title="logs",
        description="Follow the selected container's log",
        panes=(PODS,),
    ),
    Command(
        id="pod.inspect",
        keys="enter",
        title="inspect",
        description="Inspect the selected pod or container",
        panes=(PODS,),
        key_display="⏎",
    ),
    Command(
        id="pod.exec",
        keys="x",
        title="exec…",
        description="Run a command in the selected container and show its output",
        panes=(PODS,),
        mutates=True,
        ctr={PODS: "ctrdeck cri exec {id}{tail}"},
    ),
    Command(
        id="table.filter",
        keys="slash",
        title="filter",
        description="Filter the focused table (esc clears)",
        panes=(CONTAINERS, IMAGES, SNAPSHOTS, CONTENT, PODS, EVENTS),
        key_display="/",
    ),
    Command(
        id="namespace.switch",
        keys="enter",
        title="switch",
        description="Switch to the selected namespace",
        panes=(NAMESPACES,),
        key_display="⏎",
    ),
    Command(
        id="events.pause",
        keys="space",
        title="pause/follow",
        description="Pause the event log to read it; again to follow",
        panes=(EVENTS,),
        key_display="␣",
    ),
    Command(
        id="events.jump",
        keys="enter",
        title="go to",
        description="Select the line's object (container, image, snapshot, namespace) in its pane",
        panes=(EVENTS,),
        key_display="⏎",
    ),
    Command(
        id="events.clear",
        keys="c",
        title="clear",
        description="Clear the event log",
        panes=(EVENTS,),
    ),
)

VIM_KEYS: tuple[tuple[str, str, str], ...] = (
    ("j", "cursor_down", "nav.down"),
    ("k", "cursor_up", "nav.up"),
    ("g", "scroll_top", "nav.top"),
    ("G", "scroll_bottom", "nav.bottom"),
)
# A log has no cursor: the same keys scroll it.
LOG_ACTIONS = {
    "cursor_down": "scroll_down",
    "cursor_up": "scroll_up",
    "scroll_top": "scroll_home",
    "scroll_bottom": "scroll_end",
}

BY_ID: dict[str, Command] = {c.id: c for c in COMMANDS}

# The `ctr` line of each step an action may take, named by `tui.operations` as it takes
# it: starting a stopped container deletes its old task first, and deleting a live one
# kills and deletes its task first, so teaching shows every line the console's calls match.
STEPS: dict[str, str] = {
    "task.rm": "ctr -n {ns} task rm {id}",
    "task.rm.force": "ctr -n {ns} task rm -f {id}",
    "task.start": "ctr -n {ns} task start -d {id}",
    "containers.rm": "ctr -n {ns} containers rm {id}",
}


def step_line(step: str, **fields: str) -> str:
    return _fill(STEPS[step], **fields)


def for_pane(pane: str) -> tuple[Command, ...]:
    return tuple(c for c in COMMANDS if pane in c.panes)


def bindings(pane: str, *, vim: bool = True) -> list[Binding]:
    """The bindings a pane's widget declares: its commands, then vim movement.

    Vim's keys move in every pane; no command takes them (kill is k9s' `ctrl+k`).
    """
    out = [c.binding() for c in for_pane(pane)]
    taken = {k for c in for_pane(pane) for k in c.keys.split(",")}
    if vim:
        out += [
            Binding(key, LOG_ACTIONS[action] if pane == EVENTS else action, show=False, id=bid)
            for key, action, bid in VIM_KEYS
            if key not in taken
        ]
    return out


def keys_of(command: Command, keymap: Mapping[str, str]) -> list[str]:
    return keymap.get(command.id, command.keys).split(",")


def display_key(key: str) -> str:
    return {
        "question_mark": "?",
        "colon": ":",
        "slash": "/",
        "plus": "+",
        "space": "space",
        "enter": "enter",
    }.get(key, key)


def commands_by_key(pane: str, keymap: Mapping[str, str]) -> dict[str, Command]:
    """What each key does in `pane`: its own commands first, then the screen-wide ones."""
    out: dict[str, Command] = {}
    for c in (*for_pane(SCREEN), *for_pane(pane)):
        for key in keys_of(c, keymap):
            out[key] = c
    return out


def refused_keys(pane: str, keymap: Mapping[str, str]) -> dict[str, Command]:
    """Keys that would change the node from `pane`: what read-only mode refuses."""
    return {key: c for key, c in commands_by_key(pane, keymap).items() if c.mutates}


def help_rows(pane: str, keymap: Mapping[str, str], read_only: bool) -> Iterable[tuple[str, str]]:
    """(keys, description) for the help screen: the pane's own commands, then everywhere's."""
    for c in (*for_pane(pane), *for_pane(SCREEN)):
        if read_only and c.mutates:
            continue
        yield " ".join(display_key(k) for k in keys_of(c, keymap)), c.description
