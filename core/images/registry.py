"""The OCI distribution client's fetch/retry core: resolve and fetch from registries.

This module owns the HTTP conversation with registries for reading (the OCI distribution spec,
as Docker Hub, docker-registry and containerd's `remotes/docker` speak it): resolving a tag or
digest to the root descriptor, fetching manifests and blobs with every byte checked against the
digest, resuming a blob with `Range`, following redirects (never taking the registry's
Authorization to another host, and naming a loop), trying a host's endpoints in order
(mirrors first), and the one retry policy every operation shares: connection errors, 5xx and
429 are retried with a bounded exponential backoff (honouring `Retry-After`), a download that
keeps making progress keeps its budget. Authentication is `registry_auth`'s, pushing is
`registry_push`'s (on top of `RegistryClient.send`), the wording of failures
`registry_errors`'s, and where a host's requests go and how they are trusted `hosts`'s. It
never writes to disk: blob bytes go to the caller (the pull pipeline's content ingest), which
commits only once the stream has ended without an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import dataclasses
import functools
import hashlib
import heapq
import itertools
import json
import random
import re
import ssl
import urllib.request
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
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
    Unavailable,
)
from core.images import mediatypes
from core.images.hosts import PULL, RESOLVE, Endpoint, Hosts, is_loopback
from core.images.reference import Reference, parse
from core.images.registry_auth import Authorizer, Credentials, scope
from core.images.registry_errors import (
    registry_message,
    status_error,
    tls_error,
    tls_failure,
    transport_reason,
)
from core.images.registry_http import AsyncHTTP11

CHUNK_SIZE = 1 << 20
MAX_MANIFEST_SIZE = 4 << 20
"""containerd refuses manifests and indexes above 4 MiB; so do we."""
ERROR_BODY_LIMIT = 64 << 10
MAX_REDIRECTS = 10
"""As Go's HTTP client (containerd's): more redirects than this is a loop."""

Progress = Callable[[int], None]
"""Called with the number of bytes of the blob now held (including a resumed prefix)."""
Sink = Callable[[int, bytes], Awaitable[None]]
"""Receives each chunk with its offset in the blob; offset 0 after data means start over."""
Content = Callable[[], bytes | AsyncIterable[bytes]]
"""Opens a request body afresh for each attempt."""

T = TypeVar("T")
_MANIFEST_CACHE = 16


class Retryable(Exception):
    """A failure a later attempt may mend: a dropped connection, a 5xx or 429 answer."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff for connection errors, 5xx and 429."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, failure: int) -> float:
        # Jitter spreads out concurrent layer downloads that failed together.
        return min(self.max_delay, self.base_delay * 2 ** (failure - 1)) * random.uniform(0.5, 1)

    def retrying(
        self,
        gave_up: Callable[[int, Retryable], CtrdeckError],
        progress: Callable[[], int] | None = None,
    ) -> Attempts:
        """Attempts of one operation; `gave_up(attempts, last failure)` is raised at the end.

        Only `Retryable` failures are retried. With `progress` (a position that grows while
        the operation gets somewhere), the budget counts failures since it last moved.
        """
        return Attempts(self, gave_up, progress)


class _First:
    """The first attempt: `with attempt:` keeps a `Retryable` failure for the retries."""

    failure: Retryable | None = None

    def __enter__(self) -> _First:
        return self

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> bool:
        if isinstance(exc, Retryable):
            self.failure = exc
            return True
        return False


