"""`ctrdeck serve` in a real browser: Debian's chromium, headless, driven by selenium.

The server runs as its own process against the real engine. The browser
opens it, and the test reads what the page's terminal was sent (a hook on the
page's WebSocket keeps the bytes; pyte draws them as xterm.js does) to see the
containers table and the event log, types into the terminal, and saves a
screenshot for the README. A second tab over the limit gets the polite page;
closing the tab ends its console process. The key a non-loopback server
requires, and the limit, are checked on the server's own routes too.
"""

from __future__ import annotations

import base64
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pyte
import pytest
from aiohttp.test_utils import TestClient, TestServer

from core.client import Client
from tests.engine_proc import ROOT, EngineProcess, terminate
from tests.tui.support import seed_container, seed_image
from tui import serve

SHOTS = ROOT / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Keeps every binary frame the page's terminal is sent, for the test to read back.
HOOK = """
window.__frames = [];
const Native = window.WebSocket;
window.WebSocket = function (url, protocols) {
  const ws = protocols === undefined ? new Native(url) : new Native(url, protocols);
  ws.addEventListener('message', (e) => {
    if (typeof e.data === 'string') return;
    const bytes = new Uint8Array(e.data);
    let text = '';
    for (let i = 0; i < bytes.length; i += 8192) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 8192));
    }
    window.__frames.push(btoa(text));
  });
  return ws;
};
window.WebSocket.prototype = Native.prototype;
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def wait(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        time.sleep(0.2)


@pytest.fixture
def server(engine: EngineProcess) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tui.cli",
            "serve",
            "--address",
            f"127.0.0.1:{port}",
            "--engine",
            str(engine.address),
            "--max-sessions",
            "1",
        ],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT), TZ="UTC"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"

    def answers() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait(answers, what="the server to answer")
        yield url, proc
    finally:
        terminate(proc)


def screen_of(driver: object, cols: int, rows: int) -> str:
    frames = driver.execute_script("return window.__frames")  # type: ignore[attr-defined]
    term = pyte.Screen(cols, rows)
    stream = pyte.ByteStream(term)
    for frame in frames:
        stream.feed(base64.b64decode(frame))
    return "\n".join(term.display)


async def test_the_console_in_a_real_browser(
    client: Client, server: tuple[str, subprocess.Popen[str]], tmp_path: Path
) -> None:
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.skip("Debian's chromium and chromedriver (package chromium-driver) are needed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    await seed_image(client, "docker.io/library/web:1")
    await seed_container(client, "web-1", "docker.io/library/web:1")
    url, proc = server
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument("--window-size=1400,900")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HOOK})
        driver.get(url)
        ws_url = driver.find_element(By.CSS_SELECTOR, ".textual-terminal").get_attribute(
            "data-session-websocket-url"
        )
        assert ws_url is not None and ws_url.startswith("ws://127.0.0.1:")
        wait(lambda: driver.find_elements(By.CSS_SELECTOR, "body.-first-byte"))
        # Larger than the page's terminal: the console places every cell by position.
        cols, rows = 240, 80

        def drawn() -> str:
            return screen_of(driver, cols, rows)

        wait(lambda: "web-1" in drawn() and "Events ▸ live" in drawn(), what="the tables")
        text = drawn()
        assert "1 Containers" in text and "READ-ONLY" in text
        assert "/containers/create" in text or "/images/create" in text

        keys = driver.find_element(By.CSS_SELECTOR, ".xterm-helper-textarea")
        keys.send_keys("2")
        wait(lambda: "docker.io/library/web:1" in drawn(), what="the images pane")
        keys.send_keys("p")
        wait(lambda: "read-only" in drawn() and "refused" in drawn(), what="the refusal")
        # A browser's user may not write files where the server runs.
        keys.send_keys(f":record {tmp_path / 'x.rec'}\n")
        wait(lambda: "recording is off in a served console" in drawn(), what="no recording")
        assert not (tmp_path / "x.rec").exists()
        keys.send_keys("1")
        time.sleep(1)
        # The README's picture is refreshed only when asked: a test run leaves the tree as it was.
        shots = SHOTS if os.environ.get("CTRDECK_UPDATE_SCREENSHOTS") else tmp_path
        driver.save_screenshot(str(shots / "serve-browser.png"))
        assert (shots / "serve-browser.png").stat().st_size > 10_000

        wait(lambda: len(children(proc.pid)) == 1, what="one console process")
        busy = httpx.get(url, timeout=5)
        assert busy.status_code == 503 and "All 1 console sessions" in busy.text
    finally:
        driver.quit()
    wait(lambda: children(proc.pid) == [], what="the tab's console to end")
    assert httpx.get(url, timeout=5).status_code == 200


def shell_words(command: str) -> list[str]:
    import shlex

    return shlex.split(command.removeprefix("exec "))


def test_the_console_command_is_read_only_unless_told(tmp_path: Path) -> None:
    from tui.cli import build_parser

    args = build_parser().parse_args(["serve", "--engine", "/run/x.sock"])
    words = shell_words(serve.console_command(args))
    assert words[-5:] == ["--namespace", "default", "--address", "/run/x.sock", "--read-only"]
    args = build_parser().parse_args(["serve", "--allow-changes"])
    assert "--read-only" not in shell_words(serve.console_command(args))
    args = build_parser().parse_args(["serve", "--replay", str(tmp_path / "a.rec")])
    assert "replay" in shell_words(serve.console_command(args))


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("0.0.0.0", False),
        ("10.1.2.3", False),
    ],
)
def test_only_loopback_goes_without_a_key(host: str, loopback: bool) -> None:
    assert serve.is_loopback(host) is loopback


async def test_a_keyed_server_refuses_without_its_key_and_a_full_one_says_so() -> None:
    console = serve.ConsoleServer(
        "exec true", "127.0.0.1", 0, secret="s3cret", max_sessions=1, public_url="http://x"
    )
    async with TestClient(TestServer(await console._make_app(), host="127.0.0.1")) as http:
        refused = await http.get("/")
        assert refused.status == 403 and "needs the key" in await refused.text()
        assert (await http.get("/ws")).status == 403
        opened = await http.get("/?key=s3cret")
        assert opened.status == 200
        assert opened.cookies[serve.COOKIE].value == "s3cret"
        # The cookie the page set lets its websocket in.
        assert (await http.get("/static/js/textual.js")).status == 200
        console.sessions = 1
        full = await http.get("/")
        assert full.status == 503 and "ctrdeck is full" in await full.text()


def test_serve_refuses_bad_options(tmp_path: Path) -> None:
    from tests.engine_proc import run_cli

    result = run_cli("serve", "--address", "nowhere")
    assert result.returncode == 2 and "is not host:port" in result.stderr
    bad = tmp_path / "bad.rec"
    bad.write_bytes(b"nope")
    result = run_cli("serve", "--replay", str(bad))
    assert result.returncode == 2 and "not a ctrdeck recording" in result.stderr
    result = run_cli("serve", "--read-only", "--allow-changes")
    assert result.returncode == 2 and "contradict" in result.stderr
