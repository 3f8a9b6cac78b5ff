"""Private images through the engine's own pull, with credentials from where users keep them.

The real engine and `ctrdeck pull` against a real docker-registry on 127.0.0.1 behind htpasswd
(Basic): `--user NAME:PASSWORD`, Docker's config.json (`auths`, and `credHelpers` through a
`docker-credential-*` helper the test puts on PATH), and the engine's own
`registry.configs."<host>".auth`. A wrong password, an identity token the token server will
not refresh, a redirect loop and a mirror with a certificate no CA vouches for each fail with
a clear message and leave nothing behind: no image, no content, no ingest, no lease. A blob
redirect to a second loopback host carries no Authorization; nested indexes are followed to
the platform's manifest; import spool files a crashed engine left are swept at start;
`--all-platforms` fetches every platform's content.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd.services.content import v1 as content_api
from core.api.containerd.services.images import v1 as images_api
from core.api.containerd.services.leases import v1 as leases_api
from core.client import Client
from core.descriptor import Descriptor
from core.images import mediatypes
from core.images.archive import IMPORT_SPOOL
from core.images.hosts import Hosts
from core.images.registry import RegistryClient
from core.images.registry_push import RegistryPusher
from tests.engine_proc import EngineProcess, run_cli
from tests.registry import (
    REFRESH_REFUSED,
    Registry,
    RegistryTLS,
    TokenServer,
    busybox_image,
    multiplatform_image,
    running_registry,
)
from tests.registry_proxy import BlobStorage, RedirectingProxy
from tests.tls_certs import make_pki

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root"),
]


@pytest.fixture
def private() -> Iterator[tuple[Registry, str]]:
    with running_registry(users={"alice": "s3cret"}) as reg:
        yield reg, reg.push(busybox_image(), "test/private", "v1")


def cli_pull(engine: EngineProcess, ref: str, *options: str) -> tuple[int, str]:
    done = run_cli("pull", "-a", str(engine.address), "--plain-http", *options, ref)
    return done.returncode, done.stdout + done.stderr


async def assert_nothing_left(client: Client) -> None:
    images = await client.images.list(images_api.ListImagesRequest())
    assert images.images == []
    blobs = [
        info.digest
        async for page in client.content.list(content_api.ListContentRequest())
        for info in page.info
    ]
    assert blobs == []
    statuses = await client.content.list_statuses(content_api.ListStatusesRequest())
    assert statuses.statuses == []
    leases = await client.leases.list(leases_api.ListRequest())
    assert leases.leases == []


async def test_user_flag_pulls_and_wrong_password_leaves_nothing(
    engine: EngineProcess, client: Client, private: tuple[Registry, str]
) -> None:
    reg, ref = private
    code, said = cli_pull(engine, ref, "--user", "alice:Wr0ngPass")
    assert code == 1
    assert f"unauthorized: registry {reg.host} did not accept our credentials" in said
    assert "Wr0ngPass" not in said + engine.log.read_text()
    await assert_nothing_left(client)

    code, said = cli_pull(engine, ref, "--user", "alice:s3cret")
    assert code == 0, said
    got = await client.images.get(images_api.GetImageRequest(name=ref))
    assert got.image is not None and got.image.target is not None
    assert got.image.target.digest == busybox_image().descriptor.digest


def write_docker_config(directory: Path, doc: dict[str, object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(doc))


async def test_docker_config_auths_and_credential_helper(
    engine: EngineProcess,
    client: Client,
    private: tuple[Registry, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    reg, ref = private
    auth = base64.b64encode(b"alice:s3cret").decode()
    write_docker_config(tmp_path / "auths", {"auths": {reg.host: {"auth": auth}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "auths"))
    code, said = cli_pull(engine, ref)
    assert code == 0, said

    await client.images.delete(images_api.DeleteImageRequest(name=ref, sync=True))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    asked = tmp_path / "asked"
    helper = bin_dir / "docker-credential-ctrdecktest"
    helper.write_text(
        "#!/bin/sh\n"
        f'[ "$1" = get ] || exit 1\ncat > {asked}\n'
        'echo \'{"ServerURL":"x","Username":"alice","Secret":"s3cret"}\'\n'
    )
    helper.chmod(0o755)
    write_docker_config(tmp_path / "helper", {"credHelpers": {reg.host: "ctrdecktest"}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "helper"))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    code, said = cli_pull(engine, ref)
    assert code == 0, said
    assert asked.read_text() == reg.host

    write_docker_config(tmp_path / "broken", {"auths": {reg.host: {"auth": "not base64!"}}})
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "broken"))
    code, said = cli_pull(engine, ref)
    assert code == 1 and "is not base64 of USER:PASSWORD" in said


async def test_engine_registry_config_entry(private: tuple[Registry, str]) -> None:
    reg, ref = private
    config = (
        'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry.configs'
        f'."{reg.host}".auth]\nusername = "alice"\npassword = "s3cret"\n'
    )
    engine = EngineProcess(config=config).start()
    try:
        client = Client(str(engine.address), "default")
        try:
            async for _ in client.images.pull(
                images_api.PullImageRequest(ref=ref, plain_http=True)
            ):
                pass
            got = await client.images.get(images_api.GetImageRequest(name=ref))
            assert got.image is not None
        finally:
            client.close()
    finally:
        engine.stop(cleanup=True)


async def test_identity_token_the_token_server_refuses(client: Client, tmp_path: Path) -> None:
    token = TokenServer(tmp_path, users={"bob": "hunter2"}).start()
    try:
        with running_registry(token=token) as reg:
            ref = reg.push(busybox_image(), "test/tokened", "v1", creds=("bob", "hunter2"))
            request = images_api.PullImageRequest(
                ref=ref, plain_http=True, user="<token>:revoked-identity"
            )
            with pytest.raises(GRPCError) as raised:
                async for _ in client.images.pull(request):
                    pass
    finally:
        token.stop()
    assert raised.value.status == Status.UNAUTHENTICATED
    message = raised.value.message or ""
    assert "refused to refresh" in message and REFRESH_REFUSED in message
    assert "revoked-identity" not in message
    await assert_nothing_left(client)


async def test_redirected_blobs_without_authorization_and_a_loop(
    engine: EngineProcess, client: Client, private: tuple[Registry, str]
) -> None:
    reg, pushed = private
    storage = BlobStorage(reg).start()
    looping = RedirectingProxy(reg, storage, loop=True).start()
    proxy = RedirectingProxy(reg, storage).start()
    try:
        code, said = cli_pull(
            engine, pushed.replace(reg.host, looping.host), "--user", "alice:s3cret"
        )
        assert code == 1 and f"registry {looping.host} redirected" in said
        await assert_nothing_left(client)

        code, said = cli_pull(
            engine, pushed.replace(reg.host, proxy.host), "--user", "alice:s3cret"
        )
        assert code == 0, said
    finally:
        proxy.stop()
        looping.stop()
        storage.stop()
    assert storage.seen and all("authorization" not in h for h in storage.seen)


async def test_nested_index_resolves_to_the_platform_manifest(
    client: Client, registry: Registry
) -> None:
    inner = multiplatform_image()
    registry.push(inner, "test/nested", "inner")
    body = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_INDEX,
            "manifests": [
                {
                    "mediaType": mediatypes.OCI_INDEX,
                    "digest": inner.descriptor.digest,
                    "size": inner.descriptor.size,
                }
            ],
        }
    ).encode()
    outer = Descriptor(
        mediatypes.OCI_INDEX, "sha256:" + hashlib.sha256(body).hexdigest(), len(body)
    )
    nested = f"{registry.host}/test/nested:outer"
    async with RegistryClient(Hosts(plain_http=True)) as registry_client:
        await RegistryPusher(registry_client).push_manifest(nested, outer, body)
    request = images_api.PullImageRequest(
        ref=nested, plain_http=True, platform="linux/arm64", skip_unpack=True
    )
    async for _ in client.images.pull(request):
        pass
    got = await client.images.get(images_api.GetImageRequest(name=nested))
    assert got.image is not None and got.image.target is not None
    assert got.image.target.digest == outer.digest
    arm64 = inner.image_for("arm64")
    info = await client.content.info(
        content_api.InfoRequest(digest=arm64.layers[0].descriptor.digest)
    )
    assert info.info is not None


async def test_mirror_with_a_bad_certificate_leaves_nothing(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = RegistryTLS(pki.server_cert, pki.server_key)
    with running_registry(tls=tls) as mirror, running_registry() as upstream:
        upstream.push(busybox_image(), "test/mirrored", "v1")
        hosts = tmp_path / "certs.d" / "example.test"
        hosts.mkdir(parents=True)
        (hosts / "hosts.toml").write_text(
            f'server = "http://{upstream.host}"\n\n'
            f'[host."https://{mirror.host}"]\n  capabilities = ["pull", "resolve"]\n'
            f'  ca = "{pki.other_ca}"\n'
        )
        config = (
            'version = 2\n[plugins."io.containerd.grpc.v1.cri".registry]\n'
            f'config_path = "{tmp_path / "certs.d"}"\n'
        )
        engine = EngineProcess(config=config).start()
        client = Client(str(engine.address), "default")
        try:
            request = images_api.PullImageRequest(ref="example.test/test/mirrored:v1")
            with pytest.raises(GRPCError) as raised:
                async for _ in client.images.pull(request):
                    pass
            assert raised.value.status == Status.FAILED_PRECONDITION
            assert f"TLS certificate of registry {mirror.host} not trusted" in (
                raised.value.message or ""
            )
            await assert_nothing_left(client)
        finally:
            client.close()
            engine.stop(cleanup=True)


async def test_all_platforms_fetches_every_platform(
    engine: EngineProcess, client: Client, registry: Registry
) -> None:
    built = multiplatform_image()
    ref = registry.push(built, "test/everywhere", "v1")
    code, said = cli_pull(engine, ref, "--all-platforms", "--platform", "linux/amd64")
    assert code == 0, said
    stored = {
        info.digest
        async for page in client.content.list(content_api.ListContentRequest())
        for info in page.info
    }
    assert set(built.blobs()) <= stored


def test_import_spool_leftovers_swept_at_start() -> None:
    base = Path(tempfile.mkdtemp(prefix="ctrdeck-spool-", dir="/tmp"))
    spool = base / "root" / IMPORT_SPOOL
    spool.mkdir(parents=True)
    leftover = spool / "import-crashed.tar"
    leftover.write_bytes(b"half an archive")
    engine = EngineProcess(base).start()
    try:
        assert not leftover.exists()
    finally:
        engine.stop(cleanup=True)
