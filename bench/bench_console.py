"""Console benchmark: the real `ctrdeck` console in a pseudo-terminal, against both engines.

The console runs as an operator runs it (`python -m tui.cli --address … --no-start`)
in a 120x40 pty; a `pyte` terminal emulator reads what it draws, so every
figure is "until it is on the screen", not until some internal state changed.
Against Debian's containerd and against ctrdeck's engine, each seeded through
`core.client` with 2,000 containers and 500 images, it measures:

- cold start: process launch to the first frame, and to the first frame that
  shows the seeded containers;
- event to screen: a container created through the client, until its row is on
  screen (and its line in the event log); a container deleted, until its row is gone;
- frame time with 2,000 containers and 500 images: a key press until the
  screen shows its result (`j` moves the cursor, `G` jumps to the last row,
  `2`/`1` switch between images and containers);
- idle: CPU time of the console process (and of the engine) over a quiet
  window, as a share of one core, and the bytes the console writes to the
  terminal meanwhile (what an SSH link carries); on the seeded node with
  `--running` busybox tasks (`ctr run -d`) started after the frames.

Prints a markdown table of ratios (ctrdeck / containerd; both columns run the
same console, so the ratio shows what the engine changes).

With `--ssh-only` it measures instead what an SSH link carries, at 80x24 and
160x45 with five real busybox containers running (`ctr run -d`) and thirty
more created: bytes per second idle, idle with a dialog open, and bytes per key.

    .venv/bin/python -m bench.bench_console [--idle-seconds 60] [--starts 5] [--presses 30]
    .venv/bin/python -m bench.bench_console --containers 10000 --running 50
    .venv/bin/python -m bench.bench_console --ssh-only [--ssh-idle 30] [--presses 20]
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import fcntl
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyte

from bench.stats import machine, pct, table
from core.api.containerd.services.containers import v1 as containers_api
from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.types import Descriptor
from core.api.google.protobuf import Any as AnyMessage
from core.client import Client
from tests import engine_proc

COLS, ROWS = 120, 40
CONTAINERS = 2000
IMAGES = 500
RUNNING = 50
SPEC_URL = "types.containerd.io/opencontainers/runtime-spec/1/Spec"
# The image records point at an index that is not in the content store: the
# console still lists them (its size column says "-"), which is all this needs.
TARGET = Descriptor(
    media_type="application/vnd.oci.image.index.v1+json", digest="sha256:" + "b" * 64, size=1234
)
CLK_TCK = os.sysconf("SC_CLK_TCK")
# A key's frame is what the console writes within a second of it, and until it pauses.
KEY_WINDOW = 1.0
QUIET = 0.3
# The SSH figures: a node with a few containers running, at two terminal sizes.
SSH_NS = "bench-ssh"
SSH_RUNNING = 5
SSH_CREATED = 30
SSH_SIZES = ((80, 24), (160, 45))


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def spec(container_id: str) -> AnyMessage:
    body = {
        "ociVersion": "1.0.2-dev",
        "process": {"args": ["/bin/sleep", "1000"], "cwd": "/", "env": ["PATH=/bin"]},
        "root": {"path": "rootfs"},
        "linux": {"cgroupsPath": f"/default/{container_id}"},
    }
    return AnyMessage(type_url=SPEC_URL, value=json.dumps(body).encode())


def image_name(i: int) -> str:
    return f"registry.example.com/bench/app-{i:03d}:v1"


async def create_container(client: Client, container_id: str, image: str) -> None:
    await client.containers.create(
        containers_api.CreateContainerRequest(
            container=containers_api.Container(
                id=container_id,
                image=image,
                runtime=containers_api.ContainerRuntime(name="io.containerd.runc.v2"),
                spec=spec(container_id),
                snapshotter="overlayfs",
                snapshot_key=container_id,
            )
        )
    )


async def seed(client: Client, containers: int, images: int) -> None:
    for i in range(images):
        await client.images.create(
            images_api.CreateImageRequest(image=images_api.Image(name=image_name(i), target=TARGET))
        )
    for i in range(containers):
        await create_container(client, f"bench-{i:04d}", image_name(i % images))


class PtyConsole:
    """One console process on a pseudo-terminal, with an emulated screen of what it drew."""

    def __init__(
        self,
        address: str,
        config_home: Path,
        argv: list[str] | None = None,
        *,
        cols: int = COLS,
        rows: int = ROWS,
    ) -> None:
        self.argv = argv or [sys.executable, "-m", "tui.cli", "--address", address, "--no-start"]
        self.config_home = config_home
        self.cols, self.rows = cols, rows
        self.screen = pyte.Screen(cols, rows)
        self.stream = pyte.Stream(self.screen)
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.bytes_out = 0
        self.last_output = 0.0
        self.changed = asyncio.Event()
        self.proc: subprocess.Popen[bytes] | None = None
        self.master = -1
        self.launched = 0.0

    def start(self) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", self.rows, self.cols, 0, 0))
        env = dict(
            os.environ,
            TERM="xterm-256color",
            COLORTERM="truecolor",
            XDG_CONFIG_HOME=str(self.config_home),
            PYTHONPATH=str(engine_proc.ROOT),
        )
        env.pop("NO_COLOR", None)
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen(
            self.argv,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=engine_proc.ROOT,
            env=env,
            start_new_session=True,
            # The pty becomes the console's controlling terminal, as under sshd.
            preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
        )
        os.close(slave)
        self.master = master
        asyncio.get_running_loop().add_reader(master, self._read)

    def _read(self) -> None:
        try:
            data = os.read(self.master, 1 << 16)
        except OSError:
            data = b""
        if not data:
            asyncio.get_running_loop().remove_reader(self.master)
            return
        self.last_output = time.perf_counter()
        self.bytes_out += len(data)
        self.stream.feed(self.decoder.decode(data))
        self.changed.set()

    @property
    def lines(self) -> list[str]:
        return self.screen.display

    def has(self, text: str, *, without: str = "") -> bool:
        return any(text in line and not (without and without in line) for line in self.lines)

    def has_all(self, *texts: str) -> bool:
        return any(all(t in line for t in texts) for line in self.lines)

    async def until(self, predicate: Callable[[], bool], timeout: float = 60.0) -> float:
        """The time (perf_counter) of the output after which `predicate` first held."""
        deadline = time.perf_counter() + timeout
        while not predicate():
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                shown = "\n".join(self.lines)
                raise TimeoutError(f"the console did not get there; its screen:\n{shown}")
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), remaining)
        return self.last_output

    def press(self, key: str) -> float:
        os.write(self.master, key.encode())
        return time.perf_counter()

    def cursor_id(self) -> str:
        """The container id on the row the table cursor highlights."""
        header = next(y for y, line in enumerate(self.lines) if " ID " in line)
        x = self.lines[header].index(" ID ") + 1
        rows = [y for y in range(header + 1, self.rows) if self.lines[y][x:].startswith("bench-")]
        backgrounds = [self.screen.buffer[y][x].bg for y in rows]
        # The cursor row is the one row painted in a background of its own.
        for y, bg in zip(rows, backgrounds, strict=True):
            if backgrounds.count(bg) == 1:
                return self.lines[y][x:].split()[0]
        return ""

    async def key_bytes(self, key: str) -> int:
        """The bytes the console writes in answer to one key: a second's worth, then until quiet.

        A frame can come in parts (a dialog mounts, then fills in), so the
        window is fixed rather than ended by the first pause.
        """
        before = self.bytes_out
        self.press(key)
        await asyncio.sleep(KEY_WINDOW)
        while time.perf_counter() - self.last_output < QUIET:
            await asyncio.sleep(0.02)
        return self.bytes_out - before

    def cpu(self) -> float:
        assert self.proc is not None
        return cpu_seconds(self.proc.pid)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                os.write(self.master, b"q")
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(5)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        with contextlib.suppress(ValueError, OSError):
            asyncio.get_running_loop().remove_reader(self.master)
        with contextlib.suppress(OSError):
            os.close(self.master)
        self.proc = None


# The floor under every frame figure: Textual itself, a bare DataTable of as many
# rows in the same pty, with nothing of the console around it.
BARE_TABLE = """
import sys
from textual.app import App
from textual.widgets import DataTable

