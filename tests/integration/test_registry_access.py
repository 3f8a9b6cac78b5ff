"""Registries as operators meet them, through the registry client against real servers.

A real docker-registry on 127.0.0.1 behind: a token server of the test's own whose Bearer
tokens the registry accepts for a few seconds only (a fetch after the token died refreshes it
once, with the OAuth2 POST form, and completes; a refresh the token server refuses is a clear
error); a proxy that redirects blobs to a second loopback host (127.0.0.2) that must never see
the registry's Authorization, or redirects them in a loop; a mirror that is down, then up; and
TLS with a test CA and a client certificate, where a mirror with a certificate nobody vouches
for is a clear error.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.descriptor import Descriptor
from core.errors import FailedPrecondition, Unauthenticated
from core.images import registry as registry_module
from core.images.credentials import IDENTITY_TOKEN_USER
from core.images.hosts import Hosts
from core.images.registry import RegistryClient, RetryPolicy
from tests.registry import (
    REFRESH_REFUSED,
    Registry,
    RegistryTLS,
    TokenServer,
    busybox_image,
    free_port,
    layered_image,
    running_registry,
)
from tests.registry_proxy import BlobStorage, RedirectingProxy
from tests.tls_certs import make_pki

pytestmark = pytest.mark.integration

FAST = RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.05)
VALIDITY = 2
"""Seconds the registry accepts a token of the short-lived token server."""


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ctrdeck-access-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def fetch_image(client: RegistryClient, ref: str) -> list[bytes]:
    """Resolve `ref` and fetch its manifest and every layer; return the layers' bytes."""
    root = await client.resolve(ref)
    manifest = json.loads(await client.fetch_manifest(ref, root))
    return [await fetch(client, ref, _desc(layer)) for layer in manifest["layers"]]


async def fetch(client: RegistryClient, ref: str, desc: Descriptor) -> bytes:
    out = bytearray()

    async def sink(offset: int, chunk: bytes) -> None:
        del out[offset:]
        out.extend(chunk)

    await client.fetch_blob(ref, desc, sink)
    return bytes(out)


def _desc(d: dict[str, object]) -> Descriptor:
    return Descriptor(str(d["mediaType"]), str(d["digest"]), int(str(d["size"])))


# -- Bearer tokens that expire -----------------------------------------------------------------


@pytest.fixture
def short_tokens(workdir: Path) -> Iterator[tuple[TokenServer, Registry, str]]:
    token = TokenServer(workdir, users={"bob": "hunter2"}).start()
    try:
        with running_registry(token=token) as reg:
            ref = reg.push(layered_image(), "test/short", "v1", creds=("bob", "hunter2"))
            # Only now do tokens die quickly: skopeo's push above may take longer.
            token.validity = VALIDITY
            token.requests.clear()
            yield token, reg, ref
    finally:
        token.stop()


async def test_pull_outliving_its_token_refreshes_once_and_completes(
    short_tokens: tuple[TokenServer, Registry, str],
) -> None:
    token, _, ref = short_tokens
    client = RegistryClient(
        Hosts(plain_http=True), credentials=lambda host: ("bob", "hunter2"), retry=FAST
    )
    async with client:
        root = await client.resolve(ref)
        manifest = json.loads(await client.fetch_manifest(ref, root))
        assert len(token.requests) == 1 and not token.refreshes
        await asyncio.sleep(VALIDITY + 1)
        layers = [await fetch(client, ref, _desc(layer)) for layer in manifest["layers"]]
    assert layers == [layer.blob for layer in layered_image().images[0].layers]
    # The registry refused the dead token once; one OAuth2 refresh (not the password again).
    assert len(token.requests) == 1
    assert token.refreshes == [("bob", ["repository:test/short:pull"])]


