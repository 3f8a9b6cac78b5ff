"""The `ctrdeck` command: the console by default, and the engine's subcommands.

Every subcommand takes ctr's global options, `--address/-a` and
`--namespace/-n`, with their environment variables `CONTAINERD_ADDRESS` and
`CONTAINERD_NAMESPACE`. Engine internals are imported only by the subcommands
that run the engine, so the console starts without loading them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path


def _global_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address",
        "-a",
        default=os.environ.get("CONTAINERD_ADDRESS"),
        help="engine socket (env CONTAINERD_ADDRESS; default: the bundled engine's)",
    )
    parser.add_argument(
        "--namespace",
        "-n",
        default=os.environ.get("CONTAINERD_NAMESPACE", "default"),
        help="namespace (env CONTAINERD_NAMESPACE; default: default)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ctrdeck", description="A terminal console for containers, and its engine."
    )
    _global_options(parser)
    parser.add_argument("--read-only", action="store_true", help="refuse every change")
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

    config = sub.add_parser("config", help="configuration")
    config_sub = config.add_subparsers(dest="config_command", required=True)
    config_sub.add_parser("default", help="print the default config.toml")
    return parser


def _configure_logging(level: str) -> None:
    names = {"trace": "DEBUG", "warn": "WARNING", "fatal": "CRITICAL", "panic": "CRITICAL"}
    logging.basicConfig(
        level=names.get(level, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def run_engine(args: argparse.Namespace) -> int:
    from core import config as cfg
    from core.errors import CtrdeckError
    from core.server import serve

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
    _configure_logging(config.debug.level)
    try:
        asyncio.run(serve(config))
    except CtrdeckError as exc:
        print(f"ctrdeck engine: {exc}", file=sys.stderr)
        return 1
    return 0


def stop_engine(args: argparse.Namespace) -> int:
    from tui import launcher

    return launcher.stop_engine(launcher.resolve_address(args.address))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "engine":
        if args.engine_command == "stop":
            return stop_engine(args)
        return run_engine(args)
    if args.command == "config":
        from core import config as cfg

        sys.stdout.write(cfg.render_toml(cfg.default_config()))
        return 0
    from tui import app

    return app.run(args)


if __name__ == "__main__":
    raise SystemExit(main())
