"""The unary reply fast path (`core.calls`) against plain h2 as the client.

The server runs in process over a transport that records its bytes; an h2
client connection reads them. Each scenario runs twice, with the fast path and
with grpclib's own reply path, and both must give the same bytes on the wire
and leave h2's streams and windows the same.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
from grpclib import GRPCError
from grpclib import protocol as gproto
from grpclib import server as gserver
from grpclib.const import Cardinality, Handler, Status
from grpclib.encoding.base import CodecBase

from core import calls
from core.connection import HardenedServer, Limits
from tests.h2attack import grpc_frame


class RawCodec(CodecBase):
    """Messages are their bytes."""

    __content_subtype__ = "proto"

    def encode(self, message: Any, message_type: Any) -> bytes:
        return bytes(message)

    def decode(self, data: bytes, message_type: Any) -> bytes:
        return data


class Service:
    """Methods that take each branch of the reply path; a request is `b"<size>"`."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def echo(self, stream: Any) -> None:
        request = await stream.recv_message()
        await stream.send_message(b"r" * int(request or b"0"))

    async def send_then_fail(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(b"half")
        raise GRPCError(Status.INTERNAL, "after the message")

    async def fail(self, stream: Any) -> None:
        await stream.recv_message()
        raise GRPCError(Status.NOT_FOUND, "no such thing")

    async def trailing_metadata(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(b"with metadata")
        await stream.send_trailing_metadata(metadata={"x-extra": "1"})

    async def initial_metadata(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_initial_metadata(metadata={"x-first": "1"})
        await stream.send_message(b"after metadata")

    async def server_stream(self, stream: Any) -> None:
        await stream.recv_message()
        for i in range(3):
            await stream.send_message(b"part %d" % i)

    async def metadata(self, stream: Any) -> None:
        await stream.recv_message()
        seen = stream.metadata
        await stream.send_message(repr(sorted(seen.items())).encode())
        seen["x-added"] = "by the handler"

    async def time_left(self, stream: Any) -> None:
        await stream.recv_message()
        await stream.send_message(b"yes" if stream.deadline.time_remaining() > 0 else b"no")

    async def wait(self, stream: Any) -> None:
        await stream.recv_message()
        await self.release.wait()
        await stream.send_message(b"released")

    def __mapping__(self) -> dict[str, Handler]:
        unary, streaming = Cardinality.UNARY_UNARY, Cardinality.UNARY_STREAM
        methods: dict[str, tuple[Callable[..., Any], Cardinality]] = {
            "Echo": (self.echo, unary),
            "SendThenFail": (self.send_then_fail, unary),
            "Fail": (self.fail, unary),
            "TrailingMetadata": (self.trailing_metadata, unary),
            "InitialMetadata": (self.initial_metadata, unary),
            "ServerStream": (self.server_stream, streaming),
            "Wait": (self.wait, unary),
            "Metadata": (self.metadata, unary),
            "TimeLeft": (self.time_left, unary),
        }
        return {f"/t.T/{k}": Handler(f, c, bytes, bytes) for k, (f, c) in methods.items()}


class Recorder:
    def __init__(self) -> None:
        self.data = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.data += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


class Pair:
    """The engine's protocol and an h2 client, joined in process."""

    def __init__(
        self, service: Service, window: int | None = None, limits: Limits | None = None
    ) -> None:
        self.server = HardenedServer([service], codec=RawCodec(), limits=limits or Limits())
        self.protocol = self.server._protocol_factory()
        self.transport = Recorder()
        self.protocol.connection_made(self.transport)
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.client = h2.connection.H2Connection(config)
        self.client.initiate_connection()
        if window is not None:
            self.client.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.wire = bytearray()
        self.replies: dict[int, dict[str, Any]] = {}

    @property
    def h2(self) -> h2.connection.H2Connection:
        return self.protocol.connection._connection

    def request(
        self,
        method: str,
        body: bytes,
        end: bool = True,
        extra: list[tuple[str | bytes, str | bytes]] | None = None,
        replace: dict[str, str | None] | None = None,
    ) -> int:
        sid = self.client.get_next_available_stream_id()
        headers: dict[str, str | None] = {
            ":method": "POST",
            ":scheme": "http",
            ":path": f"/t.T/{method}",
            ":authority": "localhost",
            "te": "trailers",
            "content-type": "application/grpc",
            **(replace or {}),
        }
        self.client.send_headers(
            sid, [*((k, v) for k, v in headers.items() if v is not None), *(extra or [])]
        )
        self.client.send_data(sid, grpc_frame(body), end_stream=end)
        self.replies[sid] = {"headers": None, "data": b"", "trailers": None, "ended": False}
        return sid

    async def exchange(self, turns: int = 6, split: int = 0) -> None:
        """`turns` round trips; the client's bytes in reads of `split` bytes if set."""
        for _ in range(turns):
            out = self.client.data_to_send()
            for at in range(0, len(out), split or len(out) or 1):
                self.protocol.data_received(out[at : at + (split or len(out))])
            for _ in range(4):
                await asyncio.sleep(0)
            got = bytes(self.transport.data)
            self.transport.data.clear()
            self.wire += got
            for event in self.client.receive_data(got):
                reply = self.replies.get(getattr(event, "stream_id", 0))
                if isinstance(event, h2.events.ResponseReceived):
                    reply["headers"] = dict(event.headers)
                elif isinstance(event, h2.events.DataReceived):
                    reply["data"] += event.data
                    self.client.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.TrailersReceived):
                    reply["trailers"] = dict(event.headers)
                elif isinstance(event, h2.events.StreamEnded):
                    reply["ended"] = True

    def state(self) -> dict[str, Any]:
        """What h2 on the server keeps about the connection and its streams."""
        conn = self.h2
        streams = {
            sid: (
                s.state_machine.state,
                s.state_machine.stream_closed_by,
                s.state_machine.headers_sent,
                s.state_machine.trailers_sent,
                s.outbound_flow_control_window,
                s.inbound_flow_control_window,
            )
            for sid, s in conn.streams.items()
        }
        return {
            "streams": streams,
            "closed": dict(conn._closed_streams),
            "window": conn.outbound_flow_control_window,
            "inbound": conn.inbound_flow_control_window,
            "state": conn.state_machine.state,
            "open": conn.open_inbound_streams,
        }

    def close(self) -> None:
        self.protocol.connection_lost(None)


@pytest.fixture
def fast_path_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every answer of `write_unary_reply`, in order."""
    answers: list[bool] = []
    real = calls.write_unary_reply

    def recorded(*args: Any) -> bool:
        answers.append(real(*args))
        return answers[-1]

    monkeypatch.setattr(calls, "write_unary_reply", recorded)
    return answers


def _grpclib_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Calls through grpclib's own request handler and Stream methods only, on
    headers decoded as h2 would with grpclib's `header_encoding`."""

    async def grpclib_handler(requests: calls.Requests, stream: Any, raw: Any, *rest: Any) -> None:
        headers = [(k.decode("ascii"), v.decode("ascii")) for k, v in raw]
        await gserver.request_handler(requests.mapping, stream, headers, *rest)

    monkeypatch.setattr(calls, "request_handler", grpclib_handler)
    monkeypatch.setattr(calls, "CallStream", gproto.Stream)
    for name in ("send_message", "send_trailing_metadata", "cancel", "__aexit__"):
        monkeypatch.setattr(calls.ServerStream, name, getattr(gserver.Stream, name))


Scenario = Callable[[Pair], Any]


async def _both_ways(
    monkeypatch: pytest.MonkeyPatch, scenario: Scenario, window: int | None = None
) -> tuple[Pair, Pair]:
    fast = Pair(Service(), window)
    await scenario(fast)
    with monkeypatch.context() as m:
        _grpclib_path(m)
        plain = Pair(Service(), window)
        await scenario(plain)
    try:
        assert bytes(fast.wire) == bytes(plain.wire)
        assert fast.state() == plain.state()
        assert fast.replies == plain.replies
    finally:
        fast.close()
        plain.close()
    return fast, plain


def _ok(pair: Pair, sid: int, data: bytes) -> None:
    reply = pair.replies[sid]
    assert reply["headers"] == {":status": "200", "content-type": "application/grpc+proto"}
    assert reply["data"] == grpc_frame(data)
    assert reply["trailers"] == {"grpc-status": "0"}
    assert reply["ended"]


async def test_a_unary_reply_is_one_write_h2_reads(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sid = pair.request("Echo", b"10")
        await pair.exchange()
        _ok(pair, sid, b"r" * 10)

    await _both_ways(monkeypatch, scenario)
    assert fast_path_calls == [True]


async def test_many_calls_interleaved_on_one_connection(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        waiting = pair.request("Wait", b"")
        streaming = pair.request("ServerStream", b"")
        sizes = {}
        for round_ in range(5):
            for i in range(40):
                size = (round_ * 40 + i) * 37 % 3000
                sizes[pair.request("Echo", str(size).encode())] = size
            if round_ == 2:
                pair.request("SendThenFail", b"")
                pair.request("Fail", b"")
            await pair.exchange(2)
        pair.server._mapping["/t.T/Wait"].func.__self__.release.set()
        await pair.exchange()
        for sid, size in sizes.items():
            _ok(pair, sid, b"r" * size)
        _ok(pair, waiting, b"released")
        assert pair.replies[streaming]["trailers"] == {"grpc-status": "0"}
        assert not pair.h2.streams or all(s.closed for s in pair.h2.streams.values())

    await _both_ways(monkeypatch, scenario)
    # Once replies outrun the client's acknowledgements, the connection window
    # is short and some replies wait for it, the usual way.
    assert len(fast_path_calls) == 201 and 100 < fast_path_calls.count(True) < 201


@pytest.mark.parametrize(
    ("method", "expect"),
    [
        ("SendThenFail", {"grpc-status": "13", "grpc-message": "after the message"}),
        ("Fail", {"grpc-status": "5", "grpc-message": "no such thing"}),
        ("TrailingMetadata", {"grpc-status": "0", "x-extra": "1"}),
        ("InitialMetadata", {"grpc-status": "0"}),
        ("ServerStream", {"grpc-status": "0"}),
    ],
)
async def test_unusual_replies_take_grpclibs_path(
    monkeypatch: pytest.MonkeyPatch,
    fast_path_calls: list[bool],
    method: str,
    expect: dict[str, str],
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sid = pair.request(method, b"")
        await pair.exchange()
        reply = pair.replies[sid]
        got = reply["trailers"] or reply["headers"]
        assert {k: v for k, v in got.items() if k in expect} == expect
        assert reply["ended"]

    await _both_ways(monkeypatch, scenario)
    assert fast_path_calls == []


async def test_a_reply_beyond_the_clients_window_waits_for_it(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        small = pair.request("Echo", b"50")
        large = pair.request("Echo", b"1000")
        await pair.exchange(40)
        _ok(pair, small, b"r" * 50)
        _ok(pair, large, b"r" * 1000)

    await _both_ways(monkeypatch, scenario, window=100)
    assert fast_path_calls == [True, False]


async def test_a_reply_before_the_clients_end_of_stream(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sid = pair.request("Echo", b"5", end=False)
        await pair.exchange()
        assert pair.replies[sid]["trailers"] == {"grpc-status": "0"}
        pair.client.end_stream(sid)
        await pair.exchange()
        _ok(pair, sid, b"r" * 5)

    await _both_ways(monkeypatch, scenario)
    assert fast_path_calls == [False]


async def test_a_reset_call_sends_nothing_more(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sid = pair.request("Wait", b"")
        await pair.exchange()
        pair.client.reset_stream(sid)
        await pair.exchange()
        pair.server._mapping["/t.T/Wait"].func.__self__.release.set()
        after = pair.request("Echo", b"3")
        await pair.exchange()
        assert pair.replies[sid]["headers"] is None
        _ok(pair, after, b"rrr")

    await _both_ways(monkeypatch, scenario)
    assert fast_path_calls == [True]


async def test_window_updates_after_fast_replies_are_honoured(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    # The connection window (65,535 until the client raises it) is spent by
    # fast replies; the client's WINDOW_UPDATEs must restore it for later ones.
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        for _ in range(12):
            sid = pair.request("Echo", b"9000")
            await pair.exchange(3)
            _ok(pair, sid, b"r" * 9000)

    await _both_ways(monkeypatch, scenario)
    assert all(fast_path_calls) and len(fast_path_calls) == 12


async def test_goaway_after_fast_replies(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        sids = [pair.request("Echo", b"4") for _ in range(3)]
        await pair.exchange()
        pair.client.close_connection()
        await pair.exchange()
        for sid in sids:
            _ok(pair, sid, b"rrrr")

    await _both_ways(monkeypatch, scenario)
    assert fast_path_calls == [True] * 3


@pytest.mark.parametrize(
    "replace",
    [
        {":method": "GET"},
        {"content-type": None},
        {"content-type": "application/json"},
        {"content-type": "application/grpc+json"},
        {"te": None},
        {":path": "/t.T/Nothing"},
        {"grpc-timeout": "soon"},
        {"grpc-timeout": "5S"},
        {"content-type": "application/grpc+proto", "user-agent": "test/1"},
    ],
)
async def test_request_headers_are_checked_as_grpclib_does(
    monkeypatch: pytest.MonkeyPatch, replace: dict[str, str | None]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        # Twice: the second one is answered from the connection's prepared requests.
        sids = [pair.request("Echo", b"2", replace=replace) for _ in range(2)]
        await pair.exchange()
        first, second = (pair.replies[sid] for sid in sids)
        assert first["ended"] and second["ended"]
        assert first["trailers"] == second["trailers"]
        assert first["headers"][":status"] == second["headers"][":status"]

    await _both_ways(monkeypatch, scenario)


async def test_metadata_is_each_calls_own(
    monkeypatch: pytest.MonkeyPatch, fast_path_calls: list[bool]
) -> None:
    async def scenario(pair: Pair) -> None:
        await pair.exchange()
        extra: list[tuple[str | bytes, str | bytes]] = [
            ("x-one", "1"),
            ("x-one", "2"),
            ("x-data-bin", "AAEC"),
            ("grpc-accept-encoding", "gzip"),
        ]
        sids = [pair.request("Metadata", b"", extra=extra) for _ in range(3)]
        await pair.exchange()
        expected = repr(sorted([("x-one", "1"), ("x-one", "2"), ("x-data-bin", b"\x00\x01\x02")]))
        for sid in sids:
            _ok(pair, sid, expected.encode())

    await _both_ways(monkeypatch, scenario)
    assert fast_path_calls == [True] * 3


async def test_a_deadline_is_each_calls_own() -> None:
    pair = Pair(Service())

    def done(sid: int) -> bool:
        return pair.replies[sid]["ended"]

    try:
        await pair.exchange()
        timeout = [("grpc-timeout", "1m")]
        sids = [pair.request("Wait", b"", extra=timeout) for _ in range(2)]
        for _ in range(500):
            await pair.exchange(1)
            if all(map(done, sids)):
                break
            await asyncio.sleep(0.01)
        # The same header list again: its deadline is counted from its own start.
        later = pair.request("Wait", b"", extra=timeout)
        for _ in range(500):
            await pair.exchange(1)
            if done(later):
                break
            await asyncio.sleep(0.01)
        for sid in [*sids, later]:
            got = pair.replies[sid]["trailers"] or pair.replies[sid]["headers"]
            assert got["grpc-status"] == str(Status.DEADLINE_EXCEEDED.value)
        # Past the first one's deadline, the same list's next call has time left. A
        # deadline of a second leaves each call that long to reach its handler on a
        # loaded machine; the sleep only has to outlast the first one's.
        timeout = [("grpc-timeout", "1S")]
        first = pair.request("TimeLeft", b"", extra=timeout)
        await pair.exchange()
        await asyncio.sleep(1.1)
        second = pair.request("TimeLeft", b"", extra=timeout)
        await pair.exchange()
        _ok(pair, first, b"yes")
        _ok(pair, second, b"yes")
    finally:
        pair.close()


async def test_a_header_that_is_not_ascii_resets_only_its_stream() -> None:
    pair = Pair(Service())
    try:
        await pair.exchange()
        bad = pair.request("Echo", b"1", extra=[(b"x-name", b"caf\xc3\xa9")])
        good = pair.request("Echo", b"1")
        events: list[Any] = []
        real = pair.client.receive_data

        def receive(data: bytes) -> list[Any]:
            new = real(data)
            events.extend(new)
            return new

        pair.client.receive_data = receive  # type: ignore[method-assign]
        await pair.exchange()
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert [(e.stream_id, e.error_code) for e in resets] == [
            (bad, h2.errors.ErrorCodes.PROTOCOL_ERROR)
        ]
        _ok(pair, good, b"r")
    finally:
        pair.close()


async def test_every_kind_of_frame_still_reaches_h2() -> None:
    # Received frames are of `core.connection`'s quiet classes (no eager repr).
    pair = Pair(Service())
    try:
        await pair.exchange()
        events: list[Any] = []
        real = pair.client.receive_data

        def receive(data: bytes) -> list[Any]:
            new = real(data)
            events.extend(new)
            return new

        pair.client.receive_data = receive  # type: ignore[method-assign]
        pair.client.ping(b"12345678")
        pair.client.increment_flow_control_window(1000)
        pair.client.update_settings({h2.settings.SettingCodes.MAX_FRAME_SIZE: 20000})
        pair.protocol.data_received(bytes.fromhex("000003fa0000000000616263"))  # unknown type
        # 30 KB of metadata: a HEADERS frame and CONTINUATION frames.
        letters = "".join(chr(33 + (i * 7919) % 90) for i in range(30000)).replace(",", "a")
        big = pair.request("Echo", b"6", extra=[("x-big", letters)])
        waiting = pair.request("Wait", b"")
        await pair.exchange()
        pair.client.reset_stream(waiting)
        await pair.exchange()
        assert any(isinstance(e, h2.events.PingAckReceived) for e in events)
        assert any(isinstance(e, h2.events.SettingsAcknowledged) for e in events)
        _ok(pair, big, b"r" * 6)
        assert pair.h2.streams[waiting].closed
        pair.client.close_connection()
        await pair.exchange()
        assert pair.protocol.processor.handler.closing
    finally:
        pair.close()