class Bare(App):
    def compose(self):
        yield DataTable(cursor_type="row")

    def on_mount(self):
        table = self.query_one(DataTable)
        table.add_column("ID")
        table.add_column("IMAGE")
        for i in range(int(sys.argv[1])):
            table.add_row(f"bench-{i:04d}", f"app-{i % 500:03d}")
        table.focus()

Bare().run()
"""
DOWN = "\x1b[B"


async def floor(home: Path, rows: int, presses: int) -> list[float]:
    """Key to frame of a bare Textual DataTable (`down`, since it has no `j`)."""
    bare = PtyConsole("", home, [sys.executable, "-c", BARE_TABLE, str(rows)])
    bare.start()
    out: list[float] = []
    try:
        await bare.until(lambda: bare.has("bench-0000"))
        await asyncio.sleep(1.0)
        for _ in range(presses):
            before = bare.cursor_id()
            t0 = bare.press(DOWN)
            t = await bare.until(lambda b=before: bare.cursor_id() not in ("", b))
            out.append((t - t0) * 1000)
            await asyncio.sleep(0.05)
    finally:
        bare.stop()
    return out


@contextlib.contextmanager
def config_home() -> Iterator[Path]:
    """A config dir of its own, so no developer keymap changes the keys pressed here."""
    path = Path(tempfile.mkdtemp(prefix="bench-console-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def cold_starts(address: str, home: Path, runs: int) -> dict[str, list[float]]:
    first: list[float] = []
    rows: list[float] = []
    for _ in range(runs):
        console = PtyConsole(address, home)
        console.start()
        try:
            t = await console.until(lambda c=console: c.has("ctrdeck ▸"))
            first.append((t - console.launched) * 1000)
            t = await console.until(lambda c=console: c.has("bench-0000"))
            rows.append((t - console.launched) * 1000)
        finally:
            console.stop()
    return {"first": first, "rows": rows}


async def event_delays(client: Client, console: PtyConsole, probes: int) -> dict[str, list[float]]:
    row: list[float] = []
    log: list[float] = []
    gone: list[float] = []
    for i in range(probes):
        # "a-…" sorts before every "bench-…" row, so the new row lands in view.
        cid = f"a-probe-{i:03d}"
        t0 = time.perf_counter()
        await create_container(client, cid, image_name(0))
        seen_row = await console.until(lambda cid=cid: console.has(cid, without="/containers/"))
        seen_log = await console.until(lambda cid=cid: console.has_all(cid, "/containers/create"))
        row.append((seen_row - t0) * 1000)
        log.append((seen_log - t0) * 1000)
        t0 = time.perf_counter()
        await client.containers.delete(containers_api.DeleteContainerRequest(id=cid))
        t = await console.until(lambda cid=cid: not console.has(cid, without="/containers/"))
        gone.append((t - t0) * 1000)
        await asyncio.sleep(0.2)
    return {"row": row, "log": log, "gone": gone}


async def frames(console: PtyConsole, presses: int, containers: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"j": [], "G": [], "switch": []}
    for _ in range(presses):
        before = console.cursor_id()
        t0 = console.press("j")
        t = await console.until(lambda b=before: console.cursor_id() not in ("", b))
        out["j"].append((t - t0) * 1000)
        await asyncio.sleep(0.05)
    for _ in range(max(presses // 3, 3)):
        for key, last in (("G", f"bench-{containers - 1:04d}"), ("g", "bench-0000")):
            t0 = console.press(key)
            t = await console.until(lambda last=last: console.cursor_id() == last)
            if key == "G":
                out["G"].append((t - t0) * 1000)
            await asyncio.sleep(0.05)
    for _ in range(max(presses // 3, 3)):
        t0 = console.press("2")
        t = await console.until(lambda: console.has("DIGEST") and console.has("app-000"))
        out["switch"].append((t - t0) * 1000)
        await asyncio.sleep(0.05)
        t0 = console.press("1")
        t = await console.until(lambda: console.has("STATUS") and console.has("bench-0000"))
        out["switch"].append((t - t0) * 1000)
        await asyncio.sleep(0.05)
    return out


async def idle(console: PtyConsole, engine_pid: int, seconds: float) -> dict[str, float]:
    # Past the "connected" notification's timeout, whose removal is a repaint.
    await asyncio.sleep(6.0)
    cpu0, engine0, bytes0, t0 = (
        console.cpu(),
        cpu_seconds(engine_pid),
        console.bytes_out,
        time.time(),
    )
    await asyncio.sleep(seconds)
    elapsed = time.time() - t0
    return {
        "console": (console.cpu() - cpu0) / elapsed * 100,
        "engine": (cpu_seconds(engine_pid) - engine0) / elapsed * 100,
        "bytes": (console.bytes_out - bytes0) / elapsed,
    }


async def measure(running: engine_proc.Running, args: argparse.Namespace) -> dict[str, Any]:
    address = str(running.address)
    client = Client(address, "default")
    results: dict[str, Any] = {}
    started: list[str] = []
    try:
        with config_home() as home:
            empty = PtyConsole(address, home)
            empty.start()
            try:
                await empty.until(lambda: empty.has("ctrdeck ▸"))
                results["idle_empty"] = await idle(empty, running.proc.pid, args.idle_seconds)
            finally:
                empty.stop()
            t = time.perf_counter()
            await seed(client, args.containers, args.images)
            results["seed_s"] = time.perf_counter() - t
            results["cold"] = await cold_starts(address, home, args.starts)
            console = PtyConsole(address, home)
            console.start()
            try:
                await console.until(lambda: console.has("bench-0000"))
                await asyncio.sleep(1.0)
                results["events"] = await event_delays(client, console, args.probes)
                results["frames"] = await frames(console, args.presses, args.containers)
                # After the frames: their rows sort after the seeded ones, which `G` expects last.
                started = start_tasks(running, args.running)
                results["idle"] = await idle(console, running.proc.pid, args.idle_seconds)
            finally:
                console.stop()
    finally:
        await end_tasks(client, started)
        client.close()
    return results


def start_tasks(running: engine_proc.Running, count: int) -> list[str]:
    """`count` busybox tasks running in the console's namespace (`ctr run -d`), for idle."""
    from bench import bench_tasks

    def ctr(*argv: str) -> str:
        return bench_tasks.checked(
            ["ctr", "--address", str(running.address), "--namespace", "default", *argv]
        )

    if count == 0:
        return []
    work = Path(tempfile.mkdtemp(prefix="bench-console-run-"))
    try:
        archive = bench_tasks.image_archive(work)
        ctr("images", "import", "--base-name", bench_tasks.IMAGE.rsplit(":", 1)[0], str(archive))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ids = [f"zz-run-{i:02d}" for i in range(count)]
    fifos = str(running.base / "fifo")
    for cid in ids:
        ctr("run", "-d", "--fifo-dir", fifos, bench_tasks.IMAGE, cid, "sleep", "86400")
    return ids