class Attempts:
    """The attempts of one operation under a `RetryPolicy`: the first alone, then tenacity's.

    Either `async for attempt in attempts: with attempt: ...` or `await attempts(operation,
    *args)`. Most operations succeed at once, so tenacity (8-10 ms of imports) is loaded only
    when a first attempt fails retryably; its `AsyncRetrying` then judges that failure and
    runs the rest (backoff or the server's `Retry-After`, capped; `gave_up`'s error once the
    budget is spent).
    """

    def __init__(
        self,
        policy: RetryPolicy,
        gave_up: Callable[[int, Retryable], CtrdeckError],
        progress: Callable[[], int] | None,
    ) -> None:
        self._policy = policy
        self._gave_up = gave_up
        self._progress = progress
        self._mark = (progress() if progress else 0, 0)
        """The position last seen, and how many attempts were made before it moved there."""
        self._first: _First | None = None
        self._rest: AsyncIterator[Any] | None = None

    def __aiter__(self) -> Attempts:
        return self

    async def __anext__(self) -> Any:
        if self._first is None:
            self._first = _First()
            return self._first
        if self._rest is None:
            if self._first.failure is None:
                raise StopAsyncIteration
            self._rest = await self._retrying(self._first.failure)
        return await anext(self._rest)

    async def _retrying(self, failure: Retryable) -> AsyncIterator[Any]:
        import tenacity

        policy, progress = self._policy, self._progress

        def failures(state: tenacity.RetryCallState) -> int:
            if progress is not None and progress() != self._mark[0]:
                self._mark = (progress(), state.attempt_number - 1)
            return state.attempt_number - self._mark[1]

        def failed(state: tenacity.RetryCallState) -> Retryable:
            assert state.outcome is not None
            exc = state.outcome.exception()
            assert isinstance(exc, Retryable)
            return exc

        def wait(state: tenacity.RetryCallState) -> float:
            retry_after = failed(state).retry_after
            if retry_after is not None:
                return min(retry_after, policy.max_delay)
            return policy.delay(failures(state))

        def give_up(state: tenacity.RetryCallState) -> None:
            raise self._gave_up(failures(state), failed(state)) from failed(state)

        rest = aiter(
            tenacity.AsyncRetrying(
                stop=lambda state: failures(state) >= policy.attempts,
                wait=wait,
                retry=tenacity.retry_if_exception_type(Retryable),
                retry_error_callback=give_up,
                sleep=asyncio.sleep,
            )
        )
        # tenacity's first attempt is the one already made: it fails as that one did.
        with await anext(rest):
            raise failure
        return rest

    async def __call__(
        self, operation: Callable[..., Awaitable[T]], *args: object, **kwargs: object
    ) -> T:
        async for attempt in self:
            with attempt:
                return await operation(*args, **kwargs)
        raise AssertionError("an operation ended without a result or an error")


@dataclass
class _Held:
    """What a download holds: its length, and the hash over it unless the caller keeps one."""

    hasher: hashlib._Hash | None
    position: int


