"""Engine-side cost of one unary call, in process: no client, no containerd, no sockets.

A profiling aid for the gRPC call path (`core.connection`, `core.hpack_cache`, the
status and message wrappers), not a comparison: Version requests, HPACK-coded and
framed up front by a bare encoder, are fed in batches into `HardenedServer`'s protocol
over a transport that only counts bytes; the client announces windows large enough
never to read a reply. Prints CPU (process time) per call and, with `--profile`, the
number of Python function calls per call (deterministic, unlike CPU on a shared
machine) and cProfile's top functions.

    .venv/bin/python -m bench.call_path [--calls 10000] [--batch 10] [--profile]
        [--vary N] [--pings]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import time
from typing import Any

from hpack import Encoder
from hyperframe.frame import (
    DataFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from core.connection import HardenedServer, Limits
from core.services import messages, status
from core.services.codec import Codec
from core.services.version import VersionService

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
HEADERS = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/containerd.services.version.v1.Version/Version"),
    (":authority", "localhost"),
    ("te", "trailers"),
    ("content-type", "application/grpc"),
    ("user-agent", "grpc-python-grpclib"),
    ("containerd-namespace", "bench"),
]
WARM_UP = 2000


class CountingTransport:
    def __init__(self) -> None:
        self.writes = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def requests(calls: int, batch: int, vary: int = 0, pings: bool = False) -> list[bytes]:
    """`calls` requests on streams 1, 3, 5...; `batch` of them per chunk; with `vary`,
    a new namespace every `vary` calls (a new field in the HPACK table, as a client's
    new path or metadata is: the next block, the same list, is coded anew); with
    `pings`, each request after a PING and a WINDOW_UPDATE, as grpc-go sends them."""
    encoder = Encoder()
    chunks, frames = [], []
    for i in range(calls):
        fields = HEADERS
        if vary:
            fields = [*HEADERS[:-1], ("containerd-namespace", f"bench-{i // vary}")]
        headers = HeadersFrame(2 * i + 1, encoder.encode(fields), flags=["END_HEADERS"])
        data = DataFrame(2 * i + 1, b"\x00\x00\x00\x00\x00", flags=["END_STREAM"])
        control = b""
        if pings:
            ping = PingFrame(0, opaque_data=i.to_bytes(8, "big"))
            control = ping.serialize() + WindowUpdateFrame(0, window_increment=5).serialize()
        frames.append(control + headers.serialize() + data.serialize())
        if len(frames) == batch:
            chunks.append(b"".join(frames))
            frames = []
    if frames:
        chunks.append(b"".join(frames))
    return chunks


async def run(calls: int, batch: int, profile: bool, vary: int = 0, pings: bool = False) -> None:
    finished = 0

    def observe(*_: Any) -> None:
        nonlocal finished
        finished += 1

    server = HardenedServer([VersionService()], codec=Codec(), limits=Limits())
    status.install(server, [observe])
    messages.install(server, 16 << 20)
    protocol = server._protocol_factory()
    transport = CountingTransport()
    protocol.connection_made(transport)
    settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1})
    # Room left for `--pings`' WINDOW_UPDATEs of 5 bytes.
    window = WindowUpdateFrame(0, window_increment=2**31 - 1 - 65535 - 2**20)
    protocol.data_received(PREFACE + settings.serialize() + window.serialize())
    chunks = requests(WARM_UP + calls, batch, vary, pings)

    async def feed(part: list[bytes], count: int) -> None:
        target = finished + count
        for chunk in part:
            protocol.data_received(chunk)
            while protocol.processor.streams:
                await asyncio.sleep(0)
        while finished < target:
            await asyncio.sleep(0)

    await feed(chunks[: WARM_UP // batch], WARM_UP)
    gc.collect()
    profiler = cProfile.Profile() if profile else None
    started = time.process_time()
    if profiler is not None:
        profiler.enable()
    await feed(chunks[WARM_UP // batch :], calls)
    if profiler is not None:
        profiler.disable()
    cpu = time.process_time() - started
    print(f"{cpu / calls * 1e6:.1f} µs CPU per call ({calls} calls, {batch} per chunk)")
    if profiler is not None:
        stats = pstats.Stats(profiler)
        print(f"{stats.total_calls / calls:.0f} Python function calls per call")  # type: ignore[attr-defined]
        stats.sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--vary", type=int, default=0, help="a new header value every N calls (as ctr's new paths)"
    )
    parser.add_argument("--pings", action="store_true", help="a PING and WINDOW_UPDATE per call")
    args = parser.parse_args()
    asyncio.run(run(args.calls, args.batch, args.profile, args.vary, args.pings))


if __name__ == "__main__":
    main()