async def test_expired_token_that_cannot_be_refreshed_is_a_clear_error(
    short_tokens: tuple[TokenServer, Registry, str],
) -> None:
    token, reg, ref = short_tokens
    client = RegistryClient(
        Hosts(plain_http=True), credentials=lambda host: ("bob", "hunter2"), retry=FAST
    )
    async with client:
        root = await client.resolve(ref)
        manifest = json.loads(await client.fetch_manifest(ref, root))
        token.refresh_tokens.clear()
        await asyncio.sleep(VALIDITY + 1)
        held = bytearray()

        async def sink(offset: int, chunk: bytes) -> None:
            held.extend(chunk)

        with pytest.raises(Unauthenticated) as raised:
            await client.fetch_blob(ref, _desc(manifest["layers"][0]), sink)
    message = str(raised.value)
    assert "refused to refresh" in message and REFRESH_REFUSED in message
    assert reg.host in message and "hunter2" not in message
    assert not held


async def test_identity_token_is_sent_with_the_oauth2_post_form(
    short_tokens: tuple[TokenServer, Registry, str],
) -> None:
    token, _, ref = short_tokens
    token.refresh_tokens["identity-of-bob"] = "bob"
    client = RegistryClient(
        Hosts(plain_http=True),
        credentials=lambda host: (IDENTITY_TOKEN_USER, "identity-of-bob"),
        retry=FAST,
    )
    async with client:
        await fetch_image(client, ref)
    assert token.requests == []
    assert token.refreshes and all(user == "bob" for user, _ in token.refreshes)


# -- redirects to object storage -------------------------------------------------------------


@pytest.fixture
def private_registry() -> Iterator[tuple[Registry, str]]:
    with running_registry(users={"alice": "s3cret"}) as reg:
        yield reg, reg.push(layered_image(), "test/redirected", "v1")


async def test_blob_redirect_drops_the_registry_authorization(
    private_registry: tuple[Registry, str],
) -> None:
    reg, pushed = private_registry
    storage = BlobStorage(reg).start()
    proxy = RedirectingProxy(reg, storage).start()
    try:
        ref = pushed.replace(reg.host, proxy.host)
        client = RegistryClient(
            Hosts(plain_http=True), credentials=lambda host: ("alice", "s3cret"), retry=FAST
        )
        async with client:
            layers = await fetch_image(client, ref)
    finally:
        proxy.stop()
        storage.stop()
    assert layers == [layer.blob for layer in layered_image().images[0].layers]
    assert len(storage.seen) == len(layers)
    assert all("authorization" not in headers for headers in storage.seen)


async def test_redirect_loop_is_a_clear_error(private_registry: tuple[Registry, str]) -> None:
    reg, pushed = private_registry
    storage = BlobStorage(reg).start()
    proxy = RedirectingProxy(reg, storage, loop=True).start()
    try:
        ref = pushed.replace(reg.host, proxy.host)
        client = RegistryClient(
            Hosts(plain_http=True), credentials=lambda host: ("alice", "s3cret"), retry=FAST
        )
        async with client:
            with pytest.raises(FailedPrecondition, match=rf"registry {proxy.host} redirected"):
                await fetch_image(client, ref)
    finally:
        proxy.stop()
        storage.stop()
    assert storage.seen == []


# -- mirrors ---------------------------------------------------------------------------------


async def test_mirror_down_then_up(workdir: Path) -> None:
    built = busybox_image()
    mirror_port = free_port()
    with running_registry() as upstream:
        upstream.push(built, "test/mirrored", "v1")
        certs = workdir / "certs.d" / "example.test"
        certs.mkdir(parents=True)
        (certs / "hosts.toml").write_text(
            f'server = "http://{upstream.host}"\n\n'
            f'[host."http://127.0.0.1:{mirror_port}"]\n  capabilities = ["pull", "resolve"]\n'
        )
        hosts = Hosts(str(workdir / "certs.d"))
        ref = "example.test/test/mirrored:v1"
        # The mirror is down: the upstream serves.
        async with RegistryClient(hosts, retry=FAST) as client:
            assert await fetch_image(client, ref) == [built.images[0].layers[0].blob]
        mirror = Registry(workdir / "mirror", port=mirror_port).start()
        try:
            mirror.push(built, "test/mirrored", "v1")
            upstream.stop()
            # The mirror is up and the upstream gone: the mirror serves.
            async with RegistryClient(hosts, retry=FAST) as client:
                assert await fetch_image(client, ref) == [built.images[0].layers[0].blob]
        finally:
            mirror.stop()


