"""Pushing to registries: blobs (monolithic or chunked, mounted across repositories) and manifests.

This module owns the upload side of the OCI distribution spec on top of the fetch/retry core
(`RegistryClient.send`): a blob the repository lacks is uploaded in one streamed PUT or in PATCH
pieces, or mounted from another repository of the same registry when it allows that; a dropped
connection or a 5xx starts a fresh upload session under the client's one retry policy; and a
manifest or index is PUT under its tag or digest, checked against the digest the registry says
it stored. Uploads go to the first endpoint allowed to push (mirrors are for reading).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable
from urllib.parse import quote

import httpx

from core.descriptor import Descriptor, validate_digest
from core.errors import CtrdeckError, FailedPrecondition, Unavailable
from core.images.hosts import PUSH, Endpoint
from core.images.reference import Reference
from core.images.registry import (
    CHUNK_SIZE,
    ERROR_BODY_LIMIT,
    Content,
    Progress,
    RegistryClient,
    Retryable,
    as_ref,
    read_limited,
    verify,
)
from core.images.registry_auth import scope
from core.images.registry_errors import transport_reason

BlobSource = bytes | Callable[[], AsyncIterable[bytes]]
"""What `push_blob` uploads: the bytes, or a factory that opens a fresh stream of them."""


class RegistryPusher:
    """Uploads through `client`: its endpoints, authentication, retries and upload slots."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    async def blob_exists(self, ref: Reference | str, desc: Descriptor) -> bool:
        ref = as_ref(ref)
        ep = self.client.endpoints(ref, PUSH)[0]
        response, _ = await self.client.request(
            ep, ref, "HEAD", f"blobs/{desc.digest}", actions="pull,push"
        )
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self.client.status_error(ep, ref, response, b"", f"blob {desc.digest}")

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
        ref = as_ref(ref)
        validate_digest(desc.digest)
        async with self.client.uploads:
            if await self.blob_exists(ref, desc):
                return False
            ep = self.client.endpoints(ref, PUSH)[0]

            def gave_up(attempts: int, exc: Retryable) -> CtrdeckError:
                return Unavailable(
                    f"upload of {desc.digest} to registry {ep.host} failed after "
                    f"{attempts} attempts: {exc}"
                )

            uploaded: bool = await self.client.policy(ep).retrying(gave_up)(
                self._upload, ep, ref, desc, source, mount_from, chunk_size, progress
            )
            return uploaded

    async def push_manifest(
        self, ref: Reference | str, desc: Descriptor, body: bytes, *, tag: str = ""
    ) -> None:
        """PUT a manifest or index under `tag` (default: the reference's tag, else its digest)."""
        ref = as_ref(ref)
        verify(body, desc.digest, "local content", "manifest to push")
        target = tag or ref.tag or desc.digest
        ep = self.client.endpoints(ref, PUSH)[0]
        response, content = await self.client.request(
            ep,
            ref,
            "PUT",
            f"manifests/{target}",
            actions="pull,push",
            headers={"Content-Type": desc.media_type},
            content=lambda: body,
        )
        if response.status_code not in (200, 201, 202):
            raise self.client.status_error(ep, ref, response, content, f"manifest {target}")
        returned = response.headers.get("docker-content-digest", "")
        if returned and returned != desc.digest:
            raise FailedPrecondition(
                f"digest mismatch: registry {ep.host} stored manifest {target} of {ref} as "
                f"{returned}, expected {desc.digest}"
            )

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
            extra.append(scope(mount_from, "pull"))
        response = await self.client.send(
            ep,
            ref,
            "POST",
            self.client.url(ep, ref, tail),
            actions="pull,push",
            retry=False,
            headers={"Content-Length": "0"},
            extra_scopes=extra,
        )
        body = await _close_after_read(response)
        if response.status_code == 201:
            return False
        if response.status_code != 202:
            raise self.client.status_error(ep, ref, response, body, f"upload of blob {desc.digest}")
        location = self._location(ep, response)
        if chunk_size and desc.size > chunk_size:
            location = await self._patch_chunks(
                ep, ref, desc, source, location, chunk_size, progress
            )
            content: Content | None = None
            length = 0
        else:
            content = _counted(source, progress)
            length = desc.size
        final = httpx.URL(location).copy_merge_params({"digest": desc.digest})
        response = await self.client.send(
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
            raise self.client.status_error(ep, ref, response, body, f"upload of blob {desc.digest}")
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
            response = await self.client.send(
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
                raise self.client.status_error(
                    ep, ref, response, body, f"chunk of blob {desc.digest}"
                )
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


async def _close_after_read(response: httpx.Response) -> bytes:
    try:
        return await read_limited(response, ERROR_BODY_LIMIT, "registry answer")
    except httpx.TransportError as exc:
        raise Retryable(transport_reason(exc)) from exc
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