async def end_tasks(client: Client, ids: list[str]) -> None:
    from bench import bench_tasks

    for cid in ids:
        await bench_tasks.end_task(client, cid)
        await bench_tasks.remove_container(client, cid)
    if ids:
        bench_tasks.remove_namespace_cgroups("default")


async def ssh_bytes(running: engine_proc.Running, args: argparse.Namespace) -> dict[str, float]:
    """Terminal output at 80x24 and 160x45 with real busybox containers running.

    What an SSH link carries: bytes per second while idle (the metrics tick
    every 2 s, ages every 5 s), idle with the help dialog open over the table,
    and bytes per key (`j` through a table longer than the screen, `2`/`1`
    switching tabs, `?` opening help).
    """
    from bench import bench_tasks

    def ctr(*argv: str) -> str:
        return bench_tasks.checked(
            ["ctr", "--address", str(running.address), "--namespace", SSH_NS, *argv]
        )

    work = Path(tempfile.mkdtemp(prefix="bench-ssh-"))
    client = Client(str(running.address), SSH_NS)
    out: dict[str, float] = {}
    try:
        archive = bench_tasks.image_archive(work)
        ctr("images", "import", "--base-name", bench_tasks.IMAGE.rsplit(":", 1)[0], str(archive))
        fifos = running.base / "fifo"
        for i in range(SSH_RUNNING):
            ctr(
                "run",
                "-d",
                "--fifo-dir",
                str(fifos),
                bench_tasks.IMAGE,
                f"run-{i}",
                "sleep",
                "86400",
            )
        for i in range(SSH_CREATED):
            ctr("containers", "create", bench_tasks.IMAGE, f"zz-idle-{i:02d}")
        argv = [sys.executable, "-m", "tui.cli", "-a", str(running.address), "-n", SSH_NS]
        with config_home() as home:
            for cols, rows in SSH_SIZES:
                size = f"{cols}x{rows}"
                console = PtyConsole("", home, [*argv, "--no-start"], cols=cols, rows=rows)
                console.start()
                try:
                    await console.until(lambda c=console: c.has("run-4") and c.has("RUNNING"))
                    # Past the "connected" notification's timeout, whose removal is a repaint.
                    await asyncio.sleep(6.0)
                    b0, t0 = console.bytes_out, time.perf_counter()
                    await asyncio.sleep(args.ssh_idle)
                    out[f"idle {size}"] = (console.bytes_out - b0) / (time.perf_counter() - t0)
                    js = [await console.key_bytes("j") for _ in range(args.presses)]
                    out[f"j mean {size}"] = sum(js) / len(js)
                    out[f"j max {size}"] = max(js)
                    out[f"tab {size}"] = (
                        await console.key_bytes("2") + await console.key_bytes("1")
                    ) / 2
                    out[f"help {size}"] = await console.key_bytes("?")
                    await asyncio.sleep(1.0)
                    b0, t0 = console.bytes_out, time.perf_counter()
                    await asyncio.sleep(args.ssh_idle)
                    out[f"dialog {size}"] = (console.bytes_out - b0) / (time.perf_counter() - t0)
                finally:
                    console.stop()
    finally:
        await bench_tasks.sweep(client)
        client.close()
        bench_tasks.remove_namespace_cgroups(SSH_NS)
        shutil.rmtree(work, ignore_errors=True)
    return out


