"""`ctrdeck cri ...`: a crictl-like command for quick triage where crictl is not installed.

It talks Kubernetes' CRI (runtime.v1) over the engine's socket, so it works
against ctrdeck's engine and a real containerd's (`-a /run/containerd/containerd.sock`)
alike: `pods`, `ps`, `images`, `inspect ID`, `logs ID`, `exec ID CMD...`,
`stop ID`, `rm ID`. An ID may be a unique prefix, as in crictl. `logs` reads the
container's CRI log file, so it works on the node itself, as crictl's does.
Everything from the node is printed as plain text, never a control code.
Only the options live here, so building the `ctrdeck` parser loads nothing heavy;
the commands are `tui.cri_commands`, imported when one of them runs.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable


def add_parsers(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    add_globals: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = sub.add_parser("cri", help="pods and containers through Kubernetes' CRI")
    add_globals(parser)
    csub = parser.add_subparsers(dest="cri_command", required=True)
    pods = csub.add_parser("pods", help="list pod sandboxes")
    add_globals(pods)
    ps = csub.add_parser("ps", help="list containers (running ones unless --all)")
    add_globals(ps)
    ps.add_argument("--all", action="store_true", help="also created and exited ones")
    ps.add_argument("-p", "--pod", default="", help="only this pod's containers")
    images = csub.add_parser("images", help="list images")
    add_globals(images)
    what = {
        "inspect": "status of a container, pod or image",
        "stop": "stop a container or a pod",
        "rm": "remove a container or a pod",
    }
    for name in ("inspect", "stop", "rm"):
        p = csub.add_parser(name, help=what[name])
        add_globals(p)
        p.add_argument("id", help="container, pod (or for inspect, image) ID or unique prefix")
        if name == "stop":
            p.add_argument("--timeout", type=int, default=10, help="seconds before SIGKILL")
    logs = csub.add_parser("logs", help="a container's log (read from its CRI log file)")
    add_globals(logs)
    logs.add_argument("id")
    logs.add_argument("--tail", type=int, default=0, help="only the last N lines")
    ex = csub.add_parser("exec", help="run a command in a container to completion (ExecSync)")
    add_globals(ex)
    ex.add_argument("--timeout", type=int, default=0, help="seconds (0: no limit)")
    ex.add_argument("id")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)


def run(args: argparse.Namespace) -> int:
    from tui import cri_commands

    return cri_commands.run(args)
