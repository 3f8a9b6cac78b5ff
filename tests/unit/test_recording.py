"""The recording file: round trips, appending, cut-off files, damaged headers, versions.

A recording must survive what happens to files: a writer killed mid-frame, a
file cut at any byte, a header overwritten, a version from a newer ctrdeck.
Each is refused with a clear `RecordingError` or read up to its last whole
record; none raises anything else. The player rebuilds the same tables at a
position whether it got there by playing or by seeking.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import zstandard

from tui import recording
from tui.player import Player
from tui.recorder import Recorder
from tui.state import CONTAINERS, IMAGES, ContainerRow, ImageRow, LogLine, NodeState

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def ticking(step: float) -> Callable[[], float]:
    """A clock that moves on `step` seconds each time it is read: one record every `step`."""
    now = [T0.timestamp() - step]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


def write_session(path: Path, step: float = 10.0) -> None:
    """A small session, a record every `step` seconds: a snapshot, a container that runs,
    pauses and goes, with log lines."""
    state = NodeState("default", "/run/x.sock")
    state.upsert(IMAGES, "busybox:1", ImageRow("busybox:1", "sha256:aa", "m", 10, "linux/amd64"))
    header = {"address": "/run/x.sock", "namespace": "default"}
    recorder = Recorder(recording.Writer(path, header, ticking(step)))
    recorder.watch(state)
    row = ContainerRow("c1", "busybox:1", "io.containerd.runc.v2", created=T0)
    for status in ("", "RUNNING", "PAUSED", "RUNNING", "STOPPED"):
        state.upsert(CONTAINERS, "c1", ContainerRow(**{**row.__dict__, "status": status}))
        recorder.log(LogLine(T0, "default", "/tasks/x", f"c1 {status or 'created'}"))
        recorder.writer.flush()
    state.update_container("c1", exit_status=0, cpu=1.5)
    state.remove(CONTAINERS, "c1")
    recorder.log(LogLine(T0, "default", "/containers/delete", "c1"))
    recorder.close()


def play(path: Path, to: float | None = None) -> tuple[NodeState, list[LogLine]]:
    rec = recording.read(path)
    state = NodeState("default")
    lines: list[LogLine] = []

    def reset(shown: list[LogLine]) -> None:
        lines[:] = shown

    player = Player(rec, state, on_log=lines.append, on_reset_log=reset)
    player.advance(rec.duration if to is None else to)
    return state, lines


def test_a_session_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "s.rec"
    write_session(path)
    rec = recording.read(path)
    assert rec.header["version"] == recording.VERSION
    assert rec.cut == ""
    state, lines = play(path)
    assert "c1" not in state.containers
    assert state.images["busybox:1"].platforms == "linux/amd64"
    assert [line.detail for line in lines][-2:] == ["c1 STOPPED", "c1"]


def test_an_exit_status_of_zero_and_a_pid_survive() -> None:
    row = ContainerRow("c", "i", "r", status="STOPPED", exit_status=0, pid=0, created=T0)
    back = recording.decode_row(
        CONTAINERS, json.loads(json.dumps(recording.encode_row(row), default=recording._json))
    )
    assert back == row


def test_every_cut_of_a_file_reads_to_its_last_whole_frame(tmp_path: Path) -> None:
    path = tmp_path / "s.rec"
    write_session(path)
    data = path.read_bytes()
    full = len(recording.read(path).records)
    header_end = 12 + struct.unpack(">I", data[4:8])[0]
    counts = []
    for cut in range(header_end, len(data) + 1):
        part = tmp_path / "part.rec"
        part.write_bytes(data[:cut])
        rec = recording.read(part)
        counts.append(len(rec.records))
    assert counts == sorted(counts)
    assert recording.read(path).cut == ""
    assert counts[-1] == full


def test_a_flipped_byte_in_a_frame_stops_the_read_there(tmp_path: Path) -> None:
    path = tmp_path / "s.rec"
    write_session(path)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    rec = recording.read(path)
    assert "damaged frame" in rec.cut
    assert rec.records


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "empty"),
        (b"CDRF\x00", "damaged"),
        (b"hello world, this is not a recording at all", "damaged"),
        (b"\x00" * 64, "damaged"),
    ],
)
def test_a_damaged_header_is_refused_clearly(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "bad.rec"
    path.write_bytes(data)
    with pytest.raises(recording.RecordingError, match=why):
        recording.read(path)


def frame(payload: bytes) -> bytes:
    data = zstandard.ZstdCompressor().compress(payload)
    return struct.pack(">4sII", b"CDRF", len(data), zlib.crc32(data)) + data


def test_a_header_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.rec"
    path.write_bytes(frame(b'{"format": "something-else", "version": 1}'))
    with pytest.raises(recording.RecordingError, match="names no ctrdeck-recording format"):
        recording.read(path)
    path.write_bytes(frame(b"\xff\xfe not json"))
    with pytest.raises(recording.RecordingError, match="not JSON"):
        recording.read(path)


def test_a_newer_version_is_refused_and_an_older_one_opens(tmp_path: Path) -> None:
    path = tmp_path / "v.rec"
    head = {"format": recording.FORMAT, "started": 1.0}
    path.write_bytes(frame(json.dumps({**head, "version": recording.VERSION + 1}).encode()))
    with pytest.raises(recording.RecordingError, match="newer ctrdeck"):
        recording.read(path)
    # What the next version adds (a field, a record kind) this one reads past.
    record = {"t": 1.5, "k": "hologram", "x": 1}
    row = {
        "t": 2,
        "k": "row",
        "ns": "default",
        "tb": "images",
        "key": "a",
        "row": {"name": "a", "digest": "d", "media_type": "m", "new_field": 3},
    }
    body = "\n".join(json.dumps(r) for r in (record, row)).encode()
    path.write_bytes(frame(json.dumps({**head, "version": 1, "extra": "x"}).encode()) + frame(body))
    state, _ = play(path)
    assert state.images["a"] == ImageRow("a", "d", "m")


def test_appending_keeps_the_header_and_drops_a_torn_frame(tmp_path: Path) -> None:
    path = tmp_path / "s.rec"
    write_session(path)
    before = recording.read(path)
    path.write_bytes(path.read_bytes() + b"CDRF\x00\x00\x01\x00torn")
    writer = recording.Writer(path, {"namespace": "other"})
    writer.add("log", line=recording.encode_line(LogLine(T0, "default", "", "appended", "note")))
    writer.close()
    after = recording.read(path)
    assert after.cut == ""
    assert after.header == before.header
    assert len(after.records) == len(before.records) + 1


def test_seeking_back_and_forth_gives_what_playing_gives(tmp_path: Path) -> None:
    path = tmp_path / "s.rec"
    write_session(path)
    rec = recording.read(path)
    assert list(rec.records.times) == [10.0 * (i + 1) for i in range(len(rec.records))]
    played = NodeState("default")
    seeked = NodeState("default")
    p1 = Player(rec, played, on_log=lambda line: None, on_reset_log=lambda lines: None)
    p2 = Player(rec, seeked, on_log=lambda line: None, on_reset_log=lambda lines: None)
    for t in rec.records.times:
        p1.advance(t)
        p2.seek(rec.duration)
        p2.seek(t)
        assert played.tables == seeked.tables, t


def test_a_killed_writer_leaves_a_file_that_replays(tmp_path: Path) -> None:
    path = tmp_path / "k.rec"
    script = (
        "import sys, time\n"
        "from tui import recording\n"
        "w = recording.Writer(__import__('pathlib').Path(sys.argv[1]), {})\n"
        "i = 0\n"
        "while True:\n"
        "    w.add('log', line={'detail': 'x' * 50 + str(i)})\n"
        "    i += 1\n"
        "    if i % 50 == 0: w.flush()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)])
    try:
        while not path.exists() or path.stat().st_size < 200_000:
            if proc.poll() is not None:
                raise AssertionError("the writer exited by itself")
    finally:
        proc.kill()
        proc.wait()
    rec = recording.read(path)
    assert len(rec.records) >= 50
    assert rec.records[-1]["line"]["detail"].endswith(str(len(rec.records) - 1))


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("1m30s", 90), ("2h", 7200), ("1:30", 90), ("1:02:03", 3723)],
)
def test_durations(text: str, seconds: float) -> None:
    assert recording.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "1x", "1:a"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        recording.parse_duration(text)


def test_a_replay_follows_the_namespace_the_console_moved_to(tmp_path: Path) -> None:
    path = tmp_path / "ns.rec"
    state = NodeState("a")
    state.upsert(CONTAINERS, "in-a", ContainerRow("in-a", "i", "r"))
    recorder = Recorder(recording.Writer(path, {"namespace": "a"}, ticking(1.0)))
    recorder.watch(state)
    state.namespace = "b"
    state.clear_namespaced()
    state.upsert(CONTAINERS, "in-b", ContainerRow("in-b", "i", "r"))
    recorder.close()
    rec = recording.read(path)
    shown = NodeState("a")
    player = Player(rec, shown, on_log=lambda line: None, on_reset_log=lambda lines: None)
    player.seek(1)
    assert (shown.namespace, list(shown.containers)) == ("a", ["in-a"])
    player.advance(rec.duration)
    assert (shown.namespace, list(shown.containers)) == ("b", ["in-b"])
    player.seek(1)
    assert (shown.namespace, list(shown.containers)) == ("a", ["in-a"])
    player.seek(rec.duration)
    assert shown.namespace == "b"
    # Once the viewer picks a namespace, the replay stays there.
    player.follow = False
    player.show_namespace("a")
    player.seek(1)
    player.advance(rec.duration)
    assert (shown.namespace, list(shown.containers)) == ("a", ["in-a"])
