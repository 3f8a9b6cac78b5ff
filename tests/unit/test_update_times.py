"""A record's update time moves forward on every update, whatever the clock does.

Replies carrying a container or an image are made from an encoding cached
under the record's update time (`core/services/containers.py`, `images.py`);
two updates sharing one time would serve the first one's bytes for the second.
"""

from __future__ import annotations

import pytest

from core.metadata import db


def test_an_update_time_is_later_than_the_last_even_if_the_clock_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(db.time, "time_ns", lambda: 5_000_000_000)
    assert db.now_after(1_000) == 5_000_000
    assert db.now_after(5_000_000) == 5_000_001
    assert db.now_after(9_000_000) == 9_000_001
