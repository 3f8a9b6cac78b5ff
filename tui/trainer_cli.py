"""The trainer's subcommands: `ctrdeck record`, `ctrdeck replay` and `ctrdeck serve`.

Only their options live here, so building the `ctrdeck` parser loads nothing
heavy; `run` imports the module that does the work (`tui.recorder`,
`tui.replay`, `tui.serve`) when one of them is the command.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

COMMANDS = ("record", "replay", "serve")
SERVE_ADDRESS = "127.0.0.1:8000"
MAX_SESSIONS = 20


def add_parsers(sub: Any, global_options: Any) -> None:
    record = sub.add_parser(
        "record",
        help="record the node's events, state and task metrics to a file for `ctrdeck replay`",
    )
    global_options(record)
    record.add_argument(
        "-o", "--output", type=Path, help="file to write, or to append to (default: ctrdeck-*.rec)"
    )
    record.add_argument("--duration", help="stop after this long (90s, 5m, 1h30m); default: ^C")
    record.add_argument(
        "--all-namespaces", "-A", action="store_true", help="record every namespace's tables"
    )

    replay = sub.add_parser(
        "replay", help="open the console on a recording (no engine, socket or root needed)"
    )
    replay.add_argument("file", type=Path, help="a recording from `ctrdeck record` or :record")
    replay.add_argument("--speed", type=float, default=1.0, help="playback speed (default 1)")
    replay.add_argument("--from", dest="start", default="0", help="start here: 90s, 1m30s, 1:30")
    replay.add_argument("--paused", action="store_true", help="start paused")
    replay.add_argument("--theme", choices=("dark", "light"), help="console theme (default dark)")

    serve = sub.add_parser(
        "serve", help="serve the console to web browsers (a console process per tab)"
    )
    serve.add_argument(
        "--address",
        default=SERVE_ADDRESS,
        metavar="HOST:PORT",
        help=f"where to listen (default {SERVE_ADDRESS}; any other host needs the URL's key)",
    )
    serve.add_argument(
        "--engine",
        default=os.environ.get("CONTAINERD_ADDRESS"),
        metavar="SOCKET",
        help="the engine the consoles attach to (env CONTAINERD_ADDRESS; default: the bundled one)",
    )
    serve.add_argument(
        "--namespace",
        "-n",
        default=os.environ.get("CONTAINERD_NAMESPACE", "default"),
        help="namespace the consoles open on (env CONTAINERD_NAMESPACE; default: default)",
    )
    serve.add_argument("--read-only", action="store_true", help="read-only consoles: the default")
    serve.add_argument(
        "--allow-changes", action="store_true", help="let the browsers' consoles change the node"
    )
    serve.add_argument("--replay", type=Path, metavar="FILE", help="play this recording instead")
    serve.add_argument("--speed", type=float, default=1.0, help="replay speed (with --replay)")
    serve.add_argument(
        "--max-sessions",
        type=int,
        default=MAX_SESSIONS,
        help=f"concurrent consoles (default {MAX_SESSIONS})",
    )
    serve.add_argument("--public-url", help="the URL browsers use, when not http://HOST:PORT")


def run(args: argparse.Namespace) -> int:
    if args.command == "record":
        from tui import recorder

        return recorder.run(args)
    if args.command == "replay":
        from tui import replay

        return replay.run(args)
    try:
        from tui import serve
    except ImportError as exc:
        print(
            f"ctrdeck serve: {exc.name} is not installed; install ctrdeck's serve extra "
            "(pip install 'ctrdeck[serve]')",
            file=sys.stderr,
        )
        return 2
    return serve.run(args)
