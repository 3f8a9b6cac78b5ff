"""Pure pieces of the console: commands, keymap, image walking, filters, columns, the model."""

from __future__ import annotations

import hashlib
import itertools
import re
from datetime import UTC, datetime, timedelta

import pytest

from core.api.containerd.types import Descriptor
from core.images.platforms import parse
from tests.tui.fixed import fixed_app
from tui import commands, keymap, oci, pull_cli, spec
from tui.palette import ConsoleCommands
from tui.state import CONTAINERS, ContainerRow, LogLine, NodeState, age
from tui.widgets.event_log import matches, parse_filter
from tui.widgets.footer import KeyFooter
from tui.widgets.tables import Column, size, visible_columns


def test_no_two_commands_share_a_key_in_one_pane() -> None:
    for pane in (*commands.RESOURCE_PANES, commands.NAMESPACES, commands.EVENTS):
        keys = [k for c in (*commands.for_pane(pane), *commands.for_pane(commands.SCREEN))
                for k in c.keys.split(",")]  # fmt: skip
        assert len(keys) == len(set(keys)), pane


def test_every_mutating_command_teaches_its_ctr_line() -> None:
    for c in commands.COMMANDS:
        if c.mutates:
            for pane in c.panes:
                assert c.ctr.get(pane) or c.ctr.get("*"), (c.id, pane)


def test_ctr_lines_are_shell_quoted() -> None:
    delete = commands.BY_ID["table.delete"]
    line = delete.ctr_line(commands.SNAPSHOTS, ns="default", snapshotter="overlayfs", key="a b")
    assert line == "ctr -n default snapshots --snapshotter overlayfs rm 'a b'"
    kill = commands.BY_ID["container.kill"]
    assert (
        kill.ctr_line(commands.CONTAINERS, " -a", ns="default", signal="SIGTERM", id="web")
        == "ctr -n default task kill -a -s SIGTERM web"
    )


def test_read_only_refuses_remapped_keys() -> None:
    refused = commands.refused_keys(commands.IMAGES, {"table.delete": "x"})
    assert refused["x"].id == "table.delete" and "D" not in refused
    assert refused["p"].id == "app.pull" and refused["r"].id == "image.run"
    assert "enter" not in refused


def test_keymap_file() -> None:
    assert keymap.parse('[keys]\n"container.kill" = "K, ctrl+k"\n', "f") == {
        "container.kill": "K,ctrl+k"
    }
    with pytest.raises(keymap.KeymapError, match=re.escape("unknown binding id 'container.kil'")):
        keymap.parse('[keys]\n"container.kil" = "K"\n', "f")
    with pytest.raises(keymap.KeymapError, match=re.escape("keys.nav.up must be a non-empty")):
        keymap.parse('[keys]\n"nav.up" = 3\n', "f")
    with pytest.raises(keymap.KeymapError, match="not valid TOML"):
        keymap.parse("[keys\n", "f")


def test_chain_id_and_platform_choice() -> None:
    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64

    def detail(*diff_ids: str) -> oci.ImageDetail:
        layers = [oci.Layer("sha256:" + "c" * 64, "", 1, diff_id) for diff_id in diff_ids]
        return oci.ImageDetail(target=Descriptor(), layers=layers)

    assert detail().chain_id == ""
    assert detail(a).chain_id == a
    assert detail(a, b).chain_id == "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()
    index = {
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "arm",
             "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "amd",
             "platform": {"os": "linux", "architecture": "amd64"}},
        ]
    }  # fmt: skip
    assert oci.choose_manifest(index, parse("linux/amd64"))["digest"] == "amd"
    assert oci.choose_manifest(index, parse("linux/arm64"))["digest"] == "arm"
    with pytest.raises(oci.ImageWalkError, match="no manifest for linux/s390x"):
        oci.choose_manifest(index, parse("linux/s390x"))


def test_the_shell_and_the_console_show_sizes_alike() -> None:
    for n in (0, 1, 1536, 23 << 20, 5 << 30):
        assert pull_cli.human(n) == size(n)
    assert pull_cli.human(1536) == "1.5 KiB"


def test_event_log_filter() -> None:
    line = LogLine(datetime.now(UTC), "k8s.io", "/tasks/exit", "web exit 0")
    assert parse_filter("ns:k8s.io topic:/tasks web") == [
        ("ns", "k8s.io"),
        ("topic", "/tasks"),
        ("", "web"),
    ]
    assert matches(line, parse_filter("ns:k8s.io topic:/tasks web"))
    assert not matches(line, parse_filter("ns:default"))
    assert not matches(line, parse_filter("topic:/images"))


