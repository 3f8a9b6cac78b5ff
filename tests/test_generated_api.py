"""The generated gRPC API in core/api is up to date and speaks containerd's wire format.

core/api is generated from protos/ by scripts/gen_proto.sh and committed. The first test
regenerates it into a temporary directory and requires a byte-identical tree, so a .proto
edit without regeneration (or a hand edit of generated code) fails here.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
API = ROOT / "core" / "api"
GEN_SCRIPT = ROOT / "scripts" / "gen_proto.sh"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def _api_modules() -> list[str]:
    return sorted(
        ".".join(("core", "api", *p.parent.relative_to(API).parts))
        for p in API.rglob("__init__.py")
        if "__pycache__" not in p.parts
    )


def test_generated_code_is_up_to_date(tmp_path: Path) -> None:
    for tool in ("grpc_tools", "betterproto2_compiler"):
        if importlib.util.find_spec(tool) is None:
            pytest.skip(f"{tool} is not installed (dev extra); cannot regenerate core/api")
    venv_bin = Path(sys.prefix) / "bin"
    if not (venv_bin / "ruff").exists():
        pytest.skip(f"ruff is not installed in {venv_bin}; the compiler needs it to format code")

    out = tmp_path / "api"
    env = dict(os.environ, VENV=sys.prefix)
    result = subprocess.run(
        ["bash", str(GEN_SCRIPT), str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, f"gen_proto.sh failed:\n{result.stderr}"

    expected, actual = _tree(API), _tree(out)
    missing = sorted(set(actual) - set(expected))
    extra = sorted(set(expected) - set(actual))
    assert not missing and not extra, (
        f"core/api is stale: files not committed {missing}, files no longer generated {extra}; "
        "run scripts/gen_proto.sh"
    )
    for name in expected:
        if expected[name] != actual[name]:
            diff = difflib.unified_diff(
                expected[name].decode(errors="replace").splitlines(),
                actual[name].decode(errors="replace").splitlines(),
                f"core/api/{name}",
                f"regenerated/{name}",
                lineterm="",
            )
            excerpt = "\n".join(list(diff)[:40])
            pytest.fail(f"core/api/{name} is stale; run scripts/gen_proto.sh\n{excerpt}")


FRESH_IMPORT = """
import importlib, sys
for m in sys.argv[1:]:
    importlib.import_module(m)
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("google", "dateutil"))
assert loaded == [], loaded

from core.api.containerd.services.images.v1 import Image
from core.api.containerd.types import Descriptor
from core.api.google.protobuf import Timestamp

# protobuf and dateutil on first use: the pool built from every file added so far,
# then files added after it was built (runtime.v1, imported last).
assert Image.DESCRIPTOR.fields_by_name["created_at"].number == 7
assert Descriptor.DESCRIPTOR.full_name == "containerd.types.Descriptor"
import core.api.runtime.v1 as cri
assert cri.PodSandbox.DESCRIPTOR.full_name == "runtime.v1.PodSandbox"
parsed = Timestamp.from_dict("2024-01-02T03:04:05.5Z")
assert parsed == Timestamp(seconds=1704164645, nanos=500000000)
print("ok")
"""


def test_every_generated_package_imports_in_a_fresh_interpreter() -> None:
    """... and imports neither protobuf nor dateutil, which load when first used."""
    modules = [m for m in _api_modules() if m != "core.api.runtime.v1"]
    assert "core.api.containerd.services.images.v1" in modules
    result = subprocess.run(
        [sys.executable, "-c", FRESH_IMPORT, *modules],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_descriptor_pool_knows_services_and_streaming_kinds() -> None:
    for module in _api_modules():
        importlib.import_module(module)
    from core.api.google_proto_descriptor_pool import default_google_proto_descriptor_pool as pool

    streaming = {
        ("content", "Content", "List"): (False, True),
        ("content", "Content", "Read"): (False, True),
        ("content", "Content", "Write"): (True, True),
        ("snapshots", "Snapshots", "List"): (False, True),
        ("containers", "Containers", "ListStream"): (False, True),
        ("events", "Events", "Subscribe"): (False, True),
        ("images", "Images", "Pull"): (False, True),
        ("images", "Images", "Get"): (False, False),
        ("tasks", "Tasks", "Wait"): (False, False),
    }
    for (pkg, svc, method), kind in streaming.items():
        service = pool.FindServiceByName(f"containerd.services.{pkg}.v1.{svc}")
        m = service.methods_by_name[method]
        assert (m.client_streaming, m.server_streaming) == kind, f"{svc}.{method}"

    # Field-number gaps that must survive (containerd-api.md §9).
    gaps = {
        "containerd.services.images.v1.Image": {"created_at": 7, "updated_at": 8},
        "containerd.types.Descriptor": {"annotations": 5},
        "containerd.services.tasks.v1.CreateTaskRequest": {"rootfs": 3},
        "containerd.services.diff.v1.DiffResponse": {"diff": 3},
        "containerd.services.leases.v1.CreateRequest": {"labels": 3},
        "io.containerd.cgroups.v2.Metrics": {"memory": 4},
    }
    for full_name, fields in gaps.items():
        desc = pool.FindMessageTypeByName(full_name)
        for field, number in fields.items():
            assert desc.fields_by_name[field].number == number, f"{full_name}.{field}"
    assert len(pool.FindMessageTypeByName("io.containerd.cgroups.v2.MemoryStat").fields) == 35


def test_image_round_trips_with_the_official_protobuf_runtime() -> None:
    pytest.importorskip("google.protobuf")
    from google.protobuf import message_factory

    from core.api.containerd.services.images.v1 import Image
    from core.api.containerd.types import Descriptor
    from core.api.google_proto_descriptor_pool import default_google_proto_descriptor_pool as pool

    official_cls = message_factory.GetMessageClass(
        pool.FindMessageTypeByName("containerd.services.images.v1.Image")
    )
    official = official_cls(name="docker.io/library/alpine:latest")
    official.labels["k"] = "v"
    official.target.media_type = "application/vnd.oci.image.index.v1+json"
    official.target.digest = "sha256:" + "ab" * 32
    official.target.size = 1234
    official.target.annotations["a"] = "b"
    official.created_at.seconds = 1_700_000_000
    official.created_at.nanos = 5000

    ours = Image.parse(official.SerializeToString(deterministic=True))
    assert ours.name == "docker.io/library/alpine:latest"
    assert ours.labels == {"k": "v"}
    assert ours.target is not None and ours.target.size == 1234
    assert ours.target.annotations == {"a": "b"}
    assert ours.created_at == datetime.fromtimestamp(1_700_000_000.000005, tz=UTC)
    assert ours.updated_at is None

    back = official_cls.FromString(
        bytes(
            Image(
                name="x",
                target=Descriptor(digest="sha256:" + "cd" * 32, size=1),
                updated_at=datetime(2024, 1, 2, tzinfo=UTC),
            )
        )
    )
    assert back.name == "x"
    assert back.target.digest == "sha256:" + "cd" * 32
    assert back.HasField("updated_at") and not back.HasField("created_at")
    assert back.updated_at.seconds == int(datetime(2024, 1, 2, tzinfo=UTC).timestamp())
