"""Raw HTTP/2 clients that misbehave on purpose, for the server-hardening tests.

Each speaks to the engine's Unix socket with the `h2` library (or plain bytes)
and does one thing a well-behaved gRPC client never does: resets streams as
fast as it opens them, sends a message whose length prefix exceeds the limit,
sends bytes that are not the protobuf the method expects, or stops half-way
through the preface or a frame. `bench/fault_server.py` uses the same clients
to measure the engine before and after its fixes.
"""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

VERSION_PATH = "/containerd.services.version.v1.Version/Version"
HEALTH_PATH = "/grpc.health.v1.Health/Check"
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def _headers(path: str, namespace: str = "default") -> list[tuple[str, str]]:
    return [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        ("containerd-namespace", namespace),
    ]


def grpc_frame(payload: bytes, declared: int | None = None) -> bytes:
    """A gRPC length-prefixed message; `declared` may lie about the length."""
    size = len(payload) if declared is None else declared
    return struct.pack(">?I", False, size) + payload


def _connect(address: Path | str, timeout: float = 10.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(str(address))
    return s


def _client() -> h2.connection.H2Connection:
    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    conn.initiate_connection()
    return conn


def reset_flood(address: Path | str, streams: int = 10_000, batch: int = 500) -> dict[str, int]:
    """Open `streams` streams on one connection, resetting each right after its
    HEADERS (the "rapid reset" pattern), then drain until the server closes the
    connection or goes quiet. Returns how many streams were sent and whether
    the server said GOAWAY."""
    conn = _client()
    s = _connect(address)
    s.sendall(conn.data_to_send())
    sent = 0
    goaway = False
    try:
        while sent < streams:
            for _ in range(min(batch, streams - sent)):
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, _headers(VERSION_PATH), end_stream=False)
                conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
                sent += 1
            s.sendall(conn.data_to_send())
            goaway = _drain(s, conn, wait=0.0) or goaway
            if goaway:
                break
        if not goaway:
            goaway = _drain(s, conn, wait=0.5)
    except (OSError, h2.exceptions.ProtocolError):
        goaway = True
    finally:
        s.close()
    return {"sent": sent, "goaway": int(goaway)}


def _drain(s: socket.socket, conn: h2.connection.H2Connection, wait: float) -> bool:
    """Read what the server sent; True once it said GOAWAY or closed."""
    s.settimeout(wait if wait > 0 else 0.0001)
    try:
        while True:
            try:
                data = s.recv(1 << 20)
            except (TimeoutError, BlockingIOError):
                return False
            if not data:
                return True
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                return True
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                return True
            out = conn.data_to_send()
            if out:
                s.sendall(out)
    finally:
        s.settimeout(10.0)


def max_concurrent_streams(address: Path | str) -> int:
    """The SETTINGS_MAX_CONCURRENT_STREAMS the server advertises, once settled."""
    conn = _client()
    s = _connect(address, 2.0)
    try:
        s.sendall(conn.data_to_send())
        deadline = time.monotonic() + 2.0
        s.settimeout(0.3)
        while time.monotonic() < deadline:
            try:
                data = s.recv(1 << 16)
            except TimeoutError:
                break
            if not data:
                break
            conn.receive_data(data)
            s.sendall(conn.data_to_send())
        return conn.remote_settings.max_concurrent_streams
    finally:
        s.close()


def unary(
    address: Path | str,
    path: str,
    body: bytes,
    namespace: str = "default",
    chunk: int = 1 << 14,
    timeout: float = 30.0,
) -> tuple[int | None, str, int]:
    """Send one raw request body (already gRPC framed) and return
    (grpc-status, grpc-message, bytes of body the server let us send)."""
    conn = _client()
    s = _connect(address, timeout)
    s.sendall(conn.data_to_send())
    sid = conn.get_next_available_stream_id()
    conn.send_headers(sid, _headers(path, namespace))
    s.sendall(conn.data_to_send())
    offset = 0
    status: int | None = None
    message = ""
    ended = finished = False
    deadline = time.monotonic() + timeout
    try:
        while not ended and time.monotonic() < deadline:
            while not finished:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0 and body:
                    break
                piece = body[offset : offset + min(window, chunk)]
                offset += len(piece)
                finished = offset == len(body)
                conn.send_data(sid, piece, end_stream=finished)
                s.sendall(conn.data_to_send())
            try:
                data = s.recv(1 << 16)
            except TimeoutError:
                break
            if not data:
                break
            for event in conn.receive_data(data):
                headers = getattr(event, "headers", None)
                if headers:
                    for k, v in headers:
                        k = k.decode() if isinstance(k, bytes) else k
                        v = v.decode() if isinstance(v, bytes) else v
                        if k == "grpc-status":
                            status = int(v)
                        elif k == "grpc-message":
                            message = v
                if isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, sid)
                if isinstance(
                    event,
                    h2.events.StreamEnded | h2.events.StreamReset | h2.events.ConnectionTerminated,
                ):
                    ended = True
            out = conn.data_to_send()
            if out:
                s.sendall(out)
    except (OSError, h2.exceptions.ProtocolError, h2.exceptions.StreamClosedError):
        pass
    finally:
        s.close()
    return status, message, offset