class RegistryClient:
    """An async OCI distribution client; use as `async with RegistryClient(...) as client`.

    `hosts` says which endpoints serve each registry host (mirrors first); `credentials` maps a
    host to a username and secret for Basic or token authentication. Blob downloads share
    `max_concurrent_downloads` slots (given out by priority: a pull's lower layers, which it
    unpacks first, before its upper ones), uploads `max_concurrent_uploads`.
    """

    def __init__(
        self,
        hosts: Hosts | None = None,
        *,
        credentials: Credentials | None = None,
        max_concurrent_downloads: int = 4,
        max_concurrent_uploads: int = 5,
        retry: RetryPolicy | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.hosts = hosts or Hosts()
        self.retry = retry or RetryPolicy()
        self.uploads = asyncio.Semaphore(max_concurrent_uploads)
        self._auth = Authorizer(credentials)
        self._downloads = Slots(max_concurrent_downloads)
        self._timeout = httpx.Timeout(timeout, connect=min(timeout, 15.0))
        self._clients: dict[tuple[object, ...], httpx.AsyncClient] = {}
        self._manifests: dict[str, bytes] = {}

    def with_credentials(self, credentials: Credentials | None) -> RegistryClient:
        """This client for one request's credentials: the same connections, its own tokens.

        Tokens are cached per identity, so one caller's never serve another's request.
        """
        view = copy.copy(self)
        view._auth = Authorizer(credentials)
        return view

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
        ref = as_ref(ref)
        return await self._each_endpoint(ref, RESOLVE, lambda ep: self._resolve_at(ep, ref))

    async def fetch_manifest(self, ref: Reference | str, desc: Descriptor) -> bytes:
        """The bytes of a manifest or index, checked against `desc`'s digest and size."""
        ref = as_ref(ref)
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
            verify(body, desc.digest, ep.host, f"manifest of {ref}")
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
        held_digest: Callable[[], str] | None = None,
        priority: int = 0,
        slot: bool = True,
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

        A caller that hashes what it takes in anyway (the content store's writer does, to verify
        its commit) passes `held_digest`, the digest of every byte it holds: the stream is then
        not hashed a second time here, and no `prefix_hash` is needed to resume. It is asked
        after the last chunk, which the caller has taken in by then as it has every other one.

        While all download slots are taken, the download with the lowest `priority` (a layer's
        index in its manifest) gets the next one. With `slot` False the blob takes none: for a
        small document that other work waits for, such as an image config, as a manifest
        takes none.
        """
        ref = as_ref(ref)
        validate_digest(desc.digest)
        if offset < 0 or (desc.size and offset > desc.size):
            raise InvalidArgument(f"resume offset {offset} outside blob of {desc.size} bytes")
        hashing = held_digest is None
        if offset and hashing and prefix_hash is None:
            raise InvalidArgument("resuming a blob needs prefix_hash over the bytes already held")
        hasher = prefix_hash.copy() if prefix_hash is not None else hashlib.sha256()
        held = _Held(hasher if hashing else None, offset)
        async with self._downloads.hold(priority) if slot else contextlib.nullcontext():
            endpoints = self.endpoints(ref, PULL)
            for index, ep in enumerate(endpoints):

                def gave_up(attempts: int, exc: Retryable, ep: Endpoint = ep) -> CtrdeckError:
                    return Unavailable(
                        f"download of {desc.digest} from registry {ep.host} failed after "
                        f"{attempts} attempts at byte {held.position}: {exc}"
                    )

                try:
                    retrying = self.policy(ep).retrying(gave_up, lambda: held.position)
                    async for attempt in retrying:
                        with attempt:
                            async with contextlib.aclosing(
                                self._stream_blob(ep, ref, desc, held.position)
                            ) as stream:
                                async for at, chunk, restart in stream:
                                    if restart:
                                        held.position = 0
                                        if held.hasher is not None:
                                            held.hasher = hashlib.sha256()
                                    if desc.size and at + len(chunk) > desc.size:
                                        raise FailedPrecondition(
                                            f"blob {desc.digest} of {ref} from {ep.host} is "
                                            f"larger than its descriptor's {desc.size} bytes"
                                        )
                                    if held.hasher is not None:
                                        held.hasher.update(chunk)
                                    held.position = at + len(chunk)
                                    yield at, chunk
                    break
                except (NotFound, Unavailable):
                    # Content-addressed bytes are the same everywhere, so the next endpoint
                    # can carry on from where a failing mirror stopped.
                    if index == len(endpoints) - 1:
                        raise
            if held.hasher is not None:
                actual = "sha256:" + held.hasher.hexdigest()
            else:
                assert held_digest is not None
                actual = held_digest()
            if desc.size and held.position != desc.size:
                raise FailedPrecondition(
                    f"size mismatch for blob {desc.digest} of {ref}: expected {desc.size} "
                    f"got {held.position}"
                )
            if actual != desc.digest:
                raise FailedPrecondition(
                    f"digest mismatch for blob of {ref}: expected {desc.digest} got {actual}"
                )

    # -- the request core, shared with registry_push ------------------------------------------

    def policy(self, ep: Endpoint) -> RetryPolicy:
        """The retry policy at `ep`: one try at a mirror, whose successor carries on.

        A download resumes at the next endpoint from the byte the mirror reached.
        """
        return dataclasses.replace(self.retry, attempts=1) if ep.mirror else self.retry

    def endpoints(self, ref: Reference, capability: str) -> list[Endpoint]:
        endpoints = [ep for ep in self.hosts.endpoints(ref.domain) if ep.can(capability)]
        if not endpoints:
            raise FailedPrecondition(f"no endpoint of {ref.domain} is allowed to {capability}")
        return endpoints

    async def _each_endpoint(
        self, ref: Reference, capability: str, attempt: Callable[[Endpoint], Awaitable[T]]
    ) -> T:
        endpoints = self.endpoints(ref, capability)
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
        # An HTTPS endpoint gets its own TLS settings (system roots plus its CAs and client
        # certificates), built in a worker thread: loading the roots takes a tenth of a second
        # or more. A plain-HTTP one builds the default checks only when a request goes to
        # HTTPS (a redirect to storage); httpx's own transports for proxies named in the
        # environment need them at once.
        verify: ssl.SSLContext | bool = True
        transport: httpx.AsyncBaseTransport
        if ep.scheme == "https":
            verify = await asyncio.to_thread(ep.ssl_context)
            transport = _HTTPFallback(verify) if ep.http_fallback else AsyncHTTP11(verify)
        else:
            if urllib.request.getproxies():
                verify = await asyncio.to_thread(_default_tls)
            transport = AsyncHTTP11(_default_tls)
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                verify=verify,
                transport=transport,
                # A redirect to another host (object storage) drops Authorization: httpx
                # strips it whenever the origin changes.
                follow_redirects=True,
                max_redirects=MAX_REDIRECTS,
                timeout=self._timeout,
                headers={"User-Agent": f"ctrdeck/{__version__}"},
            )
            self._clients[key] = client
        return client

    def url(self, ep: Endpoint, ref: Reference, tail: str) -> httpx.URL:
        url = httpx.URL(f"{ep.base_url}/{quote(ref.path)}/{tail}")
        if ep.host != ref.registry_host:
            # Mirrors learn which upstream namespace is meant, as containerd tells them.
            url = url.copy_merge_params({"ns": ref.domain})
        return url

    async def send(
        self,
        ep: Endpoint,
        ref: Reference,
        method: str,
        url: httpx.URL | str,
        *,
        actions: str,
        headers: dict[str, str] | None = None,
        content: Content | None = None,
        retry: bool = True,
        extra_scopes: Iterable[str] = (),
    ) -> httpx.Response:
        """One request with auth, retries and error mapping; the response is left open.

        With `retry`, connection errors, 5xx and 429 are retried under the retry policy and
        the last one becomes Unavailable; without, they raise `Retryable` for an enclosing
        operation (an upload session) to retry as a whole. A 401 is answered once by
        (re)authenticating. Other statuses are the caller's to interpret.
        """
        attempt = functools.partial(
            self._attempt,
            ep,
            ref,
            method,
            url,
            actions=actions,
            headers=headers,
            content=content,
            extra_scopes=extra_scopes,
        )
        if not retry:
            return await attempt()

        def gave_up(attempts: int, exc: Retryable) -> CtrdeckError:
            return Unavailable(
                f"cannot reach registry {ep.host} ({ep.base_url}) after {attempts} attempts: {exc}"
            )

        response: httpx.Response = await self.policy(ep).retrying(gave_up)(attempt)
        return response

    async def _attempt(
        self,
        ep: Endpoint,
        ref: Reference,
        method: str,
        url: httpx.URL | str,
        *,
        actions: str,
        headers: dict[str, str] | None,
        content: Content | None,
        extra_scopes: Iterable[str],
    ) -> httpx.Response:
        client = await self._client(ep)
        scopes = sorted({scope(ref.path, actions), *extra_scopes})
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
            except httpx.TooManyRedirects as exc:
                raise FailedPrecondition(
                    f"registry {ep.host} redirected {method} {httpx.URL(url).path} more than "
                    f"{MAX_REDIRECTS} times (a redirect loop?), last to "
                    f"{exc.request.url.copy_with(query=None)}"
                ) from exc
            except (httpx.TransportError, ssl.SSLError) as exc:
                # httpcore passes a TLS alert after the handshake (TLS 1.3 refusing a client
                # certificate) up as the bare ssl.SSLError.
                fatal = tls_error(ep.host, exc)
                if fatal is not None:
                    raise fatal from exc
                raise Retryable(transport_reason(exc)) from exc
            status = response.status_code
            if status == 401 and not reauthenticated:
                body = await _drain(response)
                if auth:
                    self._auth.forget(ep.host, scopes)
                scopes = self._auth.learn(
                    ep.host, response, scopes, registry_message(response, body)
                )
                reauthenticated = True
                continue
            if status >= 500 or status == 429:
                body = await _drain(response)
                header = response.headers.get("retry-after", "")
                raise Retryable(
                    f"HTTP {status} {registry_message(response, body)}",
                    float(header) if header.isdigit() else None,
                )
            return response

    async def request(
        self,
        ep: Endpoint,
        ref: Reference,
        method: str,
        tail: str,
        *,
        actions: str = "pull",
        headers: dict[str, str] | None = None,
        content: Content | None = None,
        limit: int = MAX_MANIFEST_SIZE,
    ) -> tuple[httpx.Response, bytes]:
        """A request whose (small) body is read whole, up to `limit` bytes."""
        response = await self.send(
            ep,
            ref,
            method,
            self.url(ep, ref, tail),
            actions=actions,
            headers=headers,
            content=content,
        )
        try:
            body = await read_limited(response, limit, f"{method} {tail} from {ep.host}")
        except httpx.TransportError as exc:
            raise Unavailable(
                f"connection to registry {ep.host} lost reading {tail}: {transport_reason(exc)}"
            ) from exc
        finally:
            await response.aclose()
        return response, body

    def status_error(
        self, ep: Endpoint, ref: Reference, response: httpx.Response, body: bytes, what: str
    ) -> CtrdeckError:
        return status_error(ep.host, f"{what} of {ref}", response, body)

    async def _resolve_at(self, ep: Endpoint, ref: Reference) -> Descriptor:
        accept = ", ".join(mediatypes.MANIFEST_ACCEPT)
        response, _ = await self.request(
            ep, ref, "HEAD", f"manifests/{ref.object}", headers={"Accept": accept}
        )
        if response.status_code == 404:
            raise self.status_error(ep, ref, response, b"", "manifest")
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
        response, body = await self.request(
            ep, ref, "GET", f"manifests/{obj}", headers={"Accept": ", ".join(accept)}
        )
        if response.status_code != 200:
            raise self.status_error(ep, ref, response, body, f"manifest {obj}")
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
        response = await self.send(
            ep,
            ref,
            "GET",
            self.url(ep, ref, f"{kind}/{desc.digest}"),
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
                raise Retryable(f"registry {ep.host} refused range bytes={start}-")
            else:
                body = await read_limited(response, ERROR_BODY_LIMIT, "error body")
                raise self.status_error(ep, ref, response, body, f"blob {desc.digest}")
            position = start
            try:
                # The transport hands on reads of up to a MiB; httpx's re-chunking to a fixed
                # size would copy every byte twice more.
                async for chunk in response.aiter_raw():
                    yield position, chunk, restarted
                    restarted = False
                    position += len(chunk)
            except httpx.TransportError as exc:
                raise Retryable(transport_reason(exc)) from exc
            if desc.size and position < desc.size:
                raise Retryable(f"connection closed at byte {position} of {desc.size}")
        finally:
            await response.aclose()


class Slots:
    """At most `count` holders at once; waiters get in lowest `priority` first, then in turn."""

    def __init__(self, count: int) -> None:
        self._free = count
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._turn = itertools.count()

    @contextlib.asynccontextmanager
    async def hold(self, priority: int = 0) -> AsyncIterator[None]:
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._turn), handed))
            try:
                await handed
            except asyncio.CancelledError:
                # Cancelled after the slot was handed over: pass it on. (A waiter cancelled
                # before is skipped by `_release`.)
                if handed.done() and not handed.cancelled():
                    self._release()
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, handed = heapq.heappop(self._waiting)
            if not handed.done():
                handed.set_result(None)
                return
        self._free += 1


class _HTTPFallback(httpx.AsyncBaseTransport):
    """HTTPS to a loopback registry, and plain HTTP when it answers without TLS.

    As containerd's HTTP fallback: only a handshake that failed because the other end does
    not speak TLS switches over (an untrusted certificate does not), and the host is then
    spoken to in plain HTTP for the rest of this client's life.
    """

    def __init__(self, verify: ssl.SSLContext) -> None:
        self._inner = AsyncHTTP11(verify)
        self._plain: set[bytes] = set()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme != "https" or not is_loopback(url.host):
            return await self._inner.handle_async_request(request)
        if url.netloc not in self._plain:
            try:
                return await self._inner.handle_async_request(request)
            except httpx.ConnectError as exc:
                tls = tls_failure(exc)
                if tls is None or isinstance(tls, ssl.SSLCertVerificationError):
                    raise
            self._plain.add(url.netloc)
        request.url = url.copy_with(scheme="http")
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


def as_ref(ref: Reference | str) -> Reference:
    return ref if isinstance(ref, Reference) else parse(ref)


def _is_manifest_like(media_type: str) -> bool:
    return mediatypes.is_index(media_type) or mediatypes.is_manifest(media_type)


@functools.cache
def _default_tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def verify(body: bytes, digest: str, host: str, what: str) -> None:
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


async def read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
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


async def _drain(response: httpx.Response) -> bytes:
    """The (short) error body of an answer that will not be used, then close it."""
    try:
        return await read_limited(response, ERROR_BODY_LIMIT, "registry answer")
    except (httpx.TransportError, FailedPrecondition):
        return b""
    finally:
        await response.aclose()