# -- TLS with a test CA and client certificates ----------------------------------------------


async def test_tls_with_test_ca_and_client_certificate(workdir: Path) -> None:
    pki = make_pki(workdir / "pki")
    built = busybox_image()
    with running_registry() as reg:
        ref = reg.push(built, "test/tls", "v1")
        reg.stop()
        reg.tls = RegistryTLS(pki.server_cert, pki.server_key, client_ca=pki.ca)
        reg.start()

        trusted = workdir / "trusted"
        (trusted / reg.host).mkdir(parents=True)
        (trusted / reg.host / "hosts.toml").write_text(
            f'server = "https://{reg.host}"\nca = "{pki.ca}"\n'
            f'client = [["{pki.client_cert}", "{pki.client_key}"]]\n'
        )
        async with RegistryClient(Hosts(str(trusted)), retry=FAST) as client:
            assert await fetch_image(client, ref) == [built.images[0].layers[0].blob]

        # Without the client certificate the registry ends the handshake: a TLS error.
        anonymous = workdir / "no-client"
        (anonymous / reg.host).mkdir(parents=True)
        (anonymous / reg.host / "hosts.toml").write_text(
            f'server = "https://{reg.host}"\nca = "{pki.ca}"\n'
        )
        async with RegistryClient(Hosts(str(anonymous)), retry=FAST) as client:
            with pytest.raises(
                FailedPrecondition,
                match=rf"registry {reg.host} failed: it refused our client certificate",
            ):
                await client.resolve(ref)

        # A mirror whose certificate no configured CA vouches for: a clear error, no fallback.
        mirrored = workdir / "bad-mirror"
        (mirrored / "example.test").mkdir(parents=True)
        (mirrored / "example.test" / "hosts.toml").write_text(
            f'server = "https://{reg.host}"\nca = "{pki.ca}"\n'
            f'client = [["{pki.client_cert}", "{pki.client_key}"]]\n\n'
            f'[host."https://{reg.host}"]\n  capabilities = ["pull", "resolve"]\n'
            f'  ca = "{pki.other_ca}"\n'
        )
        async with RegistryClient(Hosts(str(mirrored)), retry=FAST) as client:
            with pytest.raises(
                FailedPrecondition, match=r"TLS certificate of registry .*not trusted"
            ):
                await client.resolve("example.test/test/tls:v1")


# -- TLS made only when a plain-HTTP registry sends a request to HTTPS -------------------------


async def test_plain_registry_redirect_to_https_storage_checks_its_certificate(
    private_registry: tuple[Registry, str], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, pushed = private_registry
    pki = make_pki(workdir / "pki")
    storage = BlobStorage(reg, tls=(pki.server_cert, pki.server_key)).start()
    proxy = RedirectingProxy(reg, storage).start()
    ref = pushed.replace(reg.host, proxy.host)
    credentials = lambda host: ("alice", "s3cret")  # noqa: E731
    # The default checks are built on the first HTTPS request; clear what earlier tests built.
    registry_module._default_tls.cache_clear()
    try:
        # The system roots do not vouch for the test CA: the storage is refused.
        async with RegistryClient(
            Hosts(plain_http=True), credentials=credentials, retry=FAST
        ) as client:
            with pytest.raises(FailedPrecondition, match="certificate"):
                await fetch_image(client, ref)
        assert storage.seen == []
        # With the CA among the default roots, the same redirect is followed over HTTPS.
        monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
        registry_module._default_tls.cache_clear()
        async with RegistryClient(
            Hosts(plain_http=True), credentials=credentials, retry=FAST
        ) as client:
            layers = await fetch_image(client, ref)
    finally:
        registry_module._default_tls.cache_clear()
        proxy.stop()
        storage.stop()
    assert layers == [layer.blob for layer in layered_image().images[0].layers]
    assert len(storage.seen) == len(layers)
    assert all("authorization" not in headers for headers in storage.seen)
