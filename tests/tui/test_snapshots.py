"""SVG snapshots of the console on a fixed node: main screen, help, inspect, pulls, Run, a zoom.

The app runs on `tests/tui/fixed.py` (no engine, a frozen clock, UTC), so the
SVGs are the same on every run; `pytest --snapshot-update tests/tui` rewrites
them after an intended change.
"""

from __future__ import annotations

from typing import Any

from textual.pilot import Pilot
from textual.widgets import Input

from core.api.containerd.services.images import v1 as images_api
from tests.tui.fixed import NGINX, fixed_app, fixed_image_detail, fixed_pull_job
from tui.screens.dialogs import RunScreen
from tui.screens.inspect import InspectScreen, Section, image_sections
from tui.screens.pull import PullScreen
from tui.spec import DEFAULT_RUNTIME


async def settle(pilot: Pilot[Any]) -> None:
    await pilot.pause()
    await pilot.wait_for_scheduled_animations()
    await pilot.pause(0.3)


def test_main_screen(snap_compare: Any) -> None:
    assert snap_compare(fixed_app(), terminal_size=(120, 36), run_before=settle)


def test_main_screen_at_80x24(snap_compare: Any) -> None:
    assert snap_compare(fixed_app(), terminal_size=(80, 24), run_before=settle)


def test_help_screen(snap_compare: Any) -> None:
    async def open_help(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await settle(pilot)

    assert snap_compare(fixed_app(), terminal_size=(120, 36), run_before=open_help)


def test_inspect_image(snap_compare: Any) -> None:
    async def inspect(pilot: Pilot[Any]) -> None:
        await settle(pilot)

        async def loader() -> list[Section]:
            return image_sections(NGINX, fixed_image_detail())

        line = f"ctr -n default images ls name=={NGINX}"
        await pilot.app.push_screen(InspectScreen(f"Image ▸ {NGINX}", loader, line))
        await settle(pilot)

    assert snap_compare(fixed_app(), terminal_size=(120, 36), run_before=inspect)


def test_pull_in_progress(snap_compare: Any) -> None:
    async def pull(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.app.push_screen(PullScreen(job=fixed_pull_job()))
        await settle(pilot)

    assert snap_compare(fixed_app(), terminal_size=(120, 36), run_before=pull)


def test_pull_unpacking(snap_compare: Any) -> None:
    async def pull(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        job = fixed_pull_job()
        job.apply(
            images_api.PullImageProgress(
                phase="unpacking",
                message="layer 1 of 4",
                layers=[
                    images_api.LayerProgress(
                        digest=layer.digest,
                        size=layer.size,
                        offset=layer.size,
                        state="unpacking" if i == 0 else "unpacked",
                        applied=21_500_000 if i == 0 else layer.size,
                    )
                    for i, layer in enumerate(job.layers.values())
                ],
            )
        )
        await pilot.app.push_screen(PullScreen(job=job))
        await settle(pilot)

    assert snap_compare(fixed_app(), terminal_size=(120, 36), run_before=pull)


def test_run_form_at_80x24(snap_compare: Any) -> None:
    async def run_form(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        form = RunScreen(
            NGINX,
            "nginx-1",
            ["overlayfs", "native"],
            "overlayfs",
            DEFAULT_RUNTIME,
            default_command="/docker-entrypoint.sh nginx -g 'daemon off;'",
            default_cwd="/",
        )
        await pilot.app.push_screen(form)
        # A blinking cursor would make the picture depend on when it is taken.
        for field in form.query(Input):
            field.cursor_blink = False
        await settle(pilot)

    assert snap_compare(fixed_app(), terminal_size=(80, 24), run_before=run_form)


def test_event_log_zoomed(snap_compare: Any) -> None:
    async def zoom(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await pilot.press("colon", *"events", "enter")
        await settle(pilot)

    assert snap_compare(fixed_app(), terminal_size=(120, 36), run_before=zoom)
