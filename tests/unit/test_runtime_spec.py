"""The OCI spec: containerd's defaults, image configs, and fitting to a bundle."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from core import oci
from core.errors import InvalidArgument
from core.runtime import spec as specs


def test_default_spec_has_containerds_defaults() -> None:
    s = oci.default_spec("default", "c1")
    assert s["ociVersion"] == "1.0.2-dev"
    assert [m["destination"] for m in s["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys", "/run",
    ]  # fmt: skip
    assert [n["type"] for n in s["linux"]["namespaces"]] == [
        "pid", "ipc", "uts", "mount", "network",
    ]  # fmt: skip
    assert s["linux"]["cgroupsPath"] == "/default/c1"
    assert len(s["process"]["capabilities"]["bounding"]) == 14
    assert s["linux"]["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert "/proc/kcore" in s["linux"]["maskedPaths"]
    assert "/proc/sys" in s["linux"]["readonlyPaths"]
    assert s["process"]["noNewPrivileges"] is True


def test_image_config_sets_args_env_cwd_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("root:x:0:0::/:/bin/sh\nweb:x:33:44::/:/bin/sh\n")
    (tmp_path / "etc" / "group").write_text("root:x:0:\nstaff:x:50:\n")
    config = {
        "Entrypoint": ["/bin/server"],
        "Cmd": ["--port", "80"],
        "Env": ["LANG=C"],
        "WorkingDir": "/srv",
        "User": "web:staff",
    }
    s = oci.from_image_config("ns", "c", config, tmp_path)
    p = s["process"]
    assert p["args"] == ["/bin/server", "--port", "80"]
    assert p["env"] == [oci.DEFAULT_PATH, "LANG=C"]
    assert p["cwd"] == "/srv"
    assert p["user"] == {"uid": 33, "gid": 50, "additionalGids": [50]}
    override = oci.from_image_config("ns", "c", config, tmp_path, args=["--help"])
    assert override["process"]["args"] == ["/bin/server", "--help"]


def test_numeric_user_needs_no_passwd() -> None:
    assert oci.resolve_user("1000:1001", None) == {
        "uid": 1000, "gid": 1001, "additionalGids": [1001],
    }  # fmt: skip


def test_unknown_user_and_missing_command_are_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="nobody"):
        oci.resolve_user("nobody", tmp_path)
    with pytest.raises(InvalidArgument, match="no command"):
        oci.from_image_config("ns", "c", {"Env": []})


def test_fit_points_root_at_bundle_and_clamps_rlimits(tmp_path: Path) -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    s = oci.default_spec("ns", "c")
    s["process"]["args"] = ["sh"]
    s["linux"]["cgroupsPath"] = ""
    s["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1 << 40, "soft": 1 << 40}]
    fitted = specs.fit(s, "ns", "c", tmp_path / "rootfs")
    assert fitted["root"]["path"] == str(tmp_path / "rootfs")
    assert fitted["linux"]["cgroupsPath"] == "/ns/c"
    if hard != resource.RLIM_INFINITY:
        assert fitted["process"]["rlimits"][0]["hard"] == hard
        assert fitted["process"]["rlimits"][0]["soft"] == hard
    assert s["process"]["rlimits"][0]["hard"] == 1 << 40


@pytest.mark.parametrize(
    ("process", "word"),
    [
        (None, "process"),
        ({"args": []}, "args"),
        ({"args": ["sh"], "cwd": "relative"}, "cwd"),
        ({"args": ["sh"], "env": "PATH=/bin"}, "env"),
    ],
)
def test_invalid_process_is_rejected(process: object, word: str) -> None:
    with pytest.raises(InvalidArgument, match=word):
        specs.validate_process(process, "spec")


def test_parse_json_rejects_non_objects() -> None:
    with pytest.raises(InvalidArgument, match="JSON"):
        specs.parse_json(b"{nope", "spec")
    with pytest.raises(InvalidArgument, match="object"):
        specs.parse_json(b"[1]", "spec")
