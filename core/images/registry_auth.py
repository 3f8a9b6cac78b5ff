"""Registry authentication: challenges, Basic credentials and Bearer tokens per scope.

This module owns how a request to a registry proves who it is. A 401's `WWW-Authenticate`
challenge is remembered per host; Basic sends the caller's credentials, Bearer fetches a token
for the request's scopes from the challenge's realm (anonymously, or with the credentials as
Basic) and caches it per host and scope until shortly before it expires. With a refresh token
(an identity token from `docker login`, or one a token server handed out) the token is fetched
with the OAuth2 POST form (`grant_type=refresh_token`) instead, falling back to GET when a
server has no POST endpoint and a password is at hand. A token the registry rejects mid-pull
is forgotten and fetched once more; a refresh the token server refuses is a clear
Unauthenticated. Credentials come from the caller as a function of the host; nothing here
keeps them beyond the client's life, and no message ever quotes a secret.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from core.errors import FailedPrecondition, PermissionDenied, Unauthenticated, Unavailable
from core.images.credentials import IDENTITY_TOKEN_USER
from core.images.registry_errors import registry_message, transport_reason

CLIENT_ID = "ctrdeck"

Credentials = Callable[[str], tuple[str, str] | None]
"""Maps a registry host to (username, secret), or None for anonymous access."""


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*,?')


def parse_challenges(header: str) -> list[Challenge]:
    """Parse a WWW-Authenticate value into its challenges (scheme plus key=value params)."""
    challenges: list[Challenge] = []
    rest = header.strip()
    while rest:
        scheme_match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if scheme_match is None:
            break
        challenge = Challenge(scheme=scheme_match.group(1).lower())
        rest = rest[scheme_match.end() :]
        while (m := _CHALLENGE_PARAM.match(rest)) is not None:
            value = m.group(2) if m.group(2) is not None else m.group(3)
            challenge.params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[m.end() :]
        challenges.append(challenge)
        rest = rest.lstrip(", ")
    return challenges


def scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


class Authorizer:
    """Per-host challenges and per-scope tokens, shared by all requests of one client."""

    def __init__(self, credentials: Credentials | None) -> None:
        self._credentials = credentials
        self._challenges: dict[str, Challenge] = {}
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._refresh: dict[str, str] = {}

    def _creds(self, host: str) -> tuple[str, str] | None:
        return self._credentials(host) if self._credentials else None

    def _basic(self, host: str) -> str | None:
        creds = self._creds(host)
        if creds is None or creds[0] == IDENTITY_TOKEN_USER:
            return None
        raw = f"{creds[0]}:{creds[1]}".encode()
        return "Basic " + base64.b64encode(raw).decode()

    async def header(self, client: httpx.AsyncClient, host: str, scopes: list[str]) -> str | None:
        challenge = self._challenges.get(host)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic(host)
        return "Bearer " + await self._token(client, host, challenge, scopes)

    def forget(self, host: str, scopes: list[str]) -> None:
        self._tokens.pop((host, " ".join(sorted(set(scopes)))), None)

    def learn(
        self, host: str, response: httpx.Response, scopes: list[str], detail: str
    ) -> list[str]:
        """Record the challenge of a 401; return the scopes to ask for (ours plus its own).

        `detail` is the registry's own message with the 401, quoted in any refusal.
        """
        header = ", ".join(response.headers.get_list("www-authenticate"))
        challenges = parse_challenges(header)
        chosen = next((c for c in challenges if c.scheme == "bearer"), None)
        if chosen is None:
            chosen = next((c for c in challenges if c.scheme == "basic"), None)
        if chosen is None:
            raise Unauthenticated(
                f"unauthorized: registry {host} answered 401 without a Bearer or Basic "
                f"challenge (WWW-Authenticate: {header or 'missing'}; {detail})"
            )
        if chosen.scheme == "basic" and self._basic(host) is None:
            if self._creds(host) is not None:
                raise Unauthenticated(
                    f"unauthorized: registry {host} wants Basic authentication, which an "
                    f"identity token cannot give; use a user name and password ({detail})"
                )
            raise Unauthenticated(
                f"unauthorized: registry {host} requires credentials (Basic authentication; "
                f"{detail})"
            )
        if chosen.scheme == "bearer" and not chosen.params.get("realm"):
            raise Unauthenticated(
                f"unauthorized: registry {host} sent a Bearer challenge without a realm ({detail})"
            )
        self._challenges[host] = chosen
        extra = chosen.params.get("scope", "")
        return sorted(set(scopes) | {s for s in extra.split(" ") if s})

    async def _token(
        self, client: httpx.AsyncClient, host: str, challenge: Challenge, scopes: list[str]
    ) -> str:
        key = (host, " ".join(sorted(set(scopes))))
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._tokens.get(key)
            if cached is not None and cached.expires_at > time.monotonic():
                return cached.value
            token = await self._fetch_token(client, host, challenge, sorted(set(scopes)))
            self._tokens[key] = token
            return token.value

    async def _fetch_token(
        self, client: httpx.AsyncClient, host: str, challenge: Challenge, scopes: list[str]
    ) -> _Token:
        realm = challenge.params["realm"]
        service = challenge.params.get("service", "")
        creds = self._creds(host)
        refresh = self._refresh.get(host)
        if refresh is None and creds is not None and creds[0] == IDENTITY_TOKEN_USER:
            refresh = creds[1]
        if refresh is not None:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "service": service,
                "scope": " ".join(scopes),
                "client_id": CLIENT_ID,
            }
            response = await self._call(client, "POST", realm, host, data=form)
            # Registries without the POST endpoint answer 404 or 405 (GCR, older Artifactory).
            if response.status_code not in (404, 405) or self._basic(host) is None:
                if response.status_code in (400, 401, 403):
                    self._refresh.pop(host, None)
                    raise Unauthenticated(
                        f"unauthorized: token server {realm} refused to refresh the token for "
                        f"registry {host} ({registry_message(response, response.content)}); "
                        "log in again"
                    )
                return self._read_token(response, realm, host)
        params: list[tuple[str, str]] = [("service", service)] if service else []
        params += [("scope", s) for s in scopes]
        headers = {}
        basic = self._basic(host)
        if creds is not None and basic is not None:
            params.append(("account", creds[0]))
            headers["Authorization"] = basic
        response = await self._call(client, "GET", realm, host, params=params, headers=headers)
        if response.status_code in (401, 403):
            who = f"as {creds[0]!r}" if basic and creds else "anonymously"
            refused = Unauthenticated if response.status_code == 401 else PermissionDenied
            raise refused(
                f"unauthorized: token server {realm} refused {who} for {' '.join(scopes)} "
                f"({registry_message(response, response.content)})"
            )
        return self._read_token(response, realm, host)

    async def _call(
        self, client: httpx.AsyncClient, method: str, realm: str, host: str, **kwargs: Any
    ) -> httpx.Response:
        try:
            return await client.request(method, realm, **kwargs)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach token server {realm} for registry {host}: {transport_reason(exc)}"
            ) from exc

    def _read_token(self, response: httpx.Response, realm: str, host: str) -> _Token:
        if response.status_code != 200:
            raise Unavailable(
                f"token server {realm} for registry {host} answered HTTP "
                f"{response.status_code} {registry_message(response, response.content)}"
            )
        try:
            body = response.json()
            value = body.get("token") or body.get("access_token")
            expires_in = int(body.get("expires_in") or 60)
            refresh = body.get("refresh_token")
        except (ValueError, AttributeError, TypeError) as exc:
            raise FailedPrecondition(f"token server {realm} sent an unreadable answer") from exc
        if not value:
            raise FailedPrecondition(f"token server {realm} sent no token")
        if isinstance(refresh, str) and refresh:
            self._refresh[host] = refresh
        # Renew a little early so a token never expires between use and arrival.
        return _Token(str(value), time.monotonic() + max(expires_in - 10, 1))
