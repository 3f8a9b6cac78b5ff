"""`ctrdeck pull` on a local socket starts without the generic gRPC client or the fleet's parts.

In a fresh interpreter, a whole `ctrdeck pull` (here against a socket that does not exist,
so it fails as a user would see), and finding the bundled engine's socket, load neither
asyncio, grpclib, betterproto2, protobuf nor a generated stub, and building the parser
loads neither `tui.nodes`, TOML nor platformdirs; `--help` still names the nodes file's
default path.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.fresh import run_fresh
from tui import nodes

HEAVY = (
    "asyncio",
    "grpclib",
    "betterproto2",
    "google.protobuf",
    "core.api",
    "core.client",
    "tui.nodes",
    "platformdirs",
    "tomllib",
)

GRPC = HEAVY[:6]

SCRIPT = """
import contextlib, io, json, sys
from tui import cli

def loaded(names):
    return sorted(m for m in sys.modules if any(m == n or m.startswith(n + ".") for n in names))

err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = cli.main(["-a", sys.argv[1], "pull", "--plain-http", "127.0.0.1:5000/app:1"])
heavy = loaded(sys.argv[2].split())
# Without -a, the bundled engine's socket: its config is read (TOML, platformdirs), no more.
from tui import launcher

launcher.resolve_address(None)
bundled = loaded(sys.argv[3].split())
out = io.StringIO()
with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
    cli.main(["--help"])
print(json.dumps({"code": code, "stderr": err.getvalue(), "heavy": heavy, "bundled": bundled,
                  "help": out.getvalue()}))
"""


def test_pull_loads_only_what_it_runs(tmp_path: Path) -> None:
    missing = tmp_path / "no.sock"
    result = json.loads(
        run_fresh(SCRIPT, str(missing), " ".join(HEAVY), " ".join(GRPC), COLUMNS="300")
    )
    assert result["code"] == 1
    assert result["stderr"] == "ctrdeck pull: [Errno 2] No such file or directory\n"
    assert result["heavy"] == []
    assert result["bundled"] == []
    assert f"(default: {nodes.default_path()} when no -a and no --node)" in result["help"]
