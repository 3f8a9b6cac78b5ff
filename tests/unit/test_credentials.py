"""Credentials from `--user`, Docker's config.json, credential helpers and the engine config."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from core import config
from core.errors import InvalidArgument, NotFound
from core.images.credentials import (
    IDENTITY_TOKEN_USER,
    docker_credentials,
    parse_user,
    request_credentials,
)


def test_user_with_and_without_password() -> None:
    asked: list[str] = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "typed"

    assert parse_user("alice:s3:cret", prompt) == ("alice", "s3:cret")
    assert asked == []
    assert parse_user("alice", prompt) == ("alice", "typed")
    assert asked == ["Password for alice: "]
    with pytest.raises(InvalidArgument, match="needs a user name"):
        parse_user(":secret", prompt)


def write(directory: Path, doc: object) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))
    return directory


def test_docker_config_auths(tmp_path: Path) -> None:
    auth = base64.b64encode(b"alice:pw").decode()
    d = write(
        tmp_path,
        {
            "auths": {
                "reg.test:5000": {"auth": auth},
                "https://index.docker.io/v1/": {"username": "hub", "password": "h"},
                "https://tok.test": {"identitytoken": "refresh-me"},
            }
        },
    )
    assert docker_credentials("reg.test:5000", d) == ("alice", "pw")
    assert docker_credentials("docker.io", d) == ("hub", "h")
    assert docker_credentials("tok.test", d) == (IDENTITY_TOKEN_USER, "refresh-me")
    assert docker_credentials("other.test", d) is None
    assert docker_credentials("x", tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("{not json", "is not valid JSON"),
        ({"auths": []}, "auths must be an object"),
        ({"auths": {"h": {"auth": "???"}}}, "is not base64 of USER:PASSWORD"),
        ({"auths": {"h": {"auth": base64.b64encode(b"nocolon").decode()}}}, "base64 of USER"),
        ({"auths": {"h": {"username": 3}}}, "username must be a string"),
    ],
)
def test_bad_docker_config_is_named(tmp_path: Path, doc: object, message: str) -> None:
    if isinstance(doc, str):
        (tmp_path / "config.json").write_text(doc)
    else:
        write(tmp_path, doc)
    with pytest.raises(InvalidArgument, match=message) as raised:
        docker_credentials("h", tmp_path)
    assert str(tmp_path / "config.json") in str(raised.value)


def helper(bin_dir: Path, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / "docker-credential-t"
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)


def test_credential_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    d = write(tmp_path / "cfg", {"credsStore": "t"})
    helper(bin_dir, 'read host; echo "{\\"Username\\":\\"u-$host\\",\\"Secret\\":\\"s\\"}"\n')
    assert docker_credentials("reg.test", d) == ("u-reg.test", "s")
    helper(bin_dir, "echo 'credentials not found in native keychain'; exit 1\n")
    assert docker_credentials("reg.test", d) is None
    helper(bin_dir, "echo 'keychain locked' >&2; exit 1\n")
    with pytest.raises(InvalidArgument, match=r"docker-credential-t failed for reg\.test"):
        docker_credentials("reg.test", d)
    helper(bin_dir, "echo nonsense\n")
    with pytest.raises(InvalidArgument, match=r"not .*Username"):
        docker_credentials("reg.test", d)
    d = write(tmp_path / "cfg2", {"credHelpers": {"reg.test": "absent"}})
    with pytest.raises(NotFound, match="docker-credential-absent is not on PATH"):
        docker_credentials("reg.test", d)


def test_request_user_is_for_the_upstream_only() -> None:
    lookup = request_credentials({"reg.test"}, "alice:pw", {"mirror.test": ("m", "mp")})
    assert lookup("reg.test") == ("alice", "pw")
    assert lookup("mirror.test") == ("m", "mp")
    assert lookup("else.test") is None
    with pytest.raises(InvalidArgument, match="NAME:SECRET"):
        request_credentials({"reg.test"}, "no-colon", {})


def test_engine_config_auths(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    auth = base64.b64encode(b"bob:pw").decode()
    path.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs."a.test".auth]\n'
        'username = "alice"\npassword = "s3cret"\n'
        f'[plugins."io.containerd.grpc.v1.cri".registry.configs."b.test".auth]\nauth = "{auth}"\n'
    )
    cfg = config.load(path)
    assert dict(cfg.registry.auths) == {"a.test": ("alice", "s3cret"), "b.test": ("bob", "pw")}
    assert "s3cret" not in repr(cfg)
    path.write_text(
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs."a.test".auth]\n'
        'user = "alice"\n'
    )
    with pytest.raises(InvalidArgument, match=r'configs\."?a\.test"?\.auth: unknown key'):
        config.load(path)
