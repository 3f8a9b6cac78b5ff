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
from functools import partial
from typing import Any

from core.errors import InvalidArgument, ResourceExhausted
from core.services.status import wrap_handlers

_PREFIX = struct.Struct(">BI")


def install(server: Any, max_recv: int) -> None:
    """Give every call's stream the bounded `recv_message`; after `status.install`."""

    def wrap(method: str, inner: Any) -> Any:
        async def bounded(stream: Any) -> None:
            stream.recv_message = partial(_recv, stream, max_recv)
            try:
                await inner(stream)
            finally:
                # The stream holds a function holding the stream: a cycle that kept
                # each call's ~25 objects (streams, events, buffers) for the cyclic
                # GC. Broken here, they go when the call does.
                del stream.recv_message

        return bounded

    wrap_handlers(server, wrap)


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
