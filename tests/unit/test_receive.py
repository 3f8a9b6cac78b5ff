"""The receive fast path (`core.receive`) against h2's own receive path.

Each scenario runs twice on the engine's protocol in process: with requests
opened by `Receiver` where it can, and with every byte fed to h2. Both must
give the same bytes on the wire, the same replies, and leave h2's records the
same: every stream's states, flags, windows and body counts, the connection's
windows, highest stream id, closed streams and HPACK table. Scenarios speak
through a plain h2 client (`tests.unit.test_calls.Pair`) or, for what a
well-behaved client never sends, through hand-made frames.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

import h2.errors
import h2.settings
import pytest
from grpclib import protocol as gproto
from hpack import Encoder, NeverIndexedHeaderTuple
from hyperframe.frame import (
    DataFrame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from core import calls
from core.connection import HardenedServer, Limits
from core.receive import Receiver
from tests.h2attack import PREFACE, grpc_frame
from tests.unit.test_calls import Pair, RawCodec, Recorder, Service, _ok


def _window(manager: Any) -> tuple[int, ...]:
    return (manager.current_window_size, manager.max_window_size, manager._bytes_processed)


def h2_records(conn: Any) -> dict[str, Any]:
    """Everything h2 on the server keeps that a received request touches."""
    streams = {}
    for sid, s in conn.streams.items():
        m = s.state_machine
        streams[sid] = (
            m.state,
            m.stream_closed_by,
            m.client,
            m.headers_sent,
            m.trailers_sent,
            m.headers_received,
            m.trailers_received,
            s.outbound_flow_control_window,
            _window(s._inbound_window_manager),
            s._expected_content_length,
            s._actual_content_length,
            s.request_method,
            s.max_outbound_frame_size,
        )
    table = conn.decoder.header_table
    return {
        "streams": streams,
        "closed": dict(conn._closed_streams),
        "highest": conn.highest_inbound_stream_id,
        "inbound": _window(conn._inbound_flow_control_window_manager),
        "outbound": conn.outbound_flow_control_window,
        "state": conn.state_machine.state,
        "table": list(table.dynamic_entries),
        "pending": bytes(conn.incoming_buffer._data),
    }


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The stream of every request `Receiver` opened, in order."""
    sids: list[int] = []
    real = Receiver.open

    def recorded(self: Receiver, sid: int, block: bytes) -> Any:
        events = real(self, sid, block)
        if events is not None:
            sids.append(sid)
        return events

    monkeypatch.setattr(Receiver, "open", recorded)
    return sids


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The stream and length of every DATA frame `Receiver` took, in order."""
    taken: list[tuple[int, int]] = []
    real = Receiver.receive

    def recorded(self: Receiver, sid: int, message: bytes, end_stream: int) -> Any:
        events = real(self, sid, message, end_stream)
        if events is not None:
            taken.append((sid, len(message)))
        return events

    monkeypatch.setattr(Receiver, "receive", recorded)
    return taken


class Raw:
    """The engine's protocol fed hand-made frames; records what it writes."""

    HEADERS = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/t.T/Echo"),
        (":authority", "localhost"),
        ("te", "trailers"),
        ("content-type", "application/grpc"),
    ]

    def __init__(self, limits: Limits | None = None, greet: bool = True) -> None:
        self.server = HardenedServer([Service()], codec=RawCodec(), limits=limits or Limits())
        self.protocol = self.server._protocol_factory()
        self.transport = Recorder()
        self.protocol.connection_made(self.transport)
        self.encoder = Encoder()
        self.wire = bytearray()
        if greet:
            self.feed(self.greeting())

    @staticmethod
    def greeting() -> bytes:
        settings = SettingsFrame(0, settings={SettingsFrame.INITIAL_WINDOW_SIZE: 2**31 - 1})
        return PREFACE + settings.serialize() + SettingsFrame(0, flags=["ACK"]).serialize()

    @property
    def h2(self) -> Any:
        return self.protocol.connection._connection

    def call(
        self,
        sid: int,
        body: bytes = b"3",
        *,
        headers: list[tuple[str, str]] | None = None,
        data_sid: int | None = None,
        head_flags: tuple[str, ...] = ("END_HEADERS",),
        data_flags: tuple[str, ...] = ("END_STREAM",),
        message: bytes | None = None,
    ) -> bytes:
        block = self.encoder.encode(headers or self.HEADERS)
        head = HeadersFrame(sid, block, flags=list(head_flags))
        data = DataFrame(
            sid if data_sid is None else data_sid,
            grpc_frame(body) if message is None else message,
            flags=list(data_flags),
        )
        return head.serialize() + data.serialize()

    def feed(self, data: bytes, split: int = 0) -> None:
        step = split or len(data)
        for at in range(0, len(data), step):
            if self.protocol.closed or self.transport.closing:
                break
            self.protocol.data_received(data[at : at + step])

    async def settle(self) -> None:
        for _ in range(8):
            await asyncio.sleep(0)
        self.wire += self.transport.data
        self.transport.data.clear()

    def close(self) -> None:
        self.protocol.connection_lost(None)


