"""The hand-over of a layer's bytes from its download to a streaming unpack (`LayerTee`)."""

from __future__ import annotations

import threading

import pytest

from core.images.pull import LayerTee, StreamBroken


def read_all(tee: LayerTee) -> bytes:
    out = bytearray()
    while chunk := tee.read():
        out += chunk
    return bytes(out)


def test_bytes_that_came_before_the_unpack_attached_are_read_in_order() -> None:
    # The layers download beside the config; their unpack attaches once the config is in.
    tee = LayerTee(limit=1 << 20)
    tee.put(0, b"abc")
    tee.put(3, b"def")
    assert tee.attach()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_all(tee)))
    reader.start()
    tee.put(6, b"ghi")
    tee.finish()
    reader.join(30)
    assert got == [b"abcdefghi"]


def test_a_download_that_ended_before_any_unpack_attached_holds_nothing() -> None:
    tee = LayerTee(limit=1 << 20)
    tee.put(0, b"x" * 1000)
    tee.finish()
    assert not tee.full()
    # The unpack reads the landed blob from the store instead.
    assert not tee.attach()


def test_a_tee_gives_up_past_its_limit_before_an_unpack_attached() -> None:
    tee = LayerTee(limit=10)
    tee.put(0, b"x" * 8)
    tee.put(8, b"x" * 8)
    assert not tee.attach()


def test_an_attached_reader_sees_a_restart_as_a_broken_stream() -> None:
    tee = LayerTee(limit=1 << 20)
    assert tee.attach()
    tee.put(0, b"abc")
    tee.put(0, b"abc")
    assert tee.read() == b"abc"
    with pytest.raises(StreamBroken, match="started over at byte 0"):
        tee.read()


def test_an_attached_reader_is_not_cut_off_when_the_download_ends() -> None:
    tee = LayerTee(limit=1 << 20)
    assert tee.attach()
    tee.put(0, b"abc")
    tee.finish()
    assert read_all(tee) == b"abc"
