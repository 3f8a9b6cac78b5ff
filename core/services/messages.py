"""Reading a call's request messages within `[grpc] max_recv_message_size`.

grpclib reads a message whole before it decodes it. `install` gives every
call's stream a `recv_message` that checks the 5-byte gRPC length prefix as
soon as it arrives: a message announcing more than the limit is
RESOURCE_EXHAUSTED (grpc-go's words) before its body is read, so what the
engine holds of it is bounded by the HTTP/2 flow-control windows. A
compressed message (no grpc-encoding is ever negotiated), a truncated one,
and a unary call that ends without its request are INVALID_ARGUMENT; the
bytes are decoded strictly by the server's codec (`codec.unmarshal`).
"""

from __future__ import annotations

import struct
import time
from typing import Any

from grpclib.events import RecvRequest, listen

from core.errors import InvalidArgument, ResourceExhausted

_PREFIX = struct.Struct(">BI")


def install(server: Any, max_recv: int) -> None:
    async def on_request(event: RecvRequest) -> None:
        inner = event.method_func

        async def bounded(stream: Any) -> None:
            async def recv_message() -> Any:
                return await _recv(stream, max_recv)

            stream.recv_message = recv_message
            await inner(stream)

        event.method_func = bounded

    listen(server, RecvRequest, on_request)


async def _recv(stream: Any, max_recv: int) -> Any:
    """grpclib's `Stream.recv_message`, with the limit checked on the prefix."""
    h2_stream = stream._stream
    try:
        prefix = await h2_stream.recv_data(_PREFIX.size)
        if not prefix:
            if not stream._cardinality.client_streaming and not stream._messages_received:
                raise InvalidArgument("error unmarshalling request: the request message is missing")
            return None
        compressed, size = _PREFIX.unpack(prefix)
        if compressed:
            raise InvalidArgument("grpc: compressed flag set with identity or empty encoding")
        if size > max_recv:
            raise ResourceExhausted(
                f"grpc: received message larger than max ({size} vs. {max_recv})"
            )
        data = await h2_stream.recv_data(size)
    except AssertionError:
        # grpclib's buffer asserts when the stream ends inside a message.
        raise InvalidArgument("error unmarshalling request: the message is truncated") from None
    message = stream._codec.decode(data, stream._recv_type)
    (message,) = await stream._dispatch.recv_message(message)
    stream._messages_received += 1
    h2_stream.connection.messages_received += 1
    h2_stream.connection.last_message_received = time.monotonic()
    return message
