"""`ctrdeck serve`: the console in web browsers, a console process per browser tab.

Built on textual-serve: each browser that opens the page gets its own
`ctrdeck` process (attached to the engine `--engine`, or playing a
recording with `--replay`), read-only unless the trainer passes
`--allow-changes`. It listens on loopback by default; any other address
needs a secret in the URL, printed at start: the page sets it as a cookie and
the websocket is refused without it. Closing a tab closes its websocket,
which ends its console process (killed if it has not quit within
`STOP_TIMEOUT`). At most `--max-sessions` (default 20) consoles run at once;
the next browser gets a page saying so instead of a console.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import os
import secrets
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from aiohttp import web
from textual_serve.app_service import AppService
from textual_serve.server import Server

STOP_TIMEOUT = 5.0
COOKIE = "ctrdeck_key"
BUSY_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>ctrdeck</title></head>
<body style="font-family: sans-serif; margin: 3em">
<h1>ctrdeck is full</h1>
<p>All {limit} console sessions of this server are in use. Close another tab,
or try again in a minute.</p></body></html>
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def split_address(address: str) -> tuple[str, int]:
    """`host:port` (IPv6 as `[::1]:8000`); ValueError when it is not one."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{address!r} is not host:port, such as 127.0.0.1:8000")
    return host.strip("[]"), int(port)


class ConsoleServer(Server):
    """textual-serve's server with a secret for non-loopback use and a session limit."""

    def __init__(
        self,
        command: str,
        host: str,
        port: int,
        *,
        secret: str | None,
        max_sessions: int,
        public_url: str,
    ) -> None:
        super().__init__(command, host=host, port=port, title="ctrdeck", public_url=public_url)
        self.secret = secret
        self.max_sessions = max_sessions
        self.sessions = 0
        self._services: set[AppService] = set()

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self._guard)
        return app

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.secret is None or request.path.startswith("/static/"):
            return await handler(request)
        given = request.query.get("key") or request.cookies.get(COOKIE) or ""
        if not hmac.compare_digest(given.encode(), self.secret.encode()):
            return web.Response(
                status=403, text="ctrdeck: this server needs the key from its URL (?key=...)\n"
            )
        response = await handler(request)
        if request.path == "/" and isinstance(response, web.Response):
            response.set_cookie(COOKIE, self.secret, httponly=True, samesite="Strict")
        return response

    async def handle_index(self, request: web.Request) -> Any:
        if self.sessions >= self.max_sessions:
            return web.Response(
                status=503,
                content_type="text/html",
                text=BUSY_PAGE.format(limit=self.max_sessions),
            )
        return await super().handle_index(request)

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        websocket = web.WebSocketResponse(heartbeat=15)
        await websocket.prepare(request)
        if self.sessions >= self.max_sessions:
            await websocket.close(code=1013, message=b"ctrdeck: every console session is in use")
            return websocket
        self.sessions += 1
        width = _int(request.query.get("width"), 80)
        height = _int(request.query.get("height"), 24)
        service = AppService(
            self.command,
            write_bytes=websocket.send_bytes,
            write_str=websocket.send_str,
            close=websocket.close,
            download_manager=self.download_manager,
            debug=self.debug,
        )
        self._services.add(service)
        try:
            await service.start(width, height)
            with contextlib.suppress(Exception):
                await self._process_messages(websocket, service)
        finally:
            self.sessions -= 1
            self._services.discard(service)
            await _stop(service)
        return websocket

    async def on_startup(self, app: web.Application) -> None:
        """textual-serve's banner would print the URL without its key; `run` prints it."""

    async def on_shutdown(self, app: web.Application) -> None:
        await asyncio.gather(*(_stop(s) for s in list(self._services)))


async def _stop(service: AppService) -> None:
    """Ask the console to quit, and kill it if it has not within `STOP_TIMEOUT`."""
    try:
        await asyncio.wait_for(service.stop(), STOP_TIMEOUT)
    except (TimeoutError, Exception):
        process = service._process
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()


def _int(value: str | None, default: int) -> int:
    try:
        return int(value or "")
    except ValueError:
        return default


def console_command(args: argparse.Namespace) -> str:
    """The command each browser's console process runs."""
    python = [sys.executable, "-m", "tui.cli"]
    if args.replay is not None:
        words = [*python, "replay", str(args.replay.resolve()), "--speed", str(args.speed)]
    else:
        words = [*python, "--no-start", "--namespace", args.namespace]
        if args.engine:
            words += ["--address", args.engine]
        if args.read_only or not args.allow_changes:
            words.append("--read-only")
    # `exec`: the shell textual-serve starts becomes the console, so ending it ends the console.
    return "exec " + shlex.join(words)


def run(args: argparse.Namespace) -> int:
    from tui import recording

    try:
        host, port = split_address(args.address)
    except ValueError as exc:
        print(f"ctrdeck serve: {exc}", file=sys.stderr)
        return 2
    if args.read_only and args.allow_changes:
        print("ctrdeck serve: --read-only and --allow-changes contradict", file=sys.stderr)
        return 2
    if args.max_sessions < 1:
        print("ctrdeck serve: --max-sessions must be at least 1", file=sys.stderr)
        return 2
    if args.replay is not None:
        try:
            recording.read(args.replay)
        except recording.RecordingError as exc:
            print(f"ctrdeck serve: {exc}", file=sys.stderr)
            return 2
    loopback = is_loopback(host)
    secret = None if loopback else secrets.token_urlsafe(18)
    shown = host if ":" not in host else f"[{host}]"
    if host in ("0.0.0.0", "::"):
        shown = socket.getfqdn()
    public = args.public_url or f"http://{shown}:{port}"
    # The console processes import this checkout's `tui`, wherever they start.
    root = str(Path(__file__).resolve().parent.parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH", "")) if p
    )
    server = ConsoleServer(
        console_command(args),
        host,
        port,
        secret=secret,
        max_sessions=args.max_sessions,
        public_url=public,
    )
    what = f"the recording {args.replay}" if args.replay else "the console"
    mode = "read-only" if args.replay or not args.allow_changes else "changes allowed"
    print(f"ctrdeck serve: {what} ({mode}), at most {args.max_sessions} sessions", flush=True)
    if secret is None:
        print(f"ctrdeck serve: open {public}/ (loopback only)", flush=True)
    else:
        print(
            f"ctrdeck serve: {host} is not loopback, so browsers need this key: "
            f"open {public}/?key={secret}",
            flush=True,
        )
    server.serve()
    return 0