def ssh_figures(r: dict[str, float]) -> list[tuple[str, float, str]]:
    rows = []
    for cols, rows_ in SSH_SIZES:
        size = f"{cols}x{rows_}"
        rows += [
            (f"{size}: idle, {SSH_RUNNING} containers running", r[f"idle {size}"], "B/s"),
            (f"{size}: idle, help dialog open over them", r[f"dialog {size}"], "B/s"),
            (f"{size}: `j` in a table longer than the screen, mean", r[f"j mean {size}"], "B"),
            (f"{size}: `j`, the most one press wrote", r[f"j max {size}"], "B"),
            (f"{size}: `2`/`1` switch tabs", r[f"tab {size}"], "B"),
            (f"{size}: `?` opens help", r[f"help {size}"], "B"),
        ]
    return rows


def ssh_report(results: dict[str, dict[str, float]]) -> str:
    if len(results) == 2:
        cd, cx = ssh_figures(results["containerd"]), ssh_figures(results["ctrdeck"])
        rows = table([(w, a, b, u) for (w, a, u), (_, b, _) in zip(cd, cx, strict=True)])
        return rows.replace("| nanx |", "| both none |")
    ((name, r),) = results.items()
    lines = [f"| measure | {name} |", "|---|---|"]
    lines += [f"| {w} | {v:.0f} {u} |" for w, v, u in ssh_figures(r)]
    return "\n".join(lines)


