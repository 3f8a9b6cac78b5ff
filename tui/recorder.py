"""Recording what the console sees: `ctrdeck record`, and `:record` inside the console.

`Recorder` turns what a console's `NodeState`s and its event log go through
into records of a `tui.recording.Writer`: a `snap` (every table of one
namespace, with the engine's version) when a state is first watched, after a
reconnect and every `KEYFRAME_INTERVAL` so a replay seeks without reading from
the start; a `row` for each row that changed (only the fields that changed,
for one already recorded: task metrics are a container's `cpu` and `memory`);
a `log` per event-log line (events, notes, and `ctr` lines when teaching is
on); `conn` when the engine is lost or back; and `view` when the console
moved to another namespace, which a replay follows. Frames go to disk every
`FLUSH_INTERVAL`, so a writer killed at any point loses at most that much.

`record` is the headless command: it runs a `Syncer` per namespace recorded
(one, or every namespace with `--all-namespaces`, picking up new ones as they
appear) against our engine or a containerd. `ConsoleRecording` is `:record`:
it watches the running console's state and event log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import signal
import sys
from collections.abc import Callable, Hashable
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from tui import recording
from tui.state import TABLES, LogLine, NodeState

FLUSH_INTERVAL = 0.5
KEYFRAME_INTERVAL = 60.0
# How often `--all-namespaces` looks for namespaces that appeared.
NAMESPACE_POLL = 2.0


def default_path(now: datetime) -> Path:
    return Path(f"ctrdeck-{now:%Y%m%d-%H%M%S}.rec")


class Recorder:
    """Records what watched states and a log see, through one writer."""

    def __init__(self, writer: recording.Writer) -> None:
        self.writer = writer
        self._states: list[NodeState] = []
        # The last row recorded per (namespace, table, key): a change records only its fields.
        self._rows: dict[tuple[str, str, Hashable], Any] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, state: NodeState) -> None:
        """Record `state` from now on: a snapshot of it, then its changes."""
        if state not in self._states:
            self._states.append(state)
        self.snapshot(state)
        shown = [state.namespace]

        def changed(table: str, key: Hashable, row: Any) -> None:
            if state.namespace != shown[0]:
                # The console moved to another namespace: a replay follows it there.
                shown[0] = state.namespace
                self.writer.add("view", ns=state.namespace)
                self.snapshot(state)
            self.row(state.namespace, table, key, row)

        state.on_change = changed

    def snapshot(self, state: NodeState) -> None:
        ns = state.namespace
        for known in [k for k in self._rows if k[0] == ns]:
            del self._rows[known]
        tables: dict[str, list[Any]] = {}
        for table in TABLES:
            rows = []
            for key, row in state.tables[table].items():
                self._rows[(ns, table, key)] = row
                rows.append([recording.encode_key(key), recording.encode_row(row)])
            tables[table] = rows
        self.writer.add(
            "snap",
            ns=ns,
            address=state.address,
            version=state.version,
            snapshotters=state.snapshotters,
            unserved=sorted(state.unserved),
            tables=tables,
        )

    def row(self, ns: str, table: str, key: Hashable, row: Any) -> None:
        mirror = (ns, table, key)
        encoded_key = recording.encode_key(key)
        if row is None:
            if self._rows.pop(mirror, None) is not None:
                self.writer.add("row", ns=ns, tb=table, key=encoded_key, rm=True)
            return
        before = self._rows.get(mirror)
        self._rows[mirror] = row
        if before is not None and type(before) is type(row):
            changed = {
                f.name: getattr(row, f.name)
                for f in dataclasses.fields(row)
                if getattr(row, f.name) != getattr(before, f.name)
            }
            self.writer.add("row", ns=ns, tb=table, key=encoded_key, set=changed)
        else:
            self.writer.add("row", ns=ns, tb=table, key=encoded_key, row=recording.encode_row(row))

    def log(self, line: LogLine) -> None:
        self.writer.add("log", line=recording.encode_line(line))

    def connection(self, up: bool, detail: str) -> None:
        self.writer.add("conn", up=up, detail=detail)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._flush_forever())

    async def _flush_forever(self) -> None:
        since_keyframe = 0.0
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            since_keyframe += FLUSH_INTERVAL
            if since_keyframe >= KEYFRAME_INTERVAL:
                since_keyframe = 0.0
                for state in self._states:
                    self.snapshot(state)
            self.writer.flush()

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        for state in self._states:
            state.on_change = None
        self.writer.close()


class LogHook(Protocol):
    """Where the console's log lines pass (its `EventLog`): tells `on_add` of each one."""

    on_add: Callable[[LogLine], None] | None