def _h2_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every byte through h2, every call on grpclib's own Stream and Buffer."""
    monkeypatch.setattr(Receiver, "open", lambda *args: None)
    monkeypatch.setattr(Receiver, "receive", lambda *args: None)
    monkeypatch.setattr(calls, "CallStream", gproto.Stream)


async def _pairs_both_ways(
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[[Pair], Awaitable[None]],
    **kwargs: Any,
) -> None:
    fast = Pair(Service(), **kwargs)
    await scenario(fast)
    with monkeypatch.context() as m:
        _h2_only(m)
        plain = Pair(Service(), **kwargs)
        await scenario(plain)
    try:
        assert bytes(fast.wire) == bytes(plain.wire)
        assert fast.replies == plain.replies
        assert h2_records(fast.h2) == h2_records(plain.h2)
    finally:
        fast.close()
        plain.close()


async def _raw_both_ways(
    monkeypatch: pytest.MonkeyPatch,
    scenario: Callable[[Raw], Awaitable[None]],
    limits: Limits | None = None,
    greet: bool = True,
) -> tuple[Raw, Raw]:
    fast = Raw(limits, greet)
    await scenario(fast)
    with monkeypatch.context() as m:
        _h2_only(m)
        plain = Raw(limits, greet)
        await scenario(plain)
    try:
        assert bytes(fast.wire) == bytes(plain.wire)
        assert h2_records(fast.h2) == h2_records(plain.h2)
        assert fast.protocol.closed == plain.protocol.closed
    finally:
        fast.close()
        plain.close()
    return fast, plain


def _goaway(wire: bytes) -> tuple[int, int] | None:
    """The (last stream, error code) of the first GOAWAY the server wrote."""
    at = 0
    while at + 9 <= len(wire):
        length = int.from_bytes(wire[at : at + 3], "big")
        if wire[at + 3] == 0x7:
            frame = GoAwayFrame(0)
            frame.parse_body(memoryview(wire[at + 9 : at + 9 + length]))
            return frame.last_stream_id, frame.error_code
        at += 9 + length
    return None