def figures(r: dict[str, Any], args: argparse.Namespace) -> list[tuple[str, float, str]]:
    """(what, value, unit) of one engine's run, in the order the table prints them."""
    n = f"{args.containers:,}"
    secs = f"{args.idle_seconds:g} s"
    out = [
        ("cold start → first frame, p50", pct(r["cold"]["first"], 50), "ms"),
        (f"cold start → {n} containers on screen, p50", pct(r["cold"]["rows"], 50), "ms"),
        ("container created → its row on screen, p50", pct(r["events"]["row"], 50), "ms"),
        ("container created → its row on screen, p99", pct(r["events"]["row"], 99), "ms"),
        ("container created → its event-log line, p50", pct(r["events"]["log"], 50), "ms"),
        ("container deleted → its row gone, p50", pct(r["events"]["gone"], 50), "ms"),
        (f"frame: `j` cursor down, {n} rows, p50", pct(r["frames"]["j"], 50), "ms"),
        (f"frame: `j` cursor down, {n} rows, p99", pct(r["frames"]["j"], 99), "ms"),
        (f"frame: `G` to the last of {n} rows, p50", pct(r["frames"]["G"], 50), "ms"),
        ("frame: switch images ↔ containers, p50", pct(r["frames"]["switch"], 50), "ms"),
    ]
    busy = f"{n} containers, {args.running} running"
    for key, label in (("idle_empty", "empty node"), ("idle", busy)):
        out += [
            (f"idle CPU of the console, {label}, over {secs}", r[key]["console"], "% core"),
            (f"idle CPU of the engine under the console, {label}", r[key]["engine"], "% core"),
            (f"idle terminal output, {label}", r[key]["bytes"], "B/s"),
        ]
    return out


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> str:
    if len(results) == 2:
        cd = figures(results["containerd"], args)
        cx = figures(results["ctrdeck"], args)
        rows = table([(w, a, b, u) for (w, a, u), (_, b, _) in zip(cd, cx, strict=True)])
        # Nothing over nothing (no idle output from either) is not a ratio.
        return rows.replace("| nanx |", "| both none |")
    ((name, r),) = results.items()
    lines = [f"| measure | {name} |", "|---|---|"]
    lines += [f"| {w} | {v:.3f} {u} |" for w, v, u in figures(r, args)]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idle-seconds", type=float, default=60.0)
    parser.add_argument("--starts", type=int, default=5, help="cold starts per engine")
    parser.add_argument("--probes", type=int, default=20, help="containers created and deleted")
    parser.add_argument("--presses", type=int, default=30, help="`j` presses")
    parser.add_argument("--containers", type=int, default=CONTAINERS)
    parser.add_argument(
        "--running", type=int, default=RUNNING, help="busybox tasks running while idle is measured"
    )
    parser.add_argument("--images", type=int, default=IMAGES)
    parser.add_argument("--only", choices=("containerd", "ctrdeck"), help="one engine only")
    parser.add_argument(
        "--ssh-only", action="store_true", help="only the terminal-output (SSH) figures"
    )
    parser.add_argument("--ssh-idle", type=float, default=30.0, help="idle window, SSH figures")
    args = parser.parse_args()
    if args.ssh_only:
        ssh: dict[str, dict[str, float]] = {}
        for start in (engine_proc.containerd, engine_proc.ctrdeck):
            if args.only and args.only != start.__name__:
                continue
            with start() as running:
                ssh[running.name] = asyncio.run(ssh_bytes(running, args))
        print(f"machine: {machine()}\n")
        print(ssh_report(ssh))
        return
    results: dict[str, dict[str, Any]] = {}
    for start in (engine_proc.containerd, engine_proc.ctrdeck):
        if args.only and args.only != start.__name__:
            continue
        with start() as running:
            results[running.name] = asyncio.run(measure(running, args))
    print(f"machine: {machine()}\n")
    print(f"console: {COLS}x{ROWS} pty, {args.containers:,} containers, {args.images} images\n")
    print(report(results, args))
    with config_home() as home:
        bare = asyncio.run(floor(home, args.containers, args.presses))
    print(
        f"\nthe floor: a bare Textual DataTable of {args.containers:,} rows in the same pty "
        f"answers `down` in {pct(bare, 50):.1f} ms p50, {pct(bare, 99):.1f} ms p99"
    )
    seeding = ", ".join(f"{name} {r['seed_s']:.1f} s" for name, r in results.items())
    print(f"\nseeding took {seeding}")


if __name__ == "__main__":
    main()