def test_columns_drop_from_the_right_keeping_essential_ones() -> None:
    cols = (Column("id", "ID", 10, essential=True), Column("a", "A", 10),
            Column("status", "S", 10, essential=True), Column("b", "B", 10))  # fmt: skip
    assert [c.key for c in visible_columns(cols, 48)] == ["id", "a", "status", "b"]
    assert [c.key for c in visible_columns(cols, 40)] == ["id", "a", "status"]
    assert [c.key for c in visible_columns(cols, 30)] == ["id", "status"]
    assert [c.key for c in visible_columns(cols, 10)] == ["id"]


def test_columns_with_more_to_say_stay_longer() -> None:
    cols = (Column("id", "ID", 10, essential=True), Column("pid", "PID", 10, keep=1),
            Column("cpu", "CPU", 10, keep=2), Column("runtime", "RUNTIME", 10))  # fmt: skip
    assert [c.key for c in visible_columns(cols, 40)] == ["id", "pid", "cpu"]
    assert [c.key for c in visible_columns(cols, 30)] == ["id", "cpu"]


def test_state_updates_by_key_and_tracks_dirty_tables() -> None:
    state = NodeState("default")
    web = ContainerRow("web", "img", "runc")
    state.replace_all(CONTAINERS, {"web": web})
    assert state.take_dirty() == {CONTAINERS}
    state.replace_all(CONTAINERS, {"web": web})
    assert state.take_dirty() == set()
    state.update_container("web", status="RUNNING", pid=7)
    assert state.containers["web"].status == "RUNNING" and state.running == 1
    state.replace_all(CONTAINERS, {})
    assert state.take_dirty() == {CONTAINERS} and not state.containers


def test_ages() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert age(now - timedelta(hours=3, minutes=2), now) == "3h02m"
    assert age(now - timedelta(seconds=5), now) == "5s"
    assert age(now - timedelta(days=3), now) == "3d"
    assert age(datetime(1, 1, 1, tzinfo=UTC), now) == "-"
    assert age(None, now) == "-"


def test_spec_from_an_image_config() -> None:
    out = spec.from_image(
        "default",
        "web",
        {
            "config": {
                "Entrypoint": ["/init"],
                "Cmd": ["run"],
                "User": "1000:50",
                "WorkingDir": "/w",
            }
        },
    )
    assert out["process"]["args"] == ["/init", "run"]
    assert out["process"]["user"] == {"uid": 1000, "gid": 50}
    assert out["process"]["cwd"] == "/w"
    assert out["linux"]["cgroupsPath"] == "/default/web"
    assert spec.from_image("ns", "c", {})["process"]["args"] == ["/bin/sh"]


async def test_no_color_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = fixed_app()
    async with app.run_test(size=(80, 24)):
        assert app.no_color


async def test_palette_runs_commands_by_name() -> None:
    app = fixed_app()
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"view: snapshots")
        await pilot.pause(0.5)
        await pilot.press("enter")
        await pilot.pause()
        assert app.main.focused_pane() == "snapshots"


async def test_read_only_palette_leaves_out_changes() -> None:
    app = fixed_app(read_only=True)
    async with app.run_test(size=(120, 36)) as pilot:
        await pilot.pause()
        provider = ConsoleCommands(app.main)
        names = [name for name, _id, _cb in provider._entries()]
        assert "selected: inspect" in names and "view: images" in names
        changes = ("selected: delete", "console: pull", "container: start", "container: kill")
        assert not set(changes) & set(names)
        assert "image: run" not in names and "container: pause/resume" not in names


async def test_light_and_dark_themes() -> None:
    app = fixed_app()
    async with app.run_test(size=(80, 24)) as pilot:
        assert app.theme == "textual-dark"
        await pilot.press("T")
        assert app.theme == "textual-light"
        await pilot.press("colon", *"theme dark", "enter")
        assert app.theme == "textual-dark"


async def test_footer_fits_80_columns_and_keeps_help() -> None:
    for width, everything in ((80, False), (160, True)):
        app = fixed_app()
        async with app.run_test(size=(width, 24)) as pilot:
            await pilot.pause()
            footer = app.main.query_one(KeyFooter)
            regions = sorted((key.region for key in footer.children), key=lambda r: r.x)
            assert all(a.right <= b.x for a, b in itertools.pairwise(regions))
            assert regions[-1].right <= width
            shown = [getattr(key, "description", "") for key in footer.children]
            # Help, the command line and quit stay at any width.
            assert {"help", "jump", "quit", "inspect"} <= set(shown)
            assert ("palette" in shown) is everything
