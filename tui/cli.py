"""The `ctrdeck` command: the console by default, and the engine's subcommands.

`pull` and `images push|import|export|tag|rm` live in `tui/pull_cli.py` (options),
`tui/pull_wire.py` (a pull on a local socket) and `tui/image_commands.py`, and
`cri pods|ps|images|inspect|logs|exec|stop|rm` in `tui/cri_cli.py` and
`tui/cri_commands.py`.

Every subcommand takes ctr's global options, `--address/-a` and
`--namespace/-n`, with their environment variables `CONTAINERD_ADDRESS` and
`CONTAINERD_NAMESPACE`, and for a `tcp://host:port` address `--tls-ca`,
`--tls-cert`, `--tls-key` (TLS is the default over TCP, with the server's
certificate always verified) or `--plaintext`. Building the parser imports only
the subcommands' option modules: a command imports what it runs when it runs
(engine internals only for the engine, the TUI only for the console, h2 and a
hand-coded message pair for `pull`), so `--help` and `pull` start without loading them.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from core.status import EngineStatus


def _global_options(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """ctr's global options; a subcommand's copy only overrides when given, as in ctr."""
    parser.add_argument(
        "--address",
        "-a",
        default=os.environ.get("CONTAINERD_ADDRESS") if top else argparse.SUPPRESS,
        help="engine socket, or tcp://host:port (env CONTAINERD_ADDRESS; "
        "default: the bundled engine's)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        default=os.environ.get("CONTAINERD_NAMESPACE", "default") if top else argparse.SUPPRESS,
        help="namespace (env CONTAINERD_NAMESPACE; default: default)",
    )
    default = None if top else argparse.SUPPRESS
    tls = parser.add_argument_group("TLS, for a tcp:// address")
    tls.add_argument(
        "--tls-ca",
        metavar="PEM",
        default=default,
        help="CA that signed the engine's certificate (default: the system's roots)",
    )
    tls.add_argument(
        "--tls-cert", metavar="PEM", default=default, help="client certificate, for mutual TLS"
    )
    tls.add_argument(
        "--tls-key", metavar="PEM", default=default, help="the client certificate's private key"
    )
    tls.add_argument(
        "--plaintext",
        action="store_true",
        default=False if top else argparse.SUPPRESS,
        help="no TLS (a loopback listener without tcp_tls_cert)",
    )


PROG = "ctrdeck"
DESCRIPTION = "A terminal console for containers, and its engine."


def _top_options(parser: argparse.ArgumentParser) -> None:
    _global_options(parser, top=True)
    parser.add_argument("--read-only", action="store_true", help="refuse every change")
    parser.add_argument("--theme", choices=("dark", "light"), help="console theme (default dark)")
    parser.add_argument("--keymap", type=Path, help="keymap.toml remapping binding ids to keys")
    parser.add_argument(
        "--teach", action="store_true", help="start with the ctr-equivalent lines switched on"
    )
    parser.add_argument(
        "--no-start",
        action="store_true",
        help="only connect: do not start the bundled engine when nothing answers",
    )
    from tui import nodes_cli

    nodes_cli.add_options(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    _top_options(parser)
    from tui import nodes_cli

    sub = parser.add_subparsers(dest="command")

    engine = sub.add_parser("engine", help="run or control the bundled engine")
    _global_options(engine)
    engine.add_argument("--config", "-c", type=Path, help="config.toml to read")
    engine.add_argument("--root", type=Path, help="persistent state directory")
    engine.add_argument("--state", type=Path, help="runtime state directory")
    engine.add_argument("--log-level", "-l", help="trace, debug, info, warn, error")
    engine_sub = engine.add_subparsers(dest="engine_command")
    stop = engine_sub.add_parser("stop", help="stop a running engine")
    _global_options(stop)
    status = engine_sub.add_parser(
        "status", help="whether the engine answers: version, uptime, socket, root, plugins"
    )
    _global_options(status)
    status.add_argument("--json", action="store_true", help="print the status as JSON")

    from tui import cri_cli, pull_cli

    pull_cli.add_parsers(sub, _global_options)
    nodes_cli.add_parser(sub, _global_options)
    cri_cli.add_parsers(sub, _global_options)

    from tui import trainer_cli

    trainer_cli.add_parsers(sub, _global_options)

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("default", help="print the default config.toml")
    return parser


class _NotPull(Exception):
    """The command line is not one `_PullOnly` parses as the full parser would."""


class _PullOnly(argparse.ArgumentParser):
    """A parser that gives up, instead of printing an error, on what it does not take."""

    def error(self, message: str) -> NoReturn:
        raise _NotPull(message)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line `argv` (default: the process's arguments), parsed.

    Building every subcommand's parser costs ~30 ms of CPU (argparse looks up message
    translations and the terminal's width for each parser and option), which a `ctrdeck
    pull` would spend before it sends its request. So the command line is first parsed by
    a parser with the same top-level options and `pull` as its only subcommand, without
    -h; it raises instead of printing errors. A `pull` command line that it takes is parsed
    exactly as the full parser would; anything else (another command, none, -h, any error)
    goes to the full parser, which prints what it always printed.
    """
    if "pull" not in (sys.argv[1:] if argv is None else argv):
        return build_parser().parse_args(argv)
    quick = _PullOnly(prog=PROG, description=DESCRIPTION, add_help=False)
    _top_options(quick)
    from tui import pull_cli

    pull_cli.add_pull_parser(quick.add_subparsers(dest="command"), _global_options)
    try:
        args = quick.parse_args(argv)
    except _NotPull:
        args = None
    if args is not None and args.command == "pull":
        return args
    return build_parser().parse_args(argv)


