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
one queue and forwards the next only once the previous one has settled. A
round of settling sends a marker message after the key along the same path
(the focused widget, its ancestors, the screen, the app); when it arrives,
what that key set off on the focused path has run, and the marker goes on
through the (possibly new) screen's queue, which a pushed dialog composes and
mounts before, and back through the app's, which applies the focus changes
queued meanwhile. A key waits for at least two rounds (the second catches
messages the key made a widget post, like an input's Submitted) and more while
the screen or the focused widget keeps changing. A printable key or a paste
that goes to an input needs no round: the input keeps it, and it moves no
focus, so a burst of typing costs what it costs without the queue. A marker
can be lost only with the widget or screen carrying it (a key that closed its
dialog); a watchdog ends such a round, and, so that nothing can wedge the
keyboard, any round that takes far longer than a busy console ever needs. A
key whose dialog opens only after a call to the engine (Run reads the image's
config first) holds the keys behind it with `hold_keys` until the dialog is
pushed, within the same limit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from time import monotonic
from typing import Any, Generic, TypeVar

from textual import events
from textual.app import App
from textual.message import Message
from textual.message_pump import MessagePump
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import Input

ReturnType = TypeVar("ReturnType")

# The fewest rounds a key waits for, and the most (a chain of focus changes that never ends).
MIN_ROUNDS = 2
MAX_ROUNDS = 6
# How often the watchdog looks for a marker lost with its carrier.
WATCH_EVERY = 0.1
# A round this old ends whatever became of its marker: a key late beats a keyboard wedged.
GIVE_UP_AFTER = 5.0
# How soon keys typed before the first screen is up are tried again.
NO_SCREEN_RETRY = 0.05


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
        self._delivered = 0
        self._delivering = False
        self._round_id = 0
        self._rounds = 0
        self._round_started = 0.0
        self._where: tuple[object, Widget | None] = (None, None)
        # Whatever holds the round's marker (or the callback it became) right now.
        self._carrier: MessagePump | None = None
        self._watchdog: Timer | None = None
        # Dialogs still on their way (see `hold_keys`); a settled key waits for them.
        self._holds = 0
        self._held_round = False

    @property
    def keys_held(self) -> int:
        """Keys and pastes waiting for the one before them to settle (or settling)."""
        if self._exit:
            # An app on its way out delivers nothing more.
            return 0
        return len(self._held) + (1 if self._delivering else 0)

    @property
    def keys_settled(self) -> int:
        """Keys and pastes delivered and settled since the app started."""
        return self._delivered - (1 if self._delivering else 0)

    def hold_keys(self) -> Callable[[], None]:
        """Hold the keys typed after this one until the returned release is called.

        For a key whose dialog is pushed only after an await: the keys behind it
        belong to that dialog. Releasing twice is harmless; a release that never
        comes is ended by the watchdog like any round.
        """
        self._holds += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            self._holds -= 1
            if not self._holds and self._held_round and self._delivering:
                self._held_round = False
                # Settle afresh: the dialog pushed just now mounts and takes focus first.
                self._rounds = 0
                self._start_round()

        return release

    async def on_event(self, event: events.Event) -> None:
        if isinstance(event, (events.Key, events.Paste)) and not event.is_forwarded:
            self._held.append(event)
            if not self._delivering:
                await self._deliver_next()
            return
        await super().on_event(event)

    async def _deliver_next(self) -> None:
        if self._exit:
            self._held.clear()
            self._delivering = False
            return
        if not self._screen_stack:
            # Typed before the first screen is up (or while the last one goes): wait for one.
            self._delivering = bool(self._held)
            if self._held:
                self.set_timer(NO_SCREEN_RETRY, self._deliver_next, name="typeahead")
            return
        while self._held:
            self._delivering = True
            self._delivered += 1
            self._rounds = 0
            event = self._held.popleft()
            target = self.focused
            await super().on_event(event)
            typed = isinstance(event, events.Paste) or event.is_printable
            if not (event.is_forwarded and typed and isinstance(target, Input)):
                self._start_round()
                return
            # An input keeps the printable keys and pastes it gets (it stops them), and
            # they move no focus: the next key may follow at once, as typing into it should.
        self._delivering = False
        if self._watchdog is not None:
            self._watchdog.stop()
            self._watchdog = None

    def _focus_point(self) -> tuple[object, Widget | None]:
        screen = self.screen
        return screen, screen.focused

    def _start_round(self) -> None:
        self._round_id += 1
        self._rounds += 1
        self._round_started = monotonic()
        self._where = self._focus_point()
        # The path the key took: the app forwards to the focused widget, else to the screen.
        target = self.focused or self.screen
        self._carrier = target
        target.post_message(KeySettled(self._round_id))
        if self._watchdog is None:
            self._watchdog = self.set_interval(WATCH_EVERY, self._watch, name="typeahead")

    def on_key_settled(self, message: KeySettled) -> None:
        message.stop()
        if message.round_id != self._round_id:
            return
        # A screen the key pushed composes and mounts before its queue runs this callback;
        # the focus it asked for is then applied by the app before `_round_done`.
        screen = self.screen
        self._carrier = screen
        if not screen.call_later(self.call_later, self._round_done, message.round_id):
            self._carrier = self
            self.call_later(self._round_done, message.round_id)

    def _watch(self) -> None:
        if not self._delivering:
            return
        carrier = self._carrier
        lost = carrier is None or not (carrier.is_attached and carrier.is_running)
        if lost or monotonic() - self._round_started > GIVE_UP_AFTER:
            self._carrier = self
            self.call_later(self._round_done, self._round_id)

    async def _round_done(self, round_id: int) -> None:
        if round_id != self._round_id or not self._delivering:
            return
        # Later arrivals of this round's marker (and a late watchdog) are stale from here on.
        self._round_id += 1
        moved = self._focus_point() != self._where if self._screen_stack else False
        if self._screen_stack and (
            self._rounds < MIN_ROUNDS or (moved and self._rounds < MAX_ROUNDS)
        ):
            self._start_round()
            return
        if self._holds and monotonic() - self._round_started < GIVE_UP_AFTER:
            # The release starts the next round; the watchdog still ends a wait too long.
            self._held_round = True
            self._carrier = self
            return
        self._held_round = False
        await self._deliver_next()
