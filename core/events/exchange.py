"""The events exchange: every mutation's event, fanned out to every subscriber.

Publishers hand over a topic and a payload message; the exchange stamps the
namespace and time, and puts the envelope on each subscriber's bounded queue
whose filters match. Subscriptions are global unless a filter narrows them, as
in containerd. A subscriber that falls more than `QUEUE_SIZE` events behind is
ended with an error instead of stalling publishers or eating memory: a client
that resubscribes loses nothing silently.

The exchange also keeps the last `HISTORY` envelopes in a ring buffer. A
subscriber that asks for history (ctrdeck's `SubscribeRequest.history`, which
`ctr` never sets) first gets up to that many of them that match its filters,
oldest first and marked `from_history`, then the live stream; the two are
taken in one step, so nothing falls between them and nothing comes twice.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import betterproto2

from core import filters, identifiers, typeurl
from core.api.containerd.services.events import v1 as events_api
from core.api.google.protobuf import Any
from core.errors import InvalidArgument, Unavailable

QUEUE_SIZE = 4096
# A few hundred events: a new console's event log starts with recent history.
HISTORY = 500


@dataclass
class Envelope:
    timestamp: datetime
    namespace: str
    topic: str
    event: Any
    _decoded: betterproto2.Message | None = field(default=None, repr=False)
    _wire: bytes | None = field(default=None, repr=False)
    from_history: bool = False

    def encoded(self) -> bytes:
        """The wire form of this envelope, made once however many subscribers get it."""
        if self._wire is None:
            self._wire = bytes(
                events_api.Envelope(
                    timestamp=self.timestamp,
                    namespace=self.namespace,
                    topic=self.topic,
                    event=self.event,
                    from_history=self.from_history,
                )
            )
        return self._wire

    def payload(self) -> betterproto2.Message | None:
        if self._decoded is None and typeurl.message_type(self.event.type_url) is not None:
            self._decoded = typeurl.unpack(self.event)
        return self._decoded


def validate_topic(topic: str) -> None:
    if not topic:
        raise InvalidArgument("must not be empty topic")
    if not topic.startswith("/"):
        raise InvalidArgument(f'topic "{topic}" must start with "/"')
    parts = topic[1:].split("/")
    if not parts or parts == [""]:
        raise InvalidArgument(f'topic "{topic}" must have at least one component')
    for part in parts:
        try:
            identifiers.validate(part)
        except InvalidArgument as exc:
            raise InvalidArgument(
                f'failed validation on component "{part}": {exc.message}'
            ) from None


def _camel_to_snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def envelope_adaptor(envelope: Envelope) -> filters.Adaptor:
    def adapt(path: Sequence[str]) -> tuple[str, bool]:
        if not path:
            return "", False
        head = path[0]
        if head == "namespace":
            return envelope.namespace, bool(envelope.namespace)
        if head == "topic":
            return envelope.topic, bool(envelope.topic)
        if head == "event" and len(path) > 1:
            payload = envelope.payload()
            if payload is None:
                return "", False
            name = _camel_to_snake(path[1]) if not hasattr(payload, path[1]) else path[1]
            value = getattr(payload, name, None)
            if isinstance(value, str):
                return value, bool(value)
            if isinstance(value, dict) and len(path) > 2:
                key = ".".join(path[2:])
                return (value[key], True) if key in value else ("", False)
        return "", False

    return adapt


class _Subscriber:
    def __init__(self, match: filters.Filter) -> None:
        self.match = match
        self.queue: asyncio.Queue[Envelope] = asyncio.Queue(QUEUE_SIZE)
        self.overflowed = False


class Exchange:
    def __init__(self, history: int = HISTORY) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._recent: deque[Envelope] = deque(maxlen=history)
        self.published = 0
        self.listeners: list[Callable[[Envelope], None]] = []

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def publish(self, namespace: str, topic: str, message: betterproto2.Message) -> None:
        self.forward(Envelope(datetime.now(UTC), namespace, topic, typeurl.pack(message), message))

    def publish_any(self, namespace: str, topic: str, event: Any) -> None:
        validate_topic(topic)
        self.forward(Envelope(datetime.now(UTC), namespace, topic, event))

    def forward(self, envelope: Envelope) -> None:
        self.published += 1
        self._recent.append(envelope)
        for listener in self.listeners:
            listener(envelope)
        for sub in list(self._subscribers):
            if sub.overflowed or not sub.match.match(envelope_adaptor(envelope)):
                continue
            try:
                sub.queue.put_nowait(envelope)
            except asyncio.QueueFull:
                sub.overflowed = True

    async def subscribe(
        self, filter_strings: Sequence[str] = (), history: int = 0
    ) -> AsyncIterator[Envelope]:
        sub = _Subscriber(filters.parse_all(filter_strings))
        past = [e for e in self._recent if sub.match.match(envelope_adaptor(e))] if history else []
        self._subscribers.add(sub)
        try:
            for envelope in past[-history:] if history else ():
                yield replace(envelope, from_history=True, _wire=None)
            while True:
                if sub.overflowed and sub.queue.empty():
                    raise Unavailable(
                        f"event subscriber fell more than {QUEUE_SIZE} events behind; resubscribe"
                    )
                yield await sub.queue.get()
        finally:
            self._subscribers.discard(sub)