class ConsoleRecording:
    """`:record`: what a running console's state and event log see, until `:record stop`."""

    def __init__(self, path: Path, state: NodeState, log_hook: LogHook) -> None:
        self.path = path
        self.recorder = Recorder(
            recording.Writer(path, {"address": state.address, "namespace": state.namespace})
        )
        self._log_hook = log_hook
        self.recorder.watch(state)
        log_hook.on_add = self.recorder.log
        self.recorder.start()

    def stop(self) -> None:
        self._log_hook.on_add = None
        self.recorder.close()


def console_command(
    app: Any, current: ConsoleRecording | None, args: list[str]
) -> ConsoleRecording | None:
    """`:record [FILE]` / `:record stop` on a running console; the recording that is on after."""
    if app.is_web:
        # A browser's user is not the server's: they may not write files where it runs.
        app.notify(
            "recording is off in a served console: it would write files on the server",
            severity="warning",
            title="refused",
        )
        return None
    if args[:1] == ["stop"]:
        if current is None:
            app.notify("not recording", severity="warning", title="record")
            return None
        current.stop()
        app.note(f"recording stopped: {current.recorder.writer.records} records in {current.path}")
        app.notify(f"saved {current.path}", title="record")
        return None
    if current is not None:
        app.notify(
            f"already recording to {current.path}; :record stop ends it",
            severity="warning",
            title="record",
        )
        return current
    path = Path(args[0]) if args else default_path(app.clock())
    try:
        started = ConsoleRecording(path, app.state, app.main.event_log)
    except (OSError, recording.RecordingError) as exc:
        app.notify(f"cannot record to {path}: {exc}", severity="error", title="record")
        return None
    app.note(f"recording to {path} (:record stop ends it; `ctrdeck replay {path}` plays it)")
    return started


def run(args: argparse.Namespace) -> int:
    """`ctrdeck record`: follow the engine and write what the console would see."""
    from datetime import UTC

    from tui import launcher

    duration: float | None = None
    if args.duration:
        try:
            duration = recording.parse_duration(args.duration)
        except ValueError as exc:
            print(f"ctrdeck record: --duration: {exc}", file=sys.stderr)
            return 2
    try:
        target = launcher.target(args)
    except launcher.LaunchError as exc:
        print(f"ctrdeck record: {exc}", file=sys.stderr)
        return 2
    path = args.output or default_path(datetime.now(UTC))
    header = {
        "address": target.address,
        "namespace": args.namespace,
        "all_namespaces": bool(args.all_namespaces),
    }
    try:
        writer = recording.Writer(path, header)
    except (OSError, recording.RecordingError) as exc:
        print(f"ctrdeck record: {exc}", file=sys.stderr)
        return 2
    print(f"ctrdeck record: recording {target.address} to {path} (^C stops)", flush=True)
    try:
        return asyncio.run(_record(target, args, Recorder(writer), duration))
    finally:
        writer.close()
        print(f"ctrdeck record: {writer.records} records in {path}", flush=True)


async def _record(
    target: Any, args: argparse.Namespace, recorder: Recorder, duration: float | None
) -> int:
    from core.api.containerd.services.namespaces import v1 as namespaces_api
    from core.client import Client
    from tui.syncer import Syncer

    client = Client(target.address, args.namespace, tls=target.tls)
    syncers: dict[str, asyncio.Task[None]] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def follow(namespace: str, primary: bool) -> NodeState:
        state = NodeState(namespace, target.address)

        def connection(up: bool, detail: str) -> None:
            if primary:
                recorder.connection(up, detail)
                print(f"ctrdeck record: engine {'up' if up else 'lost'}: {detail}", flush=True)
            if up:
                recorder.watch(state)

        # Every syncer follows the whole event stream; one of them logs it.
        syncer = Syncer(
            client,
            state,
            on_log=recorder.log if primary else (lambda line: None),
            on_connection=connection,
        )
        syncers[namespace] = asyncio.ensure_future(syncer.run())
        return state

    follow(args.namespace, True)
    recorder.start()

    async def more_namespaces() -> None:
        while True:
            await asyncio.sleep(NAMESPACE_POLL)
            with contextlib.suppress(Exception):
                resp = await client.namespaces.list(namespaces_api.ListNamespacesRequest())
                for ns in resp.namespaces:
                    if ns.name not in syncers:
                        follow(ns.name, False)

    extra = asyncio.ensure_future(more_namespaces()) if args.all_namespaces else None
    try:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), duration)
    finally:
        for task in [*syncers.values(), *([extra] if extra else [])]:
            task.cancel()
        await asyncio.gather(*syncers.values(), return_exceptions=True)
        recorder.close()
        client.close()
    return 0