async def test_many_calls_on_one_connection(
    monkeypatch: pytest.MonkeyPatch, opened: list[int]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sizes = {}
        for round_ in range(6):
            for i in range(30):
                size = (round_ * 30 + i) * 53 % 2000
                sizes[pair.request("Echo", str(size).encode())] = size
            await pair.exchange(2)
        await pair.exchange()
        for sid, size in sizes.items():
            _ok(pair, sid, b"r" * size)

    await _pairs_both_ways(monkeypatch, scenario)
    # The first round's lists are h2's to check; after that nearly every call is opened here.
    assert len(opened) > 120


async def test_interleaved_streams(monkeypatch: pytest.MonkeyPatch, opened: list[int]) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        pair.request("Echo", b"1")
        await pair.exchange()
        waiting = pair.request("Wait", b"")
        streaming = pair.request("ServerStream", b"")
        open_ended = pair.request("Echo", b"7", end=False)
        echoes = [pair.request("Echo", b"5") for _ in range(5)]
        failing = pair.request("Fail", b"")
        await pair.exchange(2)
        pair.client.end_stream(open_ended)
        more = [pair.request("Echo", b"9") for _ in range(5)]
        await pair.exchange(2)
        pair.server._mapping["/t.T/Wait"].func.__self__.release.set()
        await pair.exchange()
        for sid in echoes:
            _ok(pair, sid, b"r" * 5)
        for sid in more:
            _ok(pair, sid, b"r" * 9)
        _ok(pair, open_ended, b"r" * 7)
        _ok(pair, waiting, b"released")
        assert pair.replies[streaming]["trailers"] == {"grpc-status": "0"}
        assert pair.replies[failing]["headers"]["grpc-status"] == "5"

    await _pairs_both_ways(monkeypatch, scenario)
    assert opened


async def test_a_stream_reset_midway(monkeypatch: pytest.MonkeyPatch, opened: list[int]) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        # Each list twice: its request prepared, then its block decoded at rest.
        for _ in range(2):
            pair.request("Wait", b"")
            pair.request("Echo", b"1")
            await pair.exchange()
        waiting = pair.request("Wait", b"")
        before = pair.request("Echo", b"2")
        pair.client.reset_stream(waiting)
        after = pair.request("Echo", b"4")
        await pair.exchange()
        pair.server._mapping["/t.T/Wait"].func.__self__.release.set()
        await pair.exchange()
        assert pair.replies[waiting]["headers"] is None
        _ok(pair, before, b"rr")
        _ok(pair, after, b"rrrr")

    await _pairs_both_ways(monkeypatch, scenario)
    assert opened


@pytest.mark.parametrize("split", [1, 7, 9, 10, 100])
async def test_reads_split_anywhere(
    monkeypatch: pytest.MonkeyPatch, opened: list[int], split: int
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sids = []
        for _ in range(4):
            sids += [pair.request("Echo", b"12") for _ in range(3)]
            await pair.exchange(2, split=split)
        for sid in sids:
            _ok(pair, sid, b"r" * 12)

    await _pairs_both_ways(monkeypatch, scenario)


async def test_each_frame_in_a_read_of_its_own(
    monkeypatch: pytest.MonkeyPatch, opened: list[int], received: list[tuple[int, int]]
) -> None:
    """HEADERS and DATA apart, as a client writing them one by one may deliver them;
    DATA without END_STREAM, then (after the reply ended the server's side) an
    empty DATA ending the stream, which is h2's."""

    async def scenario(raw: Raw) -> None:
        for sid in (1, 3):
            raw.feed(raw.call(sid))
            await raw.settle()
        for sid in (5, 7):
            frames = raw.call(sid)
            raw.feed(frames[: len(frames) - 9 - 6])
            await raw.settle()
            raw.feed(frames[len(frames) - 9 - 6 :])
            await raw.settle()
        frames = raw.call(9, data_flags=())
        raw.feed(frames)
        await raw.settle()
        raw.feed(DataFrame(9, b"", flags=["END_STREAM"]).serialize())
        await raw.settle()

    fast, _ = await _raw_both_ways(monkeypatch, scenario)
    assert opened == [1, 3, 5, 7, 9]
    assert received[-3:] == [(5, 6), (7, 6), (9, 6)]
    assert fast.wire.count(b"rrr") == 5


async def test_odd_requests_are_left_to_h2(
    monkeypatch: pytest.MonkeyPatch, opened: list[int]
) -> None:
    """Priority, padding, content-length, cookies, a refused method, three rounds:
    each block decoded here (new to the table in the first round, known at rest by
    the third) and each could be taken by the fast path if it did not look; only the
    plain grpc-timeout call is. Then a long header list, and a plain call after it."""

    def odd_round(pair: Pair) -> list[int]:
        sid = pair.client.get_next_available_stream_id()
        pair.client.send_headers(
            sid,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/t.T/Echo"),
                (":authority", "localhost"),
                ("te", "trailers"),
                ("content-type", "application/grpc"),
            ],
            priority_weight=100,
        )
        pair.client.send_data(sid, grpc_frame(b"2"), end_stream=True, pad_length=3)
        pair.replies[sid] = {"headers": None, "data": b"", "trailers": None, "ended": False}
        return [
            sid,
            pair.request("Echo", b"4", extra=[("content-length", "6")]),
            pair.request("Echo", b"5", extra=[("cookie", "a=1"), ("cookie", "b=2")]),
            pair.request("Echo", b"6", extra=[("grpc-timeout", "5S")]),
            pair.request("Nothing", b"7"),
        ]

    timed: list[int] = []
    last: list[int] = []

    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sids = []
        for _ in range(3):
            sids += odd_round(pair)
            timed.append(sids[-2])
            await pair.exchange()
        letters = "".join(chr(97 + i % 26) for i in range(20000))
        sids.append(pair.request("Echo", b"3", extra=[("x-big", letters)]))
        sids.append(pair.request("Echo", b"6", extra=[("grpc-timeout", "5S")]))
        await pair.exchange()
        for sid in sids:
            assert pair.replies[sid]["ended"]
        _ok(pair, sids[-2], b"rrr")
        last.append(sids[-1])

    await _pairs_both_ways(monkeypatch, scenario)
    assert opened == [*timed[:3], last[0] - 2, last[0]]


async def test_flow_control_edges(monkeypatch: pytest.MonkeyPatch, opened: list[int]) -> None:
    """Requests in one read that spend the connection's inbound window to its last
    byte; the handlers' reads give it back (WINDOW_UPDATE); then one byte too many."""
    largest = 16384

    def spend(raw: Raw, first: int, window: int) -> bytes:
        sizes = [largest] * (window // largest)
        if window % largest:
            sizes.append(window % largest)
        assert sizes[-1] >= 6
        return b"".join(
            raw.call(first + 2 * i, message=grpc_frame(b"1" + b" " * (size - 6)))
            for i, size in enumerate(sizes)
        )

    async def scenario(raw: Raw) -> None:
        for sid in (1, 3):
            raw.feed(raw.call(sid))
            await raw.settle()
        window = raw.h2._inbound_flow_control_window_manager.current_window_size
        raw.feed(spend(raw, 5, window))
        await raw.settle()
        assert _goaway(raw.wire) is None
        sid = raw.h2.highest_inbound_stream_id + 2
        window = raw.h2._inbound_flow_control_window_manager.current_window_size
        raw.feed(spend(raw, sid, window) + raw.call(sid + 2000))
        await raw.settle()

    fast, _ = await _raw_both_ways(monkeypatch, scenario, Limits(max_concurrent_streams=1000))
    assert _goaway(fast.wire) == (
        fast.h2.highest_inbound_stream_id,
        h2.errors.ErrorCodes.FLOW_CONTROL_ERROR,
    )
    assert len(opened) > 300


_CODES = h2.errors.ErrorCodes


@pytest.mark.parametrize(
    ("bad", "goaway"),
    [
        # HEADERS on a half-closed stream: a stream error (RST_STREAM), as h2 has it.
        ("stream id reused", None),
        ("stream id lower", (5, _CODES.STREAM_CLOSED)),
        ("stream id even", (5, _CODES.PROTOCOL_ERROR)),
        ("data on another stream", (7, _CODES.PROTOCOL_ERROR)),
        # DATA after END_STREAM: RST_STREAM (STREAM_CLOSED).
        ("headers end the stream", None),
        ("padding longer than the frame", (7, _CODES.PROTOCOL_ERROR)),
        ("content-length not met", (7, _CODES.PROTOCOL_ERROR)),
        # Refused by `core.connection.FrameWatch` before anything in the read is taken.
        ("frame larger than allowed", (3, _CODES.FRAME_SIZE_ERROR)),
    ],
)
async def test_bad_frames_still_goaway(
    monkeypatch: pytest.MonkeyPatch,
    opened: list[int],
    bad: str,
    goaway: tuple[int, int] | None,
) -> None:
    async def scenario(raw: Raw) -> None:
        for sid in (1, 3):
            raw.feed(raw.call(sid))
            await raw.settle()
        good = raw.call(5)
        frames = {
            "stream id reused": lambda: raw.call(5),
            "stream id lower": lambda: raw.call(3),
            "stream id even": lambda: raw.call(8),
            "data on another stream": lambda: raw.call(7, data_sid=9),
            "headers end the stream": lambda: raw.call(7, head_flags=("END_HEADERS", "END_STREAM")),
            "padding longer than the frame": lambda: (
                raw.call(7)[: -(9 + 6)] + bytes.fromhex("00000a 00 09 00000007 c8") + bytes(9)
            ),
            "frame larger than allowed": lambda: raw.call(7, message=b"x" * 17000),
            "content-length not met": lambda: raw.call(
                7, headers=[*Raw.HEADERS, ("content-length", "99")]
            ),
        }
        raw.feed(good + frames[bad]() + raw.call(9))
        await raw.settle()

    fast, _ = await _raw_both_ways(monkeypatch, scenario)
    assert _goaway(fast.wire) == goaway


async def test_more_streams_than_allowed(
    monkeypatch: pytest.MonkeyPatch, opened: list[int]
) -> None:
    async def scenario(raw: Raw) -> None:
        raw.feed(raw.call(1, headers=[*Raw.HEADERS[:2], (":path", "/t.T/Wait"), *Raw.HEADERS[3:]]))
        await raw.settle()
        wait = [*Raw.HEADERS[:2], (":path", "/t.T/Wait"), *Raw.HEADERS[3:]]
        raw.feed(b"".join(raw.call(3 + 2 * i, b"", headers=wait) for i in range(4)))
        await raw.settle()

    await _raw_both_ways(monkeypatch, scenario, Limits(max_concurrent_streams=3))


async def test_reset_and_window_update_between_requests(
    monkeypatch: pytest.MonkeyPatch, opened: list[int]
) -> None:
    async def scenario(raw: Raw) -> None:
        for sid in (1, 3):
            raw.feed(raw.call(sid))
            await raw.settle()
        reset = RstStreamFrame(5, error_code=8).serialize()
        update = WindowUpdateFrame(0, window_increment=1000).serialize()
        raw.feed(raw.call(5) + reset + update + raw.call(7) + raw.call(9))
        await raw.settle()
        raw.feed(update + raw.call(11) + update + raw.call(13))
        await raw.settle()
        raw.feed(RstStreamFrame(13, error_code=8).serialize() + raw.call(15))
        await raw.settle()

    await _raw_both_ways(monkeypatch, scenario)
    assert opened == [1, 3, 5, 7, 9, 11, 13, 15]


async def test_goaway_from_the_client_then_requests(
    monkeypatch: pytest.MonkeyPatch, opened: list[int]
) -> None:
    async def scenario(raw: Raw) -> None:
        for sid in (1, 3):
            raw.feed(raw.call(sid))
            await raw.settle()
        raw.feed(GoAwayFrame(0, last_stream_id=0).serialize() + raw.call(5))
        await raw.settle()

    await _raw_both_ways(monkeypatch, scenario)
    # Stream 5 comes after the client's GOAWAY: h2's.
    assert opened == [1, 3]


async def test_the_request_buffer_reads_as_grpclibs() -> None:
    """`calls.RequestBuffer` against grpclib's Buffer over random adds, ends and reads,
    some reads waiting for data: the same bytes, acknowledgements and errors."""
    rng = random.Random(14)
    for _ in range(300):
        steps: list[tuple[str, Any]] = []
        for _ in range(rng.randint(1, 8)):
            roll = rng.random()
            if roll < 0.45:
                size = rng.choice([0, 1, 5, 7, 30])
                steps.append(
                    (
                        "add",
                        (
                            bytes(rng.randrange(256) for _ in range(size)),
                            size + rng.choice([0, 0, 3]),
                        ),
                    )
                )
            elif roll < 0.9:
                steps.append(("read", rng.choice([0, 1, 4, 5, 12, 40])))
            else:
                steps.append(("eof", None))
        outcomes = []
        for cls in (gproto.Buffer, calls.RequestBuffer):
            acks: list[int] = []
            buffer = cls(acks.append)
            seen: list[Any] = []
            for kind, arg in steps:
                if kind == "add":
                    buffer.add(*arg)
                elif kind == "eof":
                    buffer.eof()
                else:
                    read = asyncio.ensure_future(buffer.read(arg))
                    for _ in range(3):
                        await asyncio.sleep(0)
                    if not read.done():
                        read.cancel()
                        seen.append("waiting")
                        continue
                    try:
                        seen.append(read.result())
                    except AssertionError as exc:
                        seen.append(str(exc))
            seen.append(buffer.unacked_size())
            outcomes.append((seen, acks))
        assert outcomes[0] == outcomes[1], steps


def _request(sid: int, block: bytes, body: bytes = b"3") -> bytes:
    head = HeadersFrame(sid, block, flags=["END_HEADERS"])
    return head.serialize() + DataFrame(sid, grpc_frame(body), flags=["END_STREAM"]).serialize()


async def test_header_blocks_that_change_the_table(
    monkeypatch: pytest.MonkeyPatch, opened: list[int]
) -> None:
    """Random header lists, as a client adding new metadata and paths does: fields
    inserted into the table, evicted by long ones, never-indexed, table size updates,
    several requests in one read. Each block h2 would take is decoded here (h2's
    decoder, its table): same replies, wire, records and table as h2's own path."""
    values = ["a", "b" * 40, "c" * 700, "d" * 1900]

    async def scenario(raw: Raw) -> None:
        rng = random.Random(17)
        sid = 1
        for _ in range(60):
            batch = b""
            for _ in range(rng.choice([1, 1, 2, 3])):
                if rng.random() < 0.08:
                    raw.encoder.header_table_size = rng.choice([0, 200, 1000, 4096])
                path = rng.choice(["Echo", "Echo", "Metadata", "Nothing"])
                headers: list[Any] = [*Raw.HEADERS[:2], (":path", f"/t.T/{path}"), *Raw.HEADERS[3:]]
                for _ in range(rng.randint(0, 3)):
                    field = (f"x-{rng.randint(0, 4)}", rng.choice(values))
                    headers.append(NeverIndexedHeaderTuple(*field) if rng.random() < 0.1 else field)
                batch += _request(
                    sid, raw.encoder.encode(headers), str(rng.randint(0, 40)).encode()
                )
                sid += 2
            raw.feed(batch, split=rng.choice([0, 0, 0, 7]))
            await raw.settle()

    fast, _ = await _raw_both_ways(monkeypatch, scenario)
    assert _goaway(fast.wire) is None
    assert len(opened) > 50


_BAD_BLOCKS: dict[str, Callable[[Encoder], bytes]] = {
    # Refused by hpack (h2: PROTOCOL_ERROR), one after inserting a field first.
    "index past the table": lambda enc: b"\xff\xff\xff\xff\x0f",
    "insertion then a bad index": lambda enc: enc.encode([("x-new", "v" * 30)]) + b"\xbf\x7f",
    "truncated literal": lambda enc: enc.encode([("x-cut", "w" * 30)])[:-4],
    "size update above the limit": lambda enc: b"\x3f\xe1\x7f",
    # A header list over h2's limit, from one long field in the table referred to 20
    # times (h2: ENHANCE_YOUR_CALM).
    "oversize header list": lambda enc: b"".join(
        enc.encode([("x-big", "z" * 4000)]) for _ in range(20)
    ),
    # Fields h2 as grpclib configures it passes on as they are (grpclib answers),
    # so taken here too.
    "uppercase name": lambda enc: enc.encode([*Raw.HEADERS, ("X-Upper", "1")]),
    "connection-specific": lambda enc: enc.encode([*Raw.HEADERS, ("connection", "close")]),
    "pseudo-header after a field": lambda enc: enc.encode([*Raw.HEADERS, (":method", "GET")]),
    "unknown pseudo-header": lambda enc: enc.encode([(":weird", "1"), *Raw.HEADERS]),
    "informational status": lambda enc: enc.encode([(":status", "101"), *Raw.HEADERS]),
    "no fields": lambda enc: b"",
    "not ASCII": lambda enc: enc.encode([*Raw.HEADERS, (b"x-bin", b"\xc3\xa9")]),
}


@pytest.mark.parametrize("bad", list(_BAD_BLOCKS))
async def test_hostile_header_blocks_as_h2_has_them(
    monkeypatch: pytest.MonkeyPatch, opened: list[int], bad: str
) -> None:
    """A hostile block between plain requests, in one read and alone: the same
    GOAWAY, RST_STREAM or reply, table and records as h2's own path."""

    async def scenario(raw: Raw) -> None:
        for sid in (1, 3):
            raw.feed(raw.call(sid))
            await raw.settle()
        new = [*Raw.HEADERS, ("x-seq", "5")]
        raw.feed(raw.call(5, headers=new) + _request(7, _BAD_BLOCKS[bad](raw.encoder)))
        await raw.settle()
        raw.feed(raw.call(9, headers=[*Raw.HEADERS, ("x-seq", "9")]) + raw.call(11))
        await raw.settle()

    fast, _ = await _raw_both_ways(monkeypatch, scenario)
    assert 5 in opened
    if _goaway(fast.wire) is not None:
        assert 7 not in opened


@pytest.mark.parametrize("preface", ["good", "bad", "split"])
async def test_first_requests_in_the_prefaces_read(
    monkeypatch: pytest.MonkeyPatch, opened: list[int], preface: str
) -> None:
    """The preface is h2's to check; the requests after it in the same read are
    taken here, unless the preface is bad (h2 drops the connection) or incomplete."""

    async def scenario(raw: Raw) -> None:
        greeting = raw.greeting()
        if preface == "bad":
            greeting = greeting.replace(b"SM", b"SN")
        data = greeting + raw.call(1) + raw.call(3)
        raw.feed(data, split=10 if preface == "split" else 0)
        await raw.settle()
        raw.feed(raw.call(5))
        await raw.settle()

    await _raw_both_ways(monkeypatch, scenario, greet=False)
    assert opened == {"good": [1, 3, 5], "bad": [], "split": [5]}[preface]


_CONTROL: dict[str, bytes] = {
    "ping": PingFrame(0, opaque_data=b"12345678").serialize(),
    "ping ack": PingFrame(0, opaque_data=b"abcdefgh", flags=["ACK"]).serialize(),
    "ping, other flags": bytes.fromhex("000008 06 f0 00000000") + b"flagged!",
    "ping, reserved bit": bytes.fromhex("000008 06 00 80000000") + b"reserved",
    "window update": WindowUpdateFrame(0, window_increment=1000).serialize(),
    "window update, largest": WindowUpdateFrame(0, window_increment=2**31 - 1).serialize(),
    "window update of a stream": WindowUpdateFrame(1, window_increment=1000).serialize(),
    # Refused by h2: each its own GOAWAY.
    "ping too short": bytes.fromhex("000007 06 00 00000000") + bytes(7),
    "ping on a stream": bytes.fromhex("000008 06 00 00000003") + bytes(8),
    "window update of zero": bytes.fromhex("000004 08 00 00000000 00000000"),
    "window update, reserved bit": bytes.fromhex("000004 08 00 00000000 80000001"),
    "window update too long": bytes.fromhex("000005 08 00 00000000 0000000100"),
}


@pytest.mark.parametrize("control", list(_CONTROL))
async def test_pings_and_window_updates_as_h2_has_them(
    monkeypatch: pytest.MonkeyPatch, opened: list[int], control: str
) -> None:
    """PING and WINDOW_UPDATE frames, alone and between requests in one read (as
    grpc-go sends them after each reply): the same ACKs, windows, events, GOAWAYs."""

    async def scenario(raw: Raw) -> None:
        frame = _CONTROL[control]
        raw.feed(raw.call(1))
        await raw.settle()
        raw.feed(frame)
        await raw.settle()
        raw.feed(frame + raw.call(3) + frame + frame + raw.call(5) + frame)
        await raw.settle()

    fast, _ = await _raw_both_ways(monkeypatch, scenario)
    refused = _goaway(fast.wire)
    if control == "window update, largest":
        assert refused is not None and refused[1] == _CODES.FLOW_CONTROL_ERROR
    elif control in list(_CONTROL)[7:]:
        assert refused is not None
    else:
        assert refused is None and opened == [1, 3, 5]


async def test_a_pings_ack_leaves_with_the_reply() -> None:
    """grpc-go's PING ahead of a request in one read: its ACK and the reply in one write."""
    raw = Raw()
    writes: list[bytes] = []
    real_write = raw.transport.write

    def write(data: bytes) -> None:
        writes.append(bytes(data))
        real_write(data)

    raw.transport.write = write  # type: ignore[method-assign]
    try:
        raw.feed(raw.call(1))
        await raw.settle()
        writes.clear()
        ping = PingFrame(0, opaque_data=b"bdp-ping")
        raw.feed(ping.serialize() + raw.call(3))
        await raw.settle()
        ack = PingFrame(0, opaque_data=b"bdp-ping", flags=["ACK"]).serialize()
        assert len(writes) == 1 and writes[0].startswith(ack) and b"rrr" in writes[0]
    finally:
        raw.close()
