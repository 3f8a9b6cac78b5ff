"""The OCI distribution client: resolve, fetch and push against registries.

This module owns the HTTP conversation with registries (the OCI distribution spec, as Docker
Hub, docker-registry and containerd's `remotes/docker` speak it): resolving a tag or digest to
the root descriptor, fetching manifests and blobs with every byte checked against the digest,
resuming a blob with `Range`, following redirects, retrying connection errors, 5xx and 429 with
a bounded exponential backoff, Bearer token and Basic authentication, a limit on concurrent
downloads and uploads, and pushing blobs (monolithic or chunked, with optional cross-repository
mount) and manifests. Where a host's requests go and how they are trusted comes from `hosts`.
It never writes to disk: blob bytes go to the caller (the pull pipeline's content ingest), which
commits only once the stream has ended without an error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import json
import os
import random
import re
import ssl
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from core import __version__
from core.descriptor import Descriptor, validate_digest
from core.errors import (
    CtrdeckError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    NotImplementedYet,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
)
from core.images import mediatypes
from core.images.hosts import PULL, PUSH, RESOLVE, Endpoint, Hosts, is_loopback
from core.images.reference import Reference, parse

CHUNK_SIZE = 1 << 20
MAX_MANIFEST_SIZE = 4 << 20
"""containerd refuses manifests and indexes above 4 MiB; so do we."""

Credentials = Callable[[str], tuple[str, str] | None]
"""Maps a registry host to (username, secret), or None for anonymous access."""
Progress = Callable[[int], None]
"""Called with the number of bytes of the blob now held (including a resumed prefix)."""
Sink = Callable[[int, bytes], Awaitable[None]]
"""Receives each chunk with its offset in the blob; offset 0 after data means start over."""
BlobSource = bytes | Callable[[], AsyncIterable[bytes]]
"""What `push_blob` uploads: the bytes, or a factory that opens a fresh stream of them."""

T = TypeVar("T")
_MANIFEST_CACHE = 16


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for connection errors, 5xx and 429."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, failure: int) -> float:
        # Jitter spreads out concurrent layer downloads that failed together.
        return min(self.max_delay, self.base_delay * 2 ** (failure - 1)) * random.uniform(0.5, 1)


@dataclass
class _Token:
    value: str
    expires_at: float


@dataclass
class _Challenge:
    scheme: str
    params: dict[str, str] = field(default_factory=dict)


_CHALLENGE_PARAM = re.compile(r'\s*([A-Za-z0-9_.-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))\s*,?')


def parse_challenges(header: str) -> list[_Challenge]:
    """Parse a WWW-Authenticate value into its challenges (scheme plus key=value params)."""
    challenges: list[_Challenge] = []
    rest = header.strip()
    while rest:
        scheme_match = re.match(r"([A-Za-z][A-Za-z0-9_-]*)\s*", rest)
        if scheme_match is None:
            break
        challenge = _Challenge(scheme=scheme_match.group(1).lower())
        rest = rest[scheme_match.end() :]
        while (m := _CHALLENGE_PARAM.match(rest)) is not None:
            value = m.group(2) if m.group(2) is not None else m.group(3)
            challenge.params[m.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
            rest = rest[m.end() :]
        challenges.append(challenge)
        rest = rest.lstrip(", ")
    return challenges


def _scope(repo: str, actions: str) -> str:
    return f"repository:{repo}:{actions}"


def _registry_error(response: httpx.Response, body: bytes) -> str:
    """The first message of a distribution-spec error body, else the HTTP reason."""
    try:
        errors = json.loads(body).get("errors") or []
        first = errors[0]
        return str(first.get("message") or first.get("code") or response.reason_phrase)
    except (ValueError, AttributeError, IndexError, TypeError):
        return response.reason_phrase or f"HTTP {response.status_code}"


def _transport_reason(exc: BaseException) -> str:
    """The most specific cause of a transport error ("Connection refused", not "All ...")."""
    cur: BaseException | None = exc
    seen: set[int] = set()
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, OSError) and cur.errno:
            return os.strerror(cur.errno)
        cur = cur.__cause__ or cur.__context__
    return str(exc) or type(exc).__name__


def _tls_failure(exc: BaseException) -> ssl.SSLError | None:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


class _Auth:
    """Per-host challenges and per-scope tokens, shared by all requests of one client."""

    def __init__(self, credentials: Credentials | None) -> None:
        self._credentials = credentials
        self._challenges: dict[str, _Challenge] = {}
        self._tokens: dict[tuple[str, str], _Token] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}

    def _basic(self, host: str) -> str | None:
        creds = self._credentials(host) if self._credentials else None
        if creds is None:
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
        self, client: httpx.AsyncClient, host: str, challenge: _Challenge, scopes: list[str]
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
        self, client: httpx.AsyncClient, host: str, challenge: _Challenge, scopes: list[str]
    ) -> _Token:
        realm = challenge.params["realm"]
        params: list[tuple[str, str]] = []
        if service := challenge.params.get("service"):
            params.append(("service", service))
        params += [("scope", s) for s in scopes]
        headers = {}
        creds = self._credentials(host) if self._credentials else None
        if creds is not None:
            params.append(("account", creds[0]))
            headers["Authorization"] = self._basic(host) or ""
        try:
            response = await client.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise Unavailable(
                f"cannot reach token server {realm} for registry {host}: {_transport_reason(exc)}"
            ) from exc
        if response.status_code in (401, 403):
            who = f"as {creds[0]!r}" if creds else "anonymously"
            refused = Unauthenticated if response.status_code == 401 else PermissionDenied
            raise refused(
                f"unauthorized: token server {realm} refused {who} for {' '.join(scopes)} "
                f"({_registry_error(response, response.content)})"
            )
        if response.status_code != 200:
            raise Unavailable(
                f"token server {realm} for registry {host} answered HTTP {response.status_code}"
            )
        try:
            body = response.json()
            value = body.get("token") or body.get("access_token")
            expires_in = int(body.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError) as exc:
            raise FailedPrecondition(f"token server {realm} sent an unreadable answer") from exc
        if not value:
            raise FailedPrecondition(f"token server {realm} sent no token")
        # Renew a little early so a token never expires between use and arrival.
        return _Token(str(value), time.monotonic() + max(expires_in - 10, 1))


class RegistryClient:
    """An async OCI distribution client; use as `async with RegistryClient(...) as client`.

    `hosts` says which endpoints serve each registry host (mirrors first); `credentials` maps a
    host to a username and secret for Basic or token authentication. Blob downloads share
    `max_concurrent_downloads` slots, uploads `max_concurrent_uploads`.
    """

    def __init__(
        self,
        hosts: Hosts | None = None,
        *,
        credentials: Credentials | None = None,
        max_concurrent_downloads: int = 3,
        max_concurrent_uploads: int = 5,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.hosts = hosts or Hosts()
        self.retry = retry or RetryPolicy()
        self._auth = _Auth(credentials)
        self._downloads = asyncio.Semaphore(max_concurrent_downloads)
        self._uploads = asyncio.Semaphore(max_concurrent_uploads)
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 15.0))
        self._clients: dict[tuple[object, ...], httpx.AsyncClient] = {}
        self._manifests: dict[str, bytes] = {}

    async def __aenter__(self) -> RegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()

    # -- resolve and fetch ------------------------------------------------------------------

    async def resolve(self, ref: Reference | str) -> Descriptor:
        """The root descriptor (index, manifest list or manifest) a tag or digest names."""
        ref = _as_ref(ref)
        return await self._each_endpoint(ref, RESOLVE, lambda ep: self._resolve_at(ep, ref))

    async def fetch_manifest(self, ref: Reference | str, desc: Descriptor) -> bytes:
        """The bytes of a manifest or index, checked against `desc`'s digest and size."""
        ref = _as_ref(ref)
        cached = self._manifests.pop(desc.digest, None)
        if cached is not None:
            return cached
        if desc.size > MAX_MANIFEST_SIZE:
            raise FailedPrecondition(
                f"manifest {desc.digest} of {ref} is {desc.size} bytes, over the "
                f"{MAX_MANIFEST_SIZE} byte limit"
            )

        async def attempt(ep: Endpoint) -> bytes:
            _, body = await self._get_manifest(ep, ref, desc.digest, desc.media_type)
            _verify(body, desc.digest, ep.host, f"manifest of {ref}")
            if desc.size and len(body) != desc.size:
                raise FailedPrecondition(
                    f"size mismatch for manifest {desc.digest} of {ref} from {ep.host}: "
                    f"expected {desc.size} got {len(body)}"
                )
            return body

        return await self._each_endpoint(ref, PULL, attempt)

    async def fetch_blob(
        self,
        ref: Reference | str,
        desc: Descriptor,
        sink: Sink,
        *,
        offset: int = 0,
        prefix_hash: hashlib._Hash | None = None,
        progress: Progress | None = None,
    ) -> None:
        """Stream a blob into `sink`, resuming after `offset` bytes the caller already holds.

        See `blob_chunks`; this returns only once every byte has been delivered and the digest
        and size have matched, so the caller may commit when it returns.
        """
        async with contextlib.aclosing(
            self.blob_chunks(ref, desc, offset=offset, prefix_hash=prefix_hash)
        ) as chunks:
            async for at, chunk in chunks:
                await sink(at, chunk)
                if progress is not None:
                    progress(at + len(chunk))

    async def blob_chunks(
        self,
        ref: Reference | str,
        desc: Descriptor,
        *,
        offset: int = 0,
        prefix_hash: hashlib._Hash | None = None,
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Yield `(offset, chunk)` pairs of a blob, holding one download slot meanwhile.

        To resume, pass the number of bytes already held and `prefix_hash`, a sha256 object over
        exactly those bytes; the request asks for `Range: bytes=<offset>-`. A server that answers
        with the whole blob instead makes the next chunk arrive at offset 0: the caller must then
        discard what it held (the content store's `Writer.write(chunk, 0)` does). Dropped
        connections resume the same way, within the retry budget. After the last chunk the
        digest and size are checked, and a mismatch raises FailedPrecondition instead of ending
        the iteration, so a caller that commits only after the loop never commits bad data.
        Close the iterator (`contextlib.aclosing`) if you stop early.
        """
        ref = _as_ref(ref)
        validate_digest(desc.digest)
        if offset < 0 or (desc.size and offset > desc.size):
            raise InvalidArgument(f"resume offset {offset} outside blob of {desc.size} bytes")
        if offset and prefix_hash is None:
            raise InvalidArgument("resuming a blob needs prefix_hash over the bytes already held")
        hasher = prefix_hash.copy() if prefix_hash is not None else hashlib.sha256()
        position = offset
        async with self._downloads:
            endpoints = self._endpoints(ref, PULL)
            for index, ep in enumerate(endpoints):
                try:
                    failures = 0
                    while True:
                        try:
                            async for at, chunk, restart in self._stream_blob(
                                ep, ref, desc, position
                            ):
                                if restart:
                                    hasher, position = hashlib.sha256(), 0
                                if desc.size and at + len(chunk) > desc.size:
                                    raise FailedPrecondition(
                                        f"blob {desc.digest} of {ref} from {ep.host} is larger "
                                        f"than its descriptor's {desc.size} bytes"
                                    )
                                hasher.update(chunk)
                                position = at + len(chunk)
                                failures = 0
                                yield at, chunk
                            break
                        except _Interrupted as exc:
                            failures += 1
                            if failures >= self.retry.attempts:
                                raise Unavailable(
                                    f"download of {desc.digest} from registry {ep.host} failed "
                                    f"after {failures} attempts at byte {position}: {exc}"
                                ) from exc
                            await asyncio.sleep(self.retry.delay(failures))
                    break
                except (NotFound, Unavailable):
                    # Content-addressed bytes are the same everywhere, so the next endpoint
                    # can carry on from where a failing mirror stopped.
                    if index == len(endpoints) - 1:
                        raise
            actual = "sha256:" + hasher.hexdigest()
            if desc.size and position != desc.size:
                raise FailedPrecondition(
                    f"size mismatch for blob {desc.digest} of {ref}: expected {desc.size} "
                    f"got {position}"
                )
            if actual != desc.digest:
                raise FailedPrecondition(
                    f"digest mismatch for blob of {ref}: expected {desc.digest} got {actual}"
                )

    # -- push -------------------------------------------------------------------------------

    async def blob_exists(self, ref: Reference | str, desc: Descriptor) -> bool:
        ref = _as_ref(ref)
        ep = self._endpoints(ref, PUSH)[0]
        response, _ = await self._request(
            ep, ref, "HEAD", f"blobs/{desc.digest}", actions="pull,push"
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._status_error(ep, ref, response, b"", f"blob {desc.digest}")

    async def push_blob(
        self,
        ref: Reference | str,
        desc: Descriptor,
        source: BlobSource,
        *,
        mount_from: str = "",
        chunk_size: int = 0,
        progress: Progress | None = None,
    ) -> bool:
        """Upload a blob unless the repository has it; return whether bytes were sent.

        `mount_from` names another repository path on the same registry to mount the blob from
        (registries that allow it skip the upload). With `chunk_size`, blobs larger than it go up
        in PATCH pieces of that size; otherwise in one streamed PUT. A dropped connection starts
        a fresh upload session, within the retry budget.
        """
        ref = _as_ref(ref)
        validate_digest(desc.digest)
        async with self._uploads:
            if await self.blob_exists(ref, desc):
                return False
            ep = self._endpoints(ref, PUSH)[0]
            failures = 0
            while True:
                try:
                    return await self._upload(
                        ep, ref, desc, source, mount_from, chunk_size, progress
                    )
                except _Interrupted as exc:
                    failures += 1
                    if failures >= self.retry.attempts:
                        raise Unavailable(
                            f"upload of {desc.digest} to registry {ep.host} failed after "
                            f"{failures} attempts: {exc}"
                        ) from exc
                    await asyncio.sleep(self.retry.delay(failures))

    async def push_manifest(
        self, ref: Reference | str, desc: Descriptor, body: bytes, *, tag: str = ""
    ) -> None:
        """PUT a manifest or index under `tag` (default: the reference's tag, else its digest)."""
        ref = _as_ref(ref)
        _verify(body, desc.digest, "local content", "manifest to push")
        target = tag or ref.tag or desc.digest
        ep = self._endpoints(ref, PUSH)[0]
        response, content = await self._request(
            ep,
            ref,
            "PUT",
            f"manifests/{target}",
            actions="pull,push",
            headers={"Content-Type": desc.media_type},
            content=lambda: body,
        )
        if response.status_code not in (200, 201, 202):
            raise self._status_error(ep, ref, response, content, f"manifest {target}")
        returned = response.headers.get("docker-content-digest", "")
        if returned and returned != desc.digest:
            raise FailedPrecondition(
                f"digest mismatch: registry {ep.host} stored manifest {target} of {ref} as "
                f"{returned}, expected {desc.digest}"
            )

    # -- internals --------------------------------------------------------------------------

    def _endpoints(self, ref: Reference, capability: str) -> list[Endpoint]:
        endpoints = [ep for ep in self.hosts.endpoints(ref.domain) if ep.can(capability)]
        if not endpoints:
            raise FailedPrecondition(f"no endpoint of {ref.domain} is allowed to {capability}")
        return endpoints

    async def _each_endpoint(
        self, ref: Reference, capability: str, attempt: Callable[[Endpoint], Awaitable[T]]
    ) -> T:
        endpoints = self._endpoints(ref, capability)
        for ep in endpoints[:-1]:
            # A mirror that lacks the content or is down hands over to the next endpoint.
            with contextlib.suppress(NotFound, Unavailable):
                return await attempt(ep)
        return await attempt(endpoints[-1])

    async def _client(self, ep: Endpoint) -> httpx.AsyncClient:
        key = ep.tls_key()
        client = self._clients.get(key)
        if client is not None:
            return client
        # Plain-HTTP registries may still redirect to HTTPS storage, so they get the
        # default checks too, from one context built once per engine. An HTTPS endpoint
        # gets its own (system roots plus its CAs and client certificates). Either is built
        # in a worker thread: loading the roots takes a tenth of a second or more.
        build = ep.ssl_context if ep.scheme == "https" else _default_tls
        verify = await asyncio.to_thread(build)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                verify=verify,
                transport=_HTTPFallback(verify) if ep.http_fallback else None,
                follow_redirects=True,
                timeout=self._timeout,
                headers={"User-Agent": f"ctrdeck/{__version__}"},
            )
            self._clients[key] = client
        return client

    def _url(self, ep: Endpoint, ref: Reference, tail: str) -> httpx.URL:
        url = httpx.URL(f"{ep.base_url}/{quote(ref.path)}/{tail}")
        if ep.host != ref.registry_host:
            # Mirrors learn which upstream namespace is meant, as containerd tells them.
            url = url.copy_merge_params({"ns": ref.domain})
        return url

    async def _send(
        self,
        ep: Endpoint,
        ref: Reference,
        method: str,
        url: httpx.URL | str,
        *,
        actions: str,
        headers: dict[str, str] | None = None,
        content: Callable[[], bytes | AsyncIterable[bytes]] | None = None,
        retry: bool = True,
        extra_scopes: Iterable[str] = (),
    ) -> httpx.Response:
        """One request with auth, retries and error mapping; the response is left open.

        Connection errors, 5xx and 429 are retried (when `retry`) with backoff; a 401 is
        answered once by (re)authenticating. Other statuses are the caller's to interpret.
        """
        client = await self._client(ep)
        scopes = sorted({_scope(ref.path, actions), *extra_scopes})
        failures = 0
        reauthenticated = False
        while True:
            merged = dict(ep.header)
            merged.update(headers or {})
            auth = await self._auth.header(client, ep.host, scopes)
            if auth:
                merged["Authorization"] = auth
            request = client.build_request(
                method, url, headers=merged, content=content() if content else None
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.TransportError as exc:
                self._raise_if_fatal(ep, exc)
                failures += 1
                if not retry:
                    raise _Interrupted(_transport_reason(exc)) from exc
                if failures >= self.retry.attempts:
                    raise Unavailable(
                        f"cannot reach registry {ep.host} ({ep.base_url}) after {failures} "
                        f"attempts: {_transport_reason(exc)}"
                    ) from exc
                await asyncio.sleep(self.retry.delay(failures))
                continue
            status = response.status_code
            if status == 401 and not reauthenticated:
                try:
                    body = await _read_limited(response, 64 << 10, "registry answer")
                except (httpx.TransportError, FailedPrecondition):
                    body = b""
                finally:
                    await response.aclose()
                if auth:
                    self._auth.forget(ep.host, scopes)
                scopes = self._auth.learn(
                    ep.host, response, scopes, _registry_error(response, body)
                )
                reauthenticated = True
                continue
            if (status >= 500 or status == 429) and retry:
                failures += 1
                if failures < self.retry.attempts:
                    await response.aclose()
                    await asyncio.sleep(self._retry_after(response, failures))
                    continue
            return response

    def _retry_after(self, response: httpx.Response, failures: int) -> float:
        header = response.headers.get("retry-after", "")
        if header.isdigit():
            return min(float(header), self.retry.max_delay)
        return self.retry.delay(failures)

    def _raise_if_fatal(self, ep: Endpoint, exc: httpx.TransportError) -> None:
        tls = _tls_failure(exc)
        if tls is None:
            return
        if isinstance(tls, ssl.SSLCertVerificationError):
            raise FailedPrecondition(
                f"TLS certificate of registry {ep.host} not trusted: {tls.verify_message or tls}; "
                "add its CA with `ca` in hosts.toml (or `skip_verify = true`)"
            ) from exc
        raise FailedPrecondition(
            f"TLS handshake with registry {ep.host} failed: {tls}; if it serves plain HTTP, "
            "configure an http:// URL in hosts.toml or ask for plain HTTP"
        ) from exc

    async def _request(
        self,
        ep: Endpoint,
        ref: Reference,
        method: str,
        tail: str,
        *,
        actions: str = "pull",
        headers: dict[str, str] | None = None,
        content: Callable[[], bytes | AsyncIterable[bytes]] | None = None,
        limit: int = MAX_MANIFEST_SIZE,
    ) -> tuple[httpx.Response, bytes]:
        """A request whose (small) body is read whole, up to `limit` bytes."""
        response = await self._send(
            ep,
            ref,
            method,
            self._url(ep, ref, tail),
            actions=actions,
            headers=headers,
            content=content,
        )
        try:
            body = await _read_limited(response, limit, f"{method} {tail} from {ep.host}")
        except httpx.TransportError as exc:
            raise Unavailable(
                f"connection to registry {ep.host} lost reading {tail}: {_transport_reason(exc)}"
            ) from exc
        finally:
            await response.aclose()
        return response, body

    def _status_error(
        self, ep: Endpoint, ref: Reference, response: httpx.Response, body: bytes, what: str
    ) -> CtrdeckError:
        status = response.status_code
        detail = _registry_error(response, body)
        if status == 404:
            return NotFound(f"{what} of {ref} on {ep.host}: {detail}")
        if status == 401:
            return Unauthenticated(
                f"unauthorized: registry {ep.host} did not accept our credentials for "
                f"{what} of {ref} ({detail})"
            )
        if status == 403:
            return PermissionDenied(
                f"denied: registry {ep.host} refused access to {what} of {ref} ({detail})"
            )
        if status >= 500 or status == 429:
            return Unavailable(
                f"registry {ep.host} failed on {what} of {ref}: HTTP {status} {detail}"
            )
        return FailedPrecondition(
            f"registry {ep.host} refused {what} of {ref}: HTTP {status} {detail}"
        )

    async def _resolve_at(self, ep: Endpoint, ref: Reference) -> Descriptor:
        accept = ", ".join(mediatypes.MANIFEST_ACCEPT)
        response, _ = await self._request(
            ep, ref, "HEAD", f"manifests/{ref.object}", headers={"Accept": accept}
        )
        if response.status_code == 404:
            raise self._status_error(ep, ref, response, b"", "manifest")
        if response.status_code == 200:
            media_type = mediatypes.base(response.headers.get("content-type", ""))
            digest = response.headers.get("docker-content-digest", "") or ref.digest
            size = response.headers.get("content-length", "")
            if (
                (mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type))
                and digest
                and size.isdigit()
                and int(size) > 0
                and (not ref.digest or digest == ref.digest)
            ):
                return Descriptor(
                    media_type=media_type, digest=validate_digest(digest), size=int(size)
                )
        # Some registries answer HEAD poorly (no digest, no length, 405): ask with GET.
        response, body = await self._get_manifest(ep, ref, ref.object, "")
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed = response.headers.get("docker-content-digest", "")
        for expected in (ref.digest, claimed):
            if expected and expected != actual:
                raise FailedPrecondition(
                    f"digest mismatch for manifest of {ref} from {ep.host}: expected {expected} "
                    f"got {actual}"
                )
        media_type = _manifest_media_type(response, body, ref, ep)
        # Kept so the fetch that usually follows a resolve needs no second request.
        while len(self._manifests) >= _MANIFEST_CACHE:
            self._manifests.pop(next(iter(self._manifests)))
        self._manifests[actual] = body
        return Descriptor(media_type=media_type, digest=actual, size=len(body))

    async def _get_manifest(
        self, ep: Endpoint, ref: Reference, obj: str, media_type: str
    ) -> tuple[httpx.Response, bytes]:
        accept = [media_type] if media_type else []
        accept += [m for m in mediatypes.MANIFEST_ACCEPT if m != media_type]
        response, body = await self._request(
            ep, ref, "GET", f"manifests/{obj}", headers={"Accept": ", ".join(accept)}
        )
        if response.status_code != 200:
            raise self._status_error(ep, ref, response, body, f"manifest {obj}")
        return response, body

    async def _stream_blob(
        self, ep: Endpoint, ref: Reference, desc: Descriptor, start: int
    ) -> AsyncIterator[tuple[int, bytes, bool]]:
        """Chunks of one GET from `start`; `True` marks a restart from byte 0."""
        kind = "manifests" if _is_manifest_like(desc.media_type) else "blobs"
        headers = {"Accept-Encoding": "identity"}
        if start:
            headers["Range"] = f"bytes={start}-"
        if kind == "manifests":
            headers["Accept"] = ", ".join([desc.media_type, *mediatypes.MANIFEST_ACCEPT])
        if desc.size and start == desc.size:
            return
        response = await self._send(
            ep,
            ref,
            "GET",
            self._url(ep, ref, f"{kind}/{desc.digest}"),
            actions="pull",
            headers=headers,
        )
        try:
            status = response.status_code
            restarted = False
            if status == 206:
                first = _content_range_start(response.headers.get("content-range", ""))
                if first != start:
                    raise FailedPrecondition(
                        f"registry {ep.host} answered range bytes={start}- of {desc.digest} "
                        f"with {response.headers.get('content-range', 'no Content-Range')}"
                    )
            elif status == 200:
                restarted = start > 0
                start = 0
            elif status == 416 and start:
                raise _Interrupted(f"registry {ep.host} refused range bytes={start}-")
            else:
                body = await _read_limited(response, 64 << 10, "error body")
                raise self._status_error(ep, ref, response, body, f"blob {desc.digest}")
            position = start
            try:
                async for chunk in response.aiter_raw(CHUNK_SIZE):
                    yield position, chunk, restarted
                    restarted = False
                    position += len(chunk)
            except httpx.TransportError as exc:
                raise _Interrupted(_transport_reason(exc)) from exc
            if desc.size and position < desc.size:
                raise _Interrupted(f"connection closed at byte {position} of {desc.size}")
        finally:
            await response.aclose()

    async def _upload(
        self,
        ep: Endpoint,
        ref: Reference,
        desc: Descriptor,
        source: BlobSource,
        mount_from: str,
        chunk_size: int,
        progress: Progress | None,
    ) -> bool:
        tail = "blobs/uploads/"
        extra: list[str] = []
        if mount_from and mount_from != ref.path:
            tail += f"?mount={desc.digest}&from={quote(mount_from)}"
            extra.append(_scope(mount_from, "pull"))
        response = await self._send(
            ep,
            ref,
            "POST",
            self._url(ep, ref, tail),
            actions="pull,push",
            retry=False,
            headers={"Content-Length": "0"},
            extra_scopes=extra,
        )
        body = await _close_after_read(response)
        if response.status_code == 201:
            return False
        if response.status_code != 202:
            raise self._status_error(ep, ref, response, body, f"upload of blob {desc.digest}")
        location = self._location(ep, response)
        if chunk_size and desc.size > chunk_size:
            location = await self._patch_chunks(
                ep, ref, desc, source, location, chunk_size, progress
            )
            content: Callable[[], bytes | AsyncIterable[bytes]] | None = None
            length = 0
        else:
            content = _counted(source, progress)
            length = desc.size
        final = httpx.URL(location).copy_merge_params({"digest": desc.digest})
        response = await self._send(
            ep,
            ref,
            "PUT",
            final,
            actions="pull,push",
            retry=False,
            content=content,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
        )
        body = await _close_after_read(response)
        if response.status_code not in (201, 204):
            if response.status_code == 400 and b"DIGEST_INVALID" in body:
                raise FailedPrecondition(
                    f"digest mismatch: registry {ep.host} refused blob {desc.digest} of {ref}: "
                    "the uploaded bytes do not hash to it"
                )
            raise self._status_error(ep, ref, response, body, f"upload of blob {desc.digest}")
        return True

    async def _patch_chunks(
        self,
        ep: Endpoint,
        ref: Reference,
        desc: Descriptor,
        source: BlobSource,
        location: str,
        chunk_size: int,
        progress: Progress | None,
    ) -> str:
        sent = 0
        async for piece in _rechunk(_open_source(source), chunk_size):
            response = await self._send(
                ep,
                ref,
                "PATCH",
                location,
                actions="pull,push",
                retry=False,
                content=lambda piece=piece: piece,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{sent}-{sent + len(piece) - 1}",
                    "Content-Length": str(len(piece)),
                },
            )
            body = await _close_after_read(response)
            if response.status_code != 202:
                raise self._status_error(ep, ref, response, body, f"chunk of blob {desc.digest}")
            location = self._location(ep, response)
            sent += len(piece)
            if progress is not None:
                progress(sent)
        return location

    def _location(self, ep: Endpoint, response: httpx.Response) -> str:
        location = response.headers.get("location", "")
        if not location:
            raise FailedPrecondition(f"registry {ep.host} started an upload without a Location")
        return str(response.url.join(location))


class _HTTPFallback(httpx.AsyncBaseTransport):
    """HTTPS to a loopback registry, and plain HTTP when it answers without TLS.

    As containerd's HTTP fallback: only a handshake that failed because the other end does
    not speak TLS switches over (an untrusted certificate does not), and the host is then
    spoken to in plain HTTP for the rest of this client's life.
    """

    def __init__(self, verify: ssl.SSLContext) -> None:
        self._inner = httpx.AsyncHTTPTransport(verify=verify)
        self._plain: set[bytes] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "https" or not is_loopback(url.host):
            return await self._inner.handle_async_request(request)
        if url.netloc not in self._plain:
            try:
                return await self._inner.handle_async_request(request)
            except httpx.ConnectError as exc:
                tls = _tls_failure(exc)
                if tls is None or isinstance(tls, ssl.SSLCertVerificationError):
                    raise
            self._plain.add(url.netloc)
        request.url = url.copy_with(scheme="http")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Interrupted(Exception):
    """A transfer broke off in a way a retry may mend."""


def _as_ref(ref: Reference | str) -> Reference:
    return ref if isinstance(ref, Reference) else parse(ref)


def _is_manifest_like(media_type: str) -> bool:
    return mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def warm_up() -> None:
    """Pay the one-time cost of TLS roots and httpx's first client (about 50 ms) early.

    The engine calls this in a worker thread at start-up, so an operator's first
    pull does not wait for it.
    """
    httpx.AsyncClient(verify=_default_tls())


def _verify(body: bytes, digest: str, host: str, what: str) -> None:
    actual = "sha256:" + hashlib.sha256(body).hexdigest()
    if actual != digest:
        raise FailedPrecondition(
            f"digest mismatch for {what} from {host}: expected {digest} got {actual}"
        )


def _content_range_start(header: str) -> int:
    match = re.match(r"bytes\s+(\d+)-", header)
    return int(match.group(1)) if match else -1


def _manifest_media_type(
    response: httpx.Response, body: bytes, ref: Reference, ep: Endpoint
) -> str:
    header = mediatypes.base(response.headers.get("content-type", ""))
    if _is_manifest_like(header):
        return header
    try:
        doc: dict[str, Any] = json.loads(body)
    except ValueError as exc:
        raise FailedPrecondition(f"manifest of {ref} from {ep.host} is not JSON") from exc
    declared = mediatypes.base(str(doc.get("mediaType", "")))
    if _is_manifest_like(declared):
        return declared
    if header == mediatypes.DOCKER_SCHEMA1_MANIFEST or doc.get("schemaVersion") == 1:
        raise NotImplementedYet(f"{ref} is a Docker schema 1 image, which is not supported")
    # OCI allows omitting mediaType; the shape says which it is.
    if "manifests" in doc:
        return mediatypes.OCI_INDEX
    if "config" in doc and "layers" in doc:
        return mediatypes.OCI_MANIFEST
    raise FailedPrecondition(
        f"manifest of {ref} from {ep.host} has unknown media type {header or 'none'}"
    )


async def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise FailedPrecondition(f"{what} is {declared} bytes, over the {limit} byte limit")
    parts: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            raise FailedPrecondition(f"{what} is over the {limit} byte limit")
        parts.append(chunk)
    return b"".join(parts)


async def _close_after_read(response: httpx.Response) -> bytes:
    try:
        return await _read_limited(response, 64 << 10, "registry answer")
    except httpx.TransportError as exc:
        raise _Interrupted(_transport_reason(exc)) from exc
    finally:
        await response.aclose()


def _open_source(source: BlobSource) -> AsyncIterable[bytes]:
    if isinstance(source, bytes):
        return _once(source)
    return source()


async def _once(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), CHUNK_SIZE):
        yield data[start : start + CHUNK_SIZE]


def _counted(
    source: BlobSource, progress: Progress | None
) -> Callable[[], bytes | AsyncIterable[bytes]]:
    if isinstance(source, bytes) and progress is None:
        return lambda: source

    async def stream() -> AsyncIterator[bytes]:
        sent = 0
        async for chunk in _open_source(source):
            sent += len(chunk)
            yield chunk
            if progress is not None:
                progress(sent)

    return stream


async def _rechunk(stream: AsyncIterable[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in stream:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)
