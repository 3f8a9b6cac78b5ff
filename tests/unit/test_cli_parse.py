"""`tui.cli.parse`: a `pull` command line parsed by the pull-only parser, as the full one would.

Every command line here is parsed both ways, `cli.parse` and the full parser built by
`cli.build_parser`: the same namespace, or the same exit status and the same words on
stdout and stderr (usage errors, `--help`). A fresh interpreter's `ctrdeck pull` command
line builds no other subcommand's parser.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tests.fresh import run_fresh
from tui import cli

PULLS = [
    ["pull", "docker.io/library/alpine:3.20"],
    ["-a", "/run/x.sock", "pull", "--plain-http", "127.0.0.1:5000/app:1"],
    ["--address=/run/x.sock", "-n", "ns1", "pull", "-u", "me:pw", "r:1"],
    ["pull", "-a", "/run/y.sock", "--namespace", "ns2", "--snapshotter", "native", "r"],
    ["--read-only", "--theme", "light", "pull", "--platform", "linux/arm64", "r"],
    ["pull", "--all-platforms", "--skip-unpack", "--tls-ca", "ca.pem", "r"],
    ["--node", "a=/x.sock", "--node", "b=/y.sock", "--nodes-file", "n.toml", "pull", "r"],
    ["--addr", "/run/x.sock", "pull", "--plain-h", "r"],  # abbreviations, as argparse allows
    ["-a", "pull", "pull", "r"],  # a socket named like the command
    ["pull", "--", "r"],
]

OTHERS = [
    [],
    ["--teach"],
    ["-a", "pull", "images", "tag", "a", "b"],  # `pull` is the socket, not the command
    ["images", "rm", "pull"],
    ["cri", "images"],
    ["nodes", "--json"],
    ["engine", "--root", "/var/lib/x"],
    ["config", "default"],
]

FAILURES = [
    ["pull"],  # no reference
    ["pull", "a", "b"],
    ["pull", "--bogus", "r"],
    ["--bogus", "pull", "r"],
    ["-h", "pull", "r"],
    ["--he", "pull", "r"],
    ["pull", "--help"],
    ["pull", "-h", "r"],
    ["--theme", "blue", "pull", "r"],
    ["pull", "--platform"],
    ["pull", "--plain", "r"],  # ambiguous
    ["pul", "r"],
    ["--help"],
]


def _run(parse: object, argv: list[str]) -> tuple[object, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            result: object = parse(argv)  # type: ignore[operator]
        except SystemExit as exc:
            result = ("exit", exc.code)
    return result, out.getvalue(), err.getvalue()


@pytest.fixture(autouse=True)
def _wide(monkeypatch: pytest.MonkeyPatch) -> None:
    # Help and usage wrap at the terminal's width: the same for both parsers.
    monkeypatch.setenv("COLUMNS", "120")


@pytest.mark.parametrize("argv", PULLS + OTHERS + FAILURES, ids=" ".join)
def test_parse_is_the_full_parser(argv: list[str]) -> None:
    assert _run(cli.parse, argv) == _run(lambda a: cli.build_parser().parse_args(a), argv)


@pytest.mark.parametrize("argv", PULLS, ids=" ".join)
def test_a_pull_command_line_is_a_pull(argv: list[str]) -> None:
    assert cli.parse(argv).command == "pull"


def test_a_pull_builds_no_other_command(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from tui import cli\n"
        "args = cli.parse(['-a', '/run/x.sock', 'pull', '--plain-http', 'r:1'])\n"
        "assert args.command == 'pull', args\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('tui.'))))\n"
    )
    loaded = set(run_fresh(script).split())
    assert "tui.pull_cli" in loaded
    assert not loaded & {"tui.cri_cli", "tui.trainer_cli"}
