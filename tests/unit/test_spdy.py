"""The SPDY/3.1 codec and session of core/cri/spdy.py."""

from __future__ import annotations

import asyncio
import struct
import zlib

import pytest

from core.cri import spdy


def test_dictionary_is_the_spdy3_one() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")
    assert spdy.DICTIONARY.endswith(b"charset=iso-8859-1,utf-,*,enq=0.")


def test_header_block_needs_the_dictionary_and_shares_one_zlib_stream() -> None:
    z = spdy.HeaderCompressor()
    first = z.pack({"streamType": "stdout", "X-Multi": ["a", "b"]})
    second = z.pack({"streamType": "stderr"})
    with pytest.raises(zlib.error):
        zlib.decompressobj().decompress(first)
    d = spdy.HeaderDecompressor()
    assert d.unpack(first) == {"streamtype": ["stdout"], "x-multi": ["a", "b"]}
    # The second block only decodes with the state the first left.
    assert d.unpack(second) == {"streamtype": ["stderr"]}
    with pytest.raises(spdy.ProtocolError):
        spdy.HeaderDecompressor().unpack(second)


def test_every_frame_round_trips() -> None:
    z = spdy.HeaderCompressor()
    wire = b"".join(
        [
            spdy.syn_stream(z, 1, {"streamtype": "error"}, priority=3, fin=True),
            spdy.syn_reply(z, 1, {}),
            spdy.data_frame(1, b"hello", fin=True),
            spdy.rst_stream(3, spdy.RST_CANCEL),
            spdy.settings({spdy.SETTINGS_INITIAL_WINDOW_SIZE: 65536}),
            spdy.ping(7),
            spdy.goaway(5, 0),
            spdy.window_update(1, 1000),
        ]
    )
    reader = spdy.FrameReader()
    # Byte by byte: frames split anywhere still decode.
    frames = [f for i in range(len(wire)) for f in reader.feed(wire[i : i + 1])]
    kinds = [f.kind for f in frames]
    assert kinds == [
        spdy.SYN_STREAM, spdy.SYN_REPLY, 0, spdy.RST_STREAM, spdy.SETTINGS,
        spdy.PING, spdy.GOAWAY, spdy.WINDOW_UPDATE,
    ]  # fmt: skip
    syn, reply, data, rst, sett, png, away, win = frames
    assert (syn.stream_id, syn.priority, syn.fin, syn.headers) == (
        1,
        3,
        True,
        {"streamtype": ["error"]},
    )
    assert (reply.stream_id, reply.headers) == (1, {})
    assert (data.stream_id, data.data, data.fin) == (1, b"hello", True)
    assert (rst.stream_id, rst.status) == (3, spdy.RST_CANCEL)
    assert sett.settings == {spdy.SETTINGS_INITIAL_WINDOW_SIZE: 65536}
    assert png.stream_id == 7
    assert (away.stream_id, away.status) == (5, 0)
    assert (win.stream_id, win.delta) == (1, 1000)


def test_control_frame_layout_is_spdy3() -> None:
    frame = spdy.ping(1)
    assert frame == struct.pack(">HHII", 0x8003, spdy.PING, 4, 1)
    assert spdy.data_frame(5, b"x", fin=True) == b"\x00\x00\x00\x05\x01\x00\x00\x01x"


def test_bad_input_is_a_protocol_error() -> None:
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameReader().feed(struct.pack(">HHII", 0x8002, spdy.PING, 4, 1))
    with pytest.raises(spdy.ProtocolError):
        spdy.FrameReader().feed(struct.pack(">HHI", 0x8003, spdy.RST_STREAM, 2) + b"\0\0")
    # Unknown control frames are skipped.
    assert spdy.FrameReader().feed(struct.pack(">HHI", 0x8003, 99, 0)) == []


async def test_two_sessions_open_streams_exchange_data_and_pings() -> None:
    received: list[spdy.Stream] = []

    async def on_stream(stream: spdy.Stream) -> None:
        received.append(stream)
        server.reply(stream)
        while data := await stream.read():
            stream.write(data.upper())
        stream.close()

    loop = asyncio.get_running_loop()
    client = spdy.Session(lambda b: loop.call_soon(server.feed, b), lambda s: None, client=True)
    server = spdy.Session(lambda b: loop.call_soon(client.feed, b), on_stream)
    client.start()
    server.start()
    stream = await client.open({"streamType": "stdin"})
    assert stream.id == 1 and received[0].header("streamtype") == "stdin"
    stream.write(b"abc")
    stream.close()
    assert await stream.read() == b"ABC"
    assert await stream.read() == b""
    pong = asyncio.Event()
    client.on_pong = pong.set
    client.send(spdy.ping(1))
    await asyncio.wait_for(pong.wait(), 5)
    await asyncio.sleep(0)
    assert not server.handlers


def test_attach_reads_cri_log_records() -> None:
    from core.cri.attach import STDERR, STDOUT, parse_record

    assert parse_record(b"2016-10-06T00:17:09.669794202Z stdout F a line") == (STDOUT, b"a line\n")
    assert parse_record(b"2016-10-06T00:17:09.669794202Z stderr P part") == (STDERR, b"part")
    assert parse_record(b"2016-10-06T00:17:09.669794202Z stdout F ") == (STDOUT, b"\n")
    assert parse_record(b"garbage") is None
