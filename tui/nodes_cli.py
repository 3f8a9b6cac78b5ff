"""The command line of a fleet: `--node NAME=URL`, `--nodes-file`, and `ctrdeck nodes`.

`specs_from(args)` gathers the nodes named by `--node` flags (a `tcp://` one
takes the global `--tls-*`/`--plaintext` options) and by `nodes.toml`, in that
order; a bad one keeps its place with its problem. `ctrdeck nodes` reaches
every node at once (each within its own deadline), prints the status table
the Nodes pane shows (or `--json`), and exits 0 only when every node is up.
The options are added without importing `tui.nodes` (TOML, platformdirs): every
`ctrdeck` command builds them, and only the fleet's commands read them.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from core.errors import CtrdeckError

if TYPE_CHECKING:
    from core.client import ClientTLS
    from tui.fleet import NodeStatus
    from tui.nodes import NodeSpec


class _DefaultNodesFile:
    """The nodes file's default path, looked up only when a help text is printed."""

    def __str__(self) -> str:
        from tui import nodes as node_specs

        return str(node_specs.default_path())


class FleetPlan(NamedTuple):
    specs: list[NodeSpec]
    ssh_config: Path | None = None


def add_options(parser: argparse.ArgumentParser, *, top: bool = True) -> None:
    """The fleet's options; a subcommand's copy adds to the top-level ones."""
    parser.add_argument(
        "--node",
        action="append",
        default=[] if top else argparse.SUPPRESS,
        metavar="NAME=URL",
        help="a node of the fleet (repeatable): a socket path, unix://, tcp://HOST:PORT, "
        "or ssh://[USER@]HOST[:PORT][/SOCKET], with ?namespace=NS to pin one",
    )
    nodes_file = parser.add_argument(
        "--nodes-file",
        type=Path,
        metavar="TOML",
        default=None if top else argparse.SUPPRESS,
        help="the fleet's nodes (default: %(default_file)s when no -a and no --node)",
    )
    # argparse fills a help text's %(name)s from the option's attributes as it prints it.
    nodes_file.default_file = _DefaultNodesFile()  # type: ignore[attr-defined]


def add_parser(
    sub: argparse._SubParsersAction,  # type: ignore[type-arg]
    global_options: Callable[[argparse.ArgumentParser], None],
) -> None:
    nodes = sub.add_parser("nodes", help="every node's status: state, engine, RTT, containers")
    global_options(nodes)
    add_options(nodes, top=False)
    nodes.add_argument("--json", action="store_true", help="print the statuses as JSON")


def _flag_tls(args: argparse.Namespace) -> ClientTLS | None:
    if getattr(args, "plaintext", False):
        return None
    from core.client import ClientTLS

    return ClientTLS(
        ca=getattr(args, "tls_ca", None) or "",
        cert=getattr(args, "tls_cert", None) or "",
        key=getattr(args, "tls_key", None) or "",
    )


def wanted(args: argparse.Namespace) -> bool:
    """Whether the console runs as a fleet: `--node`, `--nodes-file`, or a nodes.toml and no -a."""
    if getattr(args, "node", None) or getattr(args, "nodes_file", None):
        return True
    from tui import nodes as node_specs

    return args.address is None and node_specs.default_path().exists()


def specs_from(args: argparse.Namespace) -> FleetPlan:
    """The nodes to attach to; `NodesError` when the nodes file cannot be read at all."""
    from tui import nodes as node_specs

    tls = _flag_tls(args)
    specs = [_checked(node_specs.parse_flag(text, tls)) for text in getattr(args, "node", [])]
    path = getattr(args, "nodes_file", None)
    if path is None and not specs:
        path = node_specs.default_path()
    found = node_specs.load(path) if path is not None else node_specs.NodesFile(())
    specs += found.nodes
    return FleetPlan(node_specs.unique(specs), found.ssh_config)


def _checked(spec: NodeSpec) -> NodeSpec:
    from dataclasses import replace

    from tui import nodes as node_specs

    if spec.kind != node_specs.TCP:
        return replace(spec, tls=None)
    if spec.tls is not None and not spec.problem:
        try:
            spec.tls.context()
        except CtrdeckError as exc:
            return replace(spec, problem=exc.message)
    return spec


def nodes_command(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from tui import fleet
    from tui import nodes as node_specs

    try:
        plan = specs_from(args)
    except node_specs.NodesError as exc:
        print(f"ctrdeck nodes: {exc}", file=sys.stderr)
        return 2
    if not plan.specs:
        print(
            f"ctrdeck nodes: no nodes: give --node NAME=URL or write {node_specs.default_path()}",
            file=sys.stderr,
        )
        return 2
    group = fleet.Fleet(plan.specs, args.namespace, ssh_config=plan.ssh_config)
    statuses = asyncio.run(fleet.probe_all(group))
    if args.json:
        print(json.dumps([s.to_json() for s in statuses], indent=2))
    else:
        print_table(statuses)
    return 0 if all(s.phase == fleet.UP for s in statuses) else 1


def print_table(statuses: list[NodeStatus]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from tui.plain import plain

    table = Table(box=None, header_style="bold")
    for column in ("NODE", "STATE", "ENGINE", "VERSION", "RTT", "RUNNING", "TOTAL", "URL"):
        table.add_column(column, no_wrap=True)
    for s in statuses:
        colour = "green" if s.phase == "up" else "red"
        table.add_row(
            plain(s.name),
            Text(s.phase, style=colour),
            s.engine or "-",
            plain(s.version or "-"),
            "-" if s.rtt is None else f"{s.rtt * 1000:.1f}ms",
            "-" if s.running is None else str(s.running),
            "-" if s.total is None else str(s.total),
            plain(s.where),
        )
    out = Console()
    out.print(table)
    # Reasons are long (ssh's advice, a path): each gets its own line under the table.
    for s in statuses:
        if s.reason:
            out.print(Text(f"{s.name}: ").append_text(plain(s.reason)), soft_wrap=True)