def held_open(address: Path | str, payload: bytes, limit: float) -> float | None:
    """Send `payload` and wait up to `limit` seconds for the server to close
    the connection; the seconds it took, or None if it was still open."""
    s = _connect(address)
    started = time.monotonic()
    try:
        s.sendall(payload)
        s.settimeout(0.2)
        while time.monotonic() - started < limit:
            try:
                data = s.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return time.monotonic() - started
            if not data:
                return time.monotonic() - started
        return None
    finally:
        s.close()


def frame_header(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    return struct.pack(">I", length)[1:] + bytes([kind, flags]) + struct.pack(">I", stream_id)


def handshake() -> bytes:
    """The client preface and an empty SETTINGS frame."""
    return PREFACE + frame_header(0, 4, 0, 0)


def promised_frame(length: int) -> bytes:
    """A handshake, then a DATA frame header promising `length` bytes, and nothing behind it."""
    return handshake() + frame_header(length, 0, 0, 1)


def calls_on_one_connection(address: Path | str, calls: int) -> list[tuple[str, str]]:
    """Health checks on one connection while the client churns its HPACK tables.

    Each call sends a new indexed metadata value (the server's decoding table
    grows and evicts); every tenth call the client shrinks, then restores, the
    server's encoding table (SETTINGS_HEADER_TABLE_SIZE). A reply coded against
    a table the client does not have fails here as a decoding error. Returns
    each call's (grpc-status, content-type).
    """
    conn = _client()
    s = _connect(address)
    results: list[tuple[str, str]] = []
    try:
        s.sendall(conn.data_to_send())
        for i in range(calls):
            if i % 10 == 5:
                size = 0 if i % 20 == 5 else 4096
                conn.update_settings({h2.settings.SettingCodes.HEADER_TABLE_SIZE: size})
            sid = conn.get_next_available_stream_id()
            conn.send_headers(sid, [*_headers(HEALTH_PATH), ("x-call", str(i % 7) * (i % 300))])
            conn.send_data(sid, grpc_frame(b""), end_stream=True)
            s.sendall(conn.data_to_send())
            got: dict[str, str] = {}
            while "grpc-status" not in got:
                data = s.recv(1 << 16)
                if not data:
                    raise ConnectionError("server closed the connection")
                for event in conn.receive_data(data):
                    for k, v in getattr(event, "headers", None) or ():
                        got[k] = v
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(event.flow_controlled_length, sid)
                out = conn.data_to_send()
                if out:
                    s.sendall(out)
            results.append((got["grpc-status"], got["content-type"]))
    finally:
        s.close()
    return results


def garbage_header_block(address: Path | str) -> int | None:
    """A HEADERS frame whose HPACK block names a table index that does not exist;
    returns the GOAWAY error code the server answers with (None: no GOAWAY)."""
    conn = _client()
    s = _connect(address)
    try:
        s.sendall(conn.data_to_send())
        # 0xFF 0x7F: an indexed field, index 127 + 127 (empty dynamic table).
        s.sendall(frame_header(2, 0x1, 0x4 | 0x1, 1) + b"\xff\x7f")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            data = s.recv(1 << 16)
            if not data:
                return None
            for event in conn.receive_data(data):
                if isinstance(event, h2.events.ConnectionTerminated):
                    return int(event.error_code)
            # The server's SETTINGS are not acknowledged: it may be gone already.
        return None
    finally:
        s.close()
