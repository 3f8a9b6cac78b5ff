"""Typed-ahead keys: each key from the terminal lands where it would have, typed slowly.

A single terminal read (a paste into a terminal without bracketed paste, a
laggy SSH link, a fast typist) hands Textual a burst of keys, and Textual
forwards each one to whatever has focus at that moment. But a key's effect on
focus comes later: `focus()` is deferred to the app's queue, a pushed dialog
mounts and focuses on its own queue, an input's submission is handled after
it bubbles up. So in `/s` the `s` reached the table (and started a task) while
the filter box was still waiting for focus, and `:ns scale⏎` lost everything
after the colon.

`TypeAheadApp` holds every key and paste that arrives from the terminal in
one queue and forwards the next only once the previous one has settled: a
marker message sent after it along the same path (focused widget, its
ancestors, the screen, the app) has arrived, what that key set off on the
focused path and on the (possibly new) screen has run, and the focus
callbacks it queued have been applied. That takes at least two such rounds
(the second catches messages the key made a widget post, like an input's
Submitted), and more while the screen or the focused widget keeps changing. A
round whose marker gets lost (its widget was removed with it) ends after a
short fallback. So a key meant for an input always reaches the input, and
never triggers an action elsewhere, whatever the pace it arrived at.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, TypeVar

from textual import events
from textual.app import App
from textual.message import Message
from textual.timer import Timer
from textual.widget import Widget

ReturnType = TypeVar("ReturnType")

# The fewest rounds a key waits for, and the most (a chain of focus changes that never ends).
MIN_ROUNDS = 2
MAX_ROUNDS = 6
# A marker lost with its widget must not hold the keys behind it for longer than this.
LOST_MARKER_AFTER = 0.25


class KeySettled(Message, bubble=True):
    """Sent after a forwarded key along its path; its arrival at the app ends a round."""

    def __init__(self, round_id: int) -> None:
        super().__init__()
        self.round_id = round_id


class TypeAheadApp(App[ReturnType], Generic[ReturnType]):
    """An app that delivers terminal keys and pastes one at a time, each after the last settled."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._held: deque[events.Key | events.Paste] = deque()
        self._delivering = False
        self._round_id = 0
        self._rounds = 0
        self._where: tuple[object, Widget | None] = (None, None)
        self._lost_marker: Timer | None = None

    @property
    def keys_held(self) -> int:
        """Keys and pastes waiting for the one before them to settle."""
        return len(self._held) + (1 if self._delivering else 0)

    async def on_event(self, event: events.Event) -> None:
        if (
            isinstance(event, (events.Key, events.Paste))
            and not event.is_forwarded
            and self._screen_stack
        ):
            self._held.append(event)
            if not self._delivering:
                await self._deliver_next()
            return
        await super().on_event(event)

    async def _deliver_next(self) -> None:
        if not self._held or not self._screen_stack:
            self._held.clear()
            self._delivering = False
            return
        self._delivering = True
        self._rounds = 0
        await super().on_event(self._held.popleft())
        self._start_round()

    def _focus_point(self) -> tuple[object, Widget | None]:
        screen = self.screen
        return screen, screen.focused

    def _start_round(self) -> None:
        self._round_id += 1
        self._rounds += 1
        self._where = self._focus_point()
        # The path the key took: the app forwards to the focused widget, else to the screen.
        target = self.focused or self.screen
        target.post_message(KeySettled(self._round_id))
        if self._lost_marker is not None:
            self._lost_marker.stop()
        self._lost_marker = self.set_timer(LOST_MARKER_AFTER, self._marker_lost, name="typeahead")

    def on_key_settled(self, message: KeySettled) -> None:
        message.stop()
        if message.round_id != self._round_id:
            return
        round_id = message.round_id
        # A screen the key pushed composes and mounts before its queue runs this callback;
        # the focus it asked for is then applied by the app before `_round_done`.
        if not self.screen.call_later(self.call_later, self._round_done, round_id):
            self.call_later(self._round_done, round_id)

    def _marker_lost(self) -> None:
        self.call_later(self._round_done, self._round_id)

    async def _round_done(self, round_id: int) -> None:
        if round_id != self._round_id or not self._delivering:
            return
        # Later markers of this round (and a late fallback) are stale from here on.
        self._round_id += 1
        if self._lost_marker is not None:
            self._lost_marker.stop()
            self._lost_marker = None
        moved = self._focus_point() != self._where
        if self._screen_stack and (
            self._rounds < MIN_ROUNDS or (moved and self._rounds < MAX_ROUNDS)
        ):
            self._start_round()
            return
        await self._deliver_next()