def refuse_trio() -> None:
    """Make `import trio` fail in this process, which must then be one that runs asyncio only.

    httpcore, under the engine's registry client, imports trio when it is installed (the
    test extra's selenium brings it) to tell trio from asyncio at run time: 130-180 ms of
    CPU that a fresh engine's first pull waited for, and memory kept from then on. None in
    `sys.modules` makes the import fail, which httpcore provides for. Only the engine's
    process calls this: the console and the tests may use trio.
    """
    sys.modules.setdefault("trio", None)  # type: ignore[arg-type]


def run_engine(args: argparse.Namespace) -> int:
    refuse_trio()
    from core import startup

    startup.import_betterproto2()  # first: see core/startup.py
    import asyncio

    from core import config as cfg
    from core import logs
    from core.errors import CtrdeckError
    from core.server import serve

    client_tls = args.tls_ca or args.tls_cert or args.tls_key or args.plaintext
    if client_tls or (args.address and args.address.startswith("tcp://")):
        print(
            "ctrdeck engine: --address is the Unix socket to serve, and the TLS options are "
            "a client's; the TCP listener is [grpc] tcp_address and tcp_tls_* in config.toml",
            file=sys.stderr,
        )
        return 2
    try:
        config = cfg.load(args.config)
        config = cfg.with_overrides(
            config,
            address=args.address,
            root=args.root,
            state=args.state,
            log_level=args.log_level,
        )
    except CtrdeckError as exc:
        print(f"ctrdeck engine: {exc}", file=sys.stderr)
        return 2
    logs.setup(config.debug.level, Path(config.state))
    try:
        asyncio.run(serve(config))
    except CtrdeckError as exc:
        print(f"ctrdeck engine: {exc}", file=sys.stderr)
        return 1
    return 0


def stop_engine(args: argparse.Namespace) -> int:
    from tui import launcher

    return launcher.stop_engine(launcher.resolve_address(args.address))


def engine_status(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from core import status
    from tui import launcher

    try:
        target = launcher.target(args)
    except launcher.LaunchError as exc:
        print(f"ctrdeck engine status: {exc}", file=sys.stderr)
        return 2
    result = asyncio.run(status.probe(target.address, tls=target.tls))
    if args.json:
        print(json.dumps(result.to_json(), indent=2))
    else:
        _print_status(result)
    return 0 if result.answering else 1


def _print_status(result: EngineStatus) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from core.listeners import SECURITY_NAMES
    from core.status import format_uptime

    out = Console()
    if not result.answering:
        Console(stderr=True).print(
            f"[bold red]✗ engine not answering[/]: {escape(result.problem)}", soft_wrap=True
        )
        return
    started = f" (since {result.started_at:%Y-%m-%d %H:%M:%S} UTC)" if result.started_at else ""
    counts = result.plugin_counts()
    facts = Table.grid(padding=(0, 2))
    for key, value in (
        ("version", f"{result.version} ({result.revision})"),
        ("uptime", format_uptime(result.uptime) + started),
        ("address" if result.address.startswith("tcp://") else "socket", result.address),
        ("root", result.root or "unknown"),
        ("state", result.state or "unknown"),
        ("uuid", result.uuid),
        ("plugins", f"{counts['ok']} ok, {counts['skip']} skipped, {counts['error']} failed"),
    ):
        facts.add_row(f"[bold]{key}[/]", escape(value))
    for i, listener in enumerate(result.listeners):
        security = SECURITY_NAMES.get(listener.security, listener.security)
        facts.add_row(
            "[bold]listeners[/]" if i == 0 else "", f"{escape(listener.address)}  {security}"
        )
    out.print("[bold green]● engine answers[/]")
    out.print(facts)
    plugins = Table(box=None, header_style="bold")
    for column in ("TYPE", "ID", "STATUS"):
        plugins.add_column(column, no_wrap=True)
    plugins.add_column("ERROR", overflow="fold")
    colours = {"ok": "green", "skip": "yellow", "error": "red"}
    for p in result.plugins:
        colour = colours.get(p.status, "red")
        plugins.add_row(p.type, p.id, f"[{colour}]{p.status}[/]", escape(p.error))
    out.print(plugins)


def _exit_now(code: int) -> NoReturn:
    """End a one-shot command's process without tearing the interpreter down.

    Unloading the modules a gRPC command imported costs about 50 ms of CPU (a fifth of a
    `ctrdeck pull` of an image the engine has) and changes nothing a script can see once
    the output is flushed; the command has closed every file it wrote by now.
    """
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> int:
    """Run the command `argv` (default: the process's arguments) and return its exit status.

    Called without `argv`, as the `ctrdeck` program is, the one-shot image commands end the
    process themselves once done (`_exit_now`).
    """
    args = parse(argv)
    if args.command == "engine":
        if args.engine_command == "stop":
            return stop_engine(args)
        if args.engine_command == "status":
            return engine_status(args)
        return run_engine(args)
    if args.command in ("pull", "images"):
        if args.command == "pull":
            from tui import pull_wire

            code = pull_wire.pull(args)
        else:
            from tui import image_commands

            code = image_commands.images(args)
        if argv is None:
            _exit_now(code)
        return code
    if args.command == "cri":
        from tui import cri_cli

        return cri_cli.run(args)
    if args.command in ("record", "replay", "serve"):
        from tui import trainer_cli

        return trainer_cli.run(args)
    if args.command == "nodes":
        from tui import nodes_cli

        return nodes_cli.nodes_command(args)
    if args.command == "config":
        from core import config as cfg

        sys.stdout.write(cfg.render_toml(cfg.default_config()))
        return 0
    from tui import nodes_cli

    if nodes_cli.wanted(args):
        from tui import fleet_app

        return fleet_app.run(args)
    from tui import app

    return app.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
