"""A recording proxy for an engine's Unix socket: what a client's calls cost on each side.

`Proxy` listens on a socket of its own, forwards each connection to the
engine's, and notes every chunk either way with the time it arrived (nothing
is parsed while it runs, so it adds the same hop to any engine). `calls` then
splits the recorded bytes into HTTP/2 frames and each connection into its
calls: when the request's HEADERS and its END_STREAM arrived, when the reply's
first frame and its END_STREAM left the engine. Between a call's request end
and its reply end is the engine's (transport and handler); between a reply's
end and the next request's HEADERS is the client's. `Call.why` says whether
round six's `core.receive` (which took only a block decoded before with the
table at rest, to a list seen before) could have taken the request's HEADERS,
by replaying the connection's header blocks through `CachedDecoder`: "cached"
(yes), "new-table" (the block itself changes the table), "table-moved" (the
table changed since this block was last seen), "first" (a header list never
seen), "continuation", "split" (the frame did not come whole in one read).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from hpack import Decoder

from core.hpack_cache import CachedDecoder, _same

CLIENT, ENGINE = "c", "e"
NAMES = {
    0: "DATA",
    1: "HEADERS",
    3: "RST",
    4: "SETTINGS",
    6: "PING",
    7: "GOAWAY",
    8: "WUPD",
    9: "CONT",
}


@dataclass
class Call:
    sid: int
    path: str = ""
    why: str = ""
    headers_at: float = 0.0
    request_end: float = 0.0
    reply_first: float = 0.0
    reply_end: float = 0.0


@dataclass
class Connection:
    chunks: list[tuple[float, str, bytes]] = field(default_factory=list)


class Proxy:
    """Forwards `listen` to `target`, noting each connection's chunks (in a thread of its own)."""

    def __init__(self, listen: Path, target: Path) -> None:
        self.listen, self.target = listen, target
        self.connections: list[Connection] = []
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Proxy:
        self.thread.start()
        self.ready.wait()
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
        with contextlib.suppress(FileNotFoundError):
            self.listen.unlink()

    def take(self) -> list[Connection]:
        taken, self.connections = self.connections, []
        return taken

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_unix_server(self._serve, str(self.listen)))
        self.ready.set()
        self.loop.run_forever()

    async def _close(self) -> None:
        tasks = asyncio.all_tasks() - {asyncio.current_task()}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection(str(self.target))
        conn = Connection()
        self.connections.append(conn)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, side: str) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(1 << 16):
                    conn.chunks.append((time.perf_counter(), side, data))
                    dst.write(data)
                dst.write_eof()

        await asyncio.gather(
            pump(reader, up_writer, CLIENT), pump(up_reader, writer, ENGINE), return_exceptions=True
        )
        writer.close()
        up_writer.close()


def frames(conn: Connection, side: str) -> Iterator[tuple[float, int, int, int, bytes, bool]]:
    """(arrival, type, flags, stream, payload, whole-in-one-chunk) of one side's frames."""
    buf = b""
    skip = 24 if side == CLIENT else 0
    for at, s, data in conn.chunks:
        if s != side:
            continue
        fresh = not buf
        buf += data
        if skip:
            n = min(skip, len(buf))
            buf, skip = buf[n:], skip - n
        while len(buf) >= 9:
            length = int.from_bytes(buf[:3], "big")
            if len(buf) < 9 + length:
                break
            yield (
                at,
                buf[3],
                buf[4],
                int.from_bytes(buf[5:9], "big") & 0x7FFFFFFF,
                buf[9 : 9 + length],
                fresh,
            )
            buf = buf[9 + length :]
            fresh = True
        if buf:
            fresh = False


def calls(conn: Connection) -> tuple[list[Call], Counter[str]]:
    """A connection's calls in order, and a count of its frames by side and type."""
    got: dict[int, Call] = {}
    counts: Counter[str] = Counter()
    cached = CachedDecoder()
    seen_lists: set[tuple[object, ...]] = set()
    plain = Decoder()
    pending: tuple[int, bytes, bool, float] | None = None
    for at, kind, flags, sid, payload, whole in frames(conn, CLIENT):
        counts[f"client {NAMES.get(kind, kind)}"] += 1
        if kind == 1 or (kind == 9 and pending):
            if kind == 1:
                body = payload
                if flags & 0x8:
                    body = body[1 : len(body) - body[0]]
                if flags & 0x20:
                    body = body[5:]
                pending = (sid, body, whole and bool(flags & 0x4), at)
                call = got.setdefault(sid, Call(sid, headers_at=at))
                if not flags & 0x4:
                    call.why = "continuation"
            else:
                assert pending is not None
                pending = (pending[0], pending[1] + payload, False, pending[3])
            if flags & 0x4:
                s, block, _, _ = pending
                call = got[s]
                state_ok = _same(cached.state, cached._state())
                hit = state_ok and block in cached.headers
                headers = cached.decode(block, raw=True)
                key = tuple(headers)
                if not call.why:
                    if not whole:
                        call.why = "split"
                    elif hit and key in seen_lists:
                        call.why = "cached"
                    elif not _same(cached.state, cached._state()) or (
                        block[:1] and block[0] & 0xC0 == 0x40
                    ):
                        call.why = "new-table"
                    elif key in seen_lists:
                        call.why = "table-moved"
                    else:
                        call.why = "first"
                seen_lists.add(key)
                call.path = dict(plain.decode(block, raw=True)).get(b":path", b"").decode()
                pending = None
            if flags & 0x1:
                got[sid].request_end = at
        elif kind == 0 and sid in got and flags & 0x1:
            got[sid].request_end = at
    for at, kind, flags, sid, _payload, _whole in frames(conn, ENGINE):
        counts[f"engine {NAMES.get(kind, kind)}"] += 1
        call = got.get(sid)
        if call is None or kind not in (0, 1):
            continue
        if not call.reply_first:
            call.reply_first = at
        if flags & 0x1:
            call.reply_end = at
    counts["client reads"] = sum(1 for c in conn.chunks if c[1] == CLIENT)
    counts["engine writes"] = sum(1 for c in conn.chunks if c[1] == ENGINE)
    return [got[s] for s in sorted(got)], counts


def gaps(conns: list[Connection]) -> dict[str, float]:
    """Sums over all calls, in ms: the engine's (request end to reply end), the client's
    (reply end to the next request's HEADERS), and the first request's wait after connecting."""
    out: Counter[str] = Counter()
    for conn in conns:
        found, _ = calls(conn)
        if not conn.chunks:
            continue
        start = conn.chunks[0][0]
        previous = None
        for call in found:
            if call.reply_end and call.request_end:
                out["engine"] += (call.reply_end - call.request_end) * 1000
            if previous is not None:
                out["client"] += (call.headers_at - previous) * 1000
            else:
                out["before first call"] += (call.headers_at - start) * 1000
            if call.reply_end:
                previous = call.reply_end
            out["calls"] += 1
    return dict(out)
