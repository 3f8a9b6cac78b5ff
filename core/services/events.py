"""Events: publish, forward and subscribe over gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

from core import context, identifiers
from core.api.containerd.services.events import v1 as api
from core.api.google.protobuf import Empty
from core.engine import Engine
from core.errors import InvalidArgument
from core.events.exchange import Envelope, validate_topic
from core.services.codec import Preencoded


class EventsService(api.EventsBase):
    PARTS: tuple[str, ...] = ("events",)
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    async def publish(self, message: api.PublishRequest) -> Empty:
        if message.event is None:
            raise InvalidArgument("event must not be empty")
        self.engine.events.publish_any(context.namespace(), message.topic, message.event)
        return Empty()

    async def forward(self, message: api.ForwardRequest) -> Empty:
        env = message.envelope
        if env is None or env.event is None:
            raise InvalidArgument("envelope with an event is required")
        identifiers.validate(env.namespace)
        validate_topic(env.topic)
        self.engine.events.forward(
            Envelope(env.timestamp or datetime.now(UTC), env.namespace, env.topic, env.event)
        )
        return Empty()

    async def subscribe(self, message: api.SubscribeRequest) -> AsyncIterator[api.Envelope]:
        async for env in self.engine.events.subscribe(list(message.filters), message.history):
            yield Preencoded(env.encoded())  # type: ignore[misc]
