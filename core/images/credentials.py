"""Registry credentials from where users keep them: `--user`, Docker's config.json, helpers.

This module owns turning what a user has into a (username, secret) pair for one registry host,
on the client's side of a pull or push (the engine is handed the pair per request and keeps
nothing). `parse_user` reads ctr's `--user NAME[:PASSWORD]`, asking for the password when it is
left out. `docker_credentials` reads Docker's `config.json` (`$DOCKER_CONFIG`, else
`~/.docker`): `credHelpers` for the host, then `auths` (a base64 `auth`, `username`/`password`,
or an `identitytoken`), then `credsStore`, the last two through the `docker-credential-<name>`
helper protocol (`get` with the server URL on stdin, JSON on stdout). An identity token is
returned with the username `<token>`, which the engine's auth reads as an OAuth2 refresh token.
`config_auth` checks one host's entry of the engine's own registry config (CRI's
`registry.configs."<host>".auth`), and `request_credentials` says, in the engine, which host
gets a request's credentials and which the configured ones. Every malformed source is a clear
InvalidArgument naming it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from core.errors import InvalidArgument, NotFound

# json, base64, getpass and subprocess are imported where used: `ctrdeck pull` asks here
# for a registry user on every run, mostly with no Docker config and no --user at all.

IDENTITY_TOKEN_USER = "<token>"
"""The username that marks the secret as an identity (OAuth2 refresh) token, as Docker's."""
DOCKER_HUB_KEY = "https://index.docker.io/v1/"
HELPER_TIMEOUT = 30.0


def parse_user(text: str, prompt: Callable[[str], str] | None = None) -> tuple[str, str]:
    """`NAME[:PASSWORD]` as ctr's `--user`; without a password, `prompt` (getpass) asks."""
    name, sep, secret = text.partition(":")
    if not name:
        raise InvalidArgument("--user needs a user name: NAME[:PASSWORD]")
    if not sep:
        if prompt is None:
            from getpass import getpass as prompt
        secret = prompt(f"Password for {name}: ")
    return name, secret


def wire_user(creds: tuple[str, str]) -> str:
    """The `user` field of a pull or push request: `NAME:SECRET`."""
    return f"{creds[0]}:{creds[1]}"


def split_wire_user(text: str) -> tuple[str, str] | None:
    """The pair a request's `user` field carries; empty means anonymous."""
    if not text:
        return None
    name, sep, secret = text.partition(":")
    if not sep or not name:
        raise InvalidArgument("user must be NAME:SECRET")
    return name, secret


def docker_config_dir() -> Path:
    configured = os.environ.get("DOCKER_CONFIG")
    return Path(configured) if configured else Path.home() / ".docker"


def _server_keys(host: str) -> list[str]:
    if host in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        return [DOCKER_HUB_KEY, "index.docker.io", "docker.io", "registry-1.docker.io"]
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def docker_credentials(host: str, config_dir: Path | None = None) -> tuple[str, str] | None:
    """Credentials for registry `host` from Docker's config.json, or None if it has none."""
    import json

    path = (config_dir or docker_config_dir()) / "config.json"
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise InvalidArgument(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise InvalidArgument(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise InvalidArgument(f"{path} must hold a JSON object")
    keys = _server_keys(host)
    helpers = doc.get("credHelpers", {})
    if not isinstance(helpers, dict):
        raise InvalidArgument(f"{path}: credHelpers must be an object")
    for key in keys:
        if isinstance(helpers.get(key), str) and helpers[key]:
            return run_helper(helpers[key], key)
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise InvalidArgument(f"{path}: auths must be an object")
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            found = _auth_entry(entry, f"{path}: auths.{key}")
            if found is not None:
                return found
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return run_helper(store, keys[0])
    return None


def _auth_entry(entry: Mapping[str, Any], where: str) -> tuple[str, str] | None:
    for name in ("auth", "username", "password", "identitytoken"):
        if name in entry and not isinstance(entry[name], str):
            raise InvalidArgument(f"{where}.{name} must be a string")
    if entry.get("identitytoken"):
        return IDENTITY_TOKEN_USER, entry["identitytoken"]
    if entry.get("auth"):
        import base64
        import binascii

        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise InvalidArgument(f"{where}.auth is not base64 of USER:PASSWORD") from exc
        name, sep, secret = decoded.partition(":")
        if not sep or not name:
            raise InvalidArgument(f"{where}.auth is not base64 of USER:PASSWORD")
        return name, secret
    if entry.get("username"):
        return entry["username"], entry.get("password", "")
    return None


def run_helper(name: str, server: str) -> tuple[str, str] | None:
    """Ask `docker-credential-<name>` for `server`'s credentials (None: it has none)."""
    import json
    import subprocess

    program = f"docker-credential-{name}"
    try:
        result = subprocess.run(
            [program, "get"],
            input=server,
            capture_output=True,
            text=True,
            timeout=HELPER_TIMEOUT,
        )
    except FileNotFoundError as exc:
        raise NotFound(f"credential helper {program} is not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise InvalidArgument(f"credential helper {program} did not answer in time") from exc
    if result.returncode != 0:
        said = (result.stdout or result.stderr).strip()
        if "credentials not found" in said.lower():
            return None
        raise InvalidArgument(f"credential helper {program} failed for {server}: {said[:200]}")
    try:
        answer = json.loads(result.stdout)
        username, secret = answer["Username"], answer["Secret"]
    except (ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(
            f"credential helper {program} answered something that is not "
            '{"Username": ..., "Secret": ...}'
        ) from exc
    if not isinstance(username, str) or not isinstance(secret, str):
        raise InvalidArgument(f"credential helper {program} answered non-string credentials")
    return username, secret


def config_auth(entry: Any, where: str) -> tuple[str, str]:
    """One host's `auth` table of the engine's registry config, checked."""
    if not isinstance(entry, dict):
        raise InvalidArgument(f"{where} must be a table")
    unknown = set(entry) - {"username", "password", "auth", "identitytoken"}
    if unknown:
        raise InvalidArgument(f"{where}: unknown key {sorted(unknown)[0]!r}")
    found = _auth_entry(entry, where)
    if found is None:
        raise InvalidArgument(f"{where} needs username, auth or identitytoken")
    return found


def request_credentials(
    upstream: Iterable[str], user: str, configured: Mapping[str, tuple[str, str]]
) -> Callable[[str], tuple[str, str] | None]:
    """Who to be at each host for one pull or push.

    A request's `user` is for the reference's registry (`upstream`: its host and the hosts.toml
    `server` serving it), never for a mirror; every other host gets the engine's configured
    entry, if any.
    """
    given = split_wire_user(user)
    hosts = frozenset(upstream)

    def lookup(host: str) -> tuple[str, str] | None:
        if given is not None and host in hosts:
            return given
        return configured.get(host)

    return lookup
