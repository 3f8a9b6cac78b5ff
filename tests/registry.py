"""Test registry and test images: Debian's docker-registry on 127.0.0.1 and hand-built images.

This helper owns two things other tests reuse (the registry client, the pull pipeline, console
screenshots, benchmarks):

* `Registry`, a real `/usr/bin/docker-registry` with a generated config (filesystem storage in
  a temp dir, `127.0.0.1:<free port>`, deletes enabled, optionally htpasswd Basic auth or token
  auth against `TokenServer`), which can be stopped and started again on the same port and
  data, pushes OCI layouts with skopeo, and locates stored blobs on disk; and the `registry`
  pytest fixture around it.
* Deterministic image builders that write OCI image layouts in Python without Docker: layers are
  tar files of `Entry` lists with fixed mtimes and owners, gzipped with a zero mtime, so digests
  never change between runs. `busybox_image()` is one runnable layer, `layered_image()` adds
  upper layers with `.wh.` whiteouts and an opaque directory, `multiplatform_image()` is an
  index for linux/amd64 and linux/arm64. `expected_tree()` gives the file tree a correct unpack
  must produce.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from core.descriptor import Descriptor
from core.images import mediatypes, platforms

REGISTRY_BIN = "/usr/bin/docker-registry"
BUSYBOX_BIN = "/bin/busybox"
MTIME = 1_700_000_000
"""Every entry's mtime; fixed so layer digests are stable."""

BUSYBOX_APPLETS = (
    "sh", "ash", "echo", "ls", "cat", "sleep", "true", "false", "env", "id", "mkdir", "rm",
    "touch", "test", "[", "hostname", "ps", "wc", "head", "tail", "grep", "printf", "pwd",
    "uname", "date", "stat", "find", "readlink", "chmod", "ln", "cp", "mv", "kill", "sync",
    "top", "du", "df", "wget", "nc", "vi", "sed", "awk", "sort", "tr", "xargs", "yes", "dd",
)  # fmt: skip


# -- layers and images ---------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One tar member: kind is file, dir, symlink, hardlink, whiteout or opaque."""

    path: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    target: str = ""
    xattrs: tuple[tuple[str, str], ...] = ()


def file(path: str, data: bytes | str, mode: int = 0o644, uid: int = 0, gid: int = 0) -> Entry:
    raw = data.encode() if isinstance(data, str) else data
    return Entry(path, "file", raw, mode, uid, gid)


def directory(path: str, mode: int = 0o755, uid: int = 0, gid: int = 0) -> Entry:
    return Entry(path, "dir", mode=mode, uid=uid, gid=gid)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, "symlink", mode=0o777, target=target)


def hardlink(path: str, target: str) -> Entry:
    return Entry(path, "hardlink", target=target)


def whiteout(path: str) -> Entry:
    """Deletes `path` from the layers below."""
    return Entry(path, "whiteout")


def opaque(path: str) -> Entry:
    """Hides everything the layers below have under directory `path`."""
    return Entry(path, "opaque")


def _tar_name(entry: Entry) -> str:
    path = entry.path.strip("/")
    if entry.kind == "whiteout":
        parent, _, name = path.rpartition("/")
        return f"{parent}/.wh.{name}" if parent else f".wh.{name}"
    if entry.kind == "opaque":
        return f"{path}/.wh..wh..opq"
    return path


def make_tar(entries: list[Entry]) -> bytes:
    """An uncompressed PAX tar of `entries`, byte-for-byte reproducible."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            info = tarfile.TarInfo(_tar_name(entry))
            info.mtime = MTIME
            info.uid, info.gid = entry.uid, entry.gid
            info.uname = info.gname = ""
            info.mode = entry.mode
            if entry.xattrs:
                info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in entry.xattrs}
            payload = None
            if entry.kind == "file":
                info.type, info.size = tarfile.REGTYPE, len(entry.data)
                payload = io.BytesIO(entry.data)
            elif entry.kind == "dir":
                info.type = tarfile.DIRTYPE
            elif entry.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, entry.target
            elif entry.kind == "hardlink":
                info.type, info.linkname = tarfile.LNKTYPE, entry.target.strip("/")
            elif entry.kind in ("whiteout", "opaque"):
                info.type, info.mode = tarfile.REGTYPE, 0o644
            else:
                raise ValueError(f"unknown entry kind {entry.kind!r}")
            tar.addfile(info, payload)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Layer:
    entries: tuple[Entry, ...]
    tar: bytes
    blob: bytes
    descriptor: Descriptor

    @property
    def diff_id(self) -> str:
        return _sha(self.tar)


def make_layer(entries: list[Entry], compression: str = "gzip") -> Layer:
    """A layer blob of `entries`: `gzip` (mtime 0, level 6) or `none` (plain tar)."""
    tar = make_tar(entries)
    if compression == "gzip":
        blob, media_type = gzip.compress(tar, compresslevel=6, mtime=0), mediatypes.OCI_LAYER_GZIP
    elif compression == "none":
        blob, media_type = tar, mediatypes.OCI_LAYER
    else:
        raise ValueError(f"unsupported compression {compression!r}")
    return Layer(tuple(entries), tar, blob, Descriptor(media_type, _sha(blob), len(blob)))


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _desc_json(d: Descriptor, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = d.annotations
    out.update(extra or {})
    return out


@dataclass
class Image:
    """One platform's manifest with its config and layers (bytes kept for tests)."""

    os: str
    architecture: str
    variant: str
    layers: list[Layer]
    config: bytes
    config_descriptor: Descriptor
    manifest: bytes
    descriptor: Descriptor

    @property
    def platform(self) -> dict[str, str]:
        out = {"os": self.os, "architecture": self.architecture}
        if self.variant:
            out["variant"] = self.variant
        return out

    def blobs(self) -> dict[str, bytes]:
        out = {self.descriptor.digest: self.manifest, self.config_descriptor.digest: self.config}
        out.update({layer.descriptor.digest: layer.blob for layer in self.layers})
        return out

    def expected_tree(self) -> dict[str, Entry]:
        return expected_tree(self.layers)


def build_image(
    layers: list[Layer],
    *,
    os_name: str = "linux",
    architecture: str = "amd64",
    variant: str = "",
    cmd: tuple[str, ...] = ("/bin/sh",),
    env: tuple[str, ...] = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",),
    user: str = "",
) -> Image:
    config: dict[str, Any] = {
        "architecture": architecture,
        "os": os_name,
        "created": "2023-11-14T22:13:20Z",
        "config": {"Cmd": list(cmd), "Env": list(env), "WorkingDir": "/"}
        | ({"User": user} if user else {}),
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [{"created": "2023-11-14T22:13:20Z", "created_by": "tests/registry.py"}]
        * len(layers),
    }
    if variant:
        config["variant"] = variant
    config_bytes = _json(config)
    config_desc = Descriptor(mediatypes.OCI_CONFIG, _sha(config_bytes), len(config_bytes))
    manifest = _json(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_MANIFEST,
            "config": _desc_json(config_desc),
            "layers": [_desc_json(layer.descriptor) for layer in layers],
        }
    )
    return Image(
        os=os_name,
        architecture=architecture,
        variant=variant,
        layers=layers,
        config=config_bytes,
        config_descriptor=config_desc,
        manifest=manifest,
        descriptor=Descriptor(mediatypes.OCI_MANIFEST, _sha(manifest), len(manifest)),
    )


@dataclass
class Built:
    """What a layout's root points at: one manifest, or an index over several."""

    images: list[Image]
    root: bytes
    descriptor: Descriptor

    @property
    def is_index(self) -> bool:
        return mediatypes.is_index(self.descriptor.media_type)

    def blobs(self) -> dict[str, bytes]:
        out = {self.descriptor.digest: self.root}
        for image in self.images:
            out.update(image.blobs())
        return out

    def image_for(self, architecture: str) -> Image:
        return next(i for i in self.images if i.architecture == architecture)

    def write_layout(self, directory: Path, tag: str = "latest") -> Path:
        """Write an OCI image layout with the root tagged `tag`; return the directory."""
        blobs = directory / "blobs" / "sha256"
        blobs.mkdir(parents=True, exist_ok=True)
        (directory / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        for digest, data in self.blobs().items():
            (blobs / digest.removeprefix("sha256:")).write_bytes(data)
        root = _desc_json(
            self.descriptor, {"annotations": {"org.opencontainers.image.ref.name": tag}}
        )
        (directory / "index.json").write_bytes(
            _json({"schemaVersion": 2, "mediaType": mediatypes.OCI_INDEX, "manifests": [root]})
        )
        return directory


def single(image: Image) -> Built:
    return Built([image], image.manifest, image.descriptor)


def index_of(images: list[Image]) -> Built:
    body = _json(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.OCI_INDEX,
            "manifests": [_desc_json(i.descriptor, {"platform": i.platform}) for i in images],
        }
    )
    return Built(images, body, Descriptor(mediatypes.OCI_INDEX, _sha(body), len(body)))


def busybox_entries() -> list[Entry]:
    """A minimal runnable root: static busybox, applet symlinks, /etc basics, empty dirs."""
    binary = Path(BUSYBOX_BIN).read_bytes()
    entries = [
        directory("bin"),
        file("bin/busybox", binary, 0o755),
        *(symlink(f"bin/{applet}", "busybox") for applet in BUSYBOX_APPLETS),
        directory("dev"),
        directory("etc"),
        file("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n"),
        file("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        file("etc/hostname", "ctrdeck\n"),
        directory("proc"),
        directory("root", 0o700),
        directory("sys"),
        directory("tmp", 0o1777),
        directory("usr"),
        directory("usr/bin"),
        directory("var"),
    ]
    return entries


@functools.cache
def busybox_layer() -> Layer:
    return make_layer(busybox_entries())


@functools.cache
def busybox_image() -> Built:
    """One layer: a runnable busybox root for linux on this host's architecture."""
    return single(build_image([busybox_layer()], architecture=platforms.host().architecture))


def layered_entries() -> tuple[list[Entry], list[Entry]]:
    """The two upper layers of `layered_image`: files, then deletions and an opaque dir."""
    middle = [
        directory("data"),
        file("data/keep.txt", "kept\n"),
        file("data/remove-me.txt", "deleted by the top layer\n"),
        directory("data/dir-to-remove"),
        file("data/dir-to-remove/a.txt", "a\n"),
        file("data/owned.txt", "owned by 1000:1000\n", 0o640, uid=1000, gid=1000),
        file("data/script.sh", "#!/bin/sh\necho hi\n", 0o755),
        symlink("data/link", "keep.txt"),
        hardlink("data/hard", "data/keep.txt"),
        directory("opaque"),
        file("opaque/old1.txt", "old 1\n"),
        directory("opaque/sub"),
        file("opaque/sub/old2.txt", "old 2\n"),
        file("etc/motd", "middle\n"),
    ]
    top = [
        whiteout("data/remove-me.txt"),
        whiteout("data/dir-to-remove"),
        opaque("opaque"),
        file("opaque/new.txt", "new\n"),
        file("etc/motd", "top\n"),
        file("data/new.txt", "added on top\n"),
        whiteout("bin/vi"),
    ]
    return middle, top


@functools.cache
def layered_image() -> Built:
    """busybox + a layer of files + a layer deleting some (`.wh.`) and making one dir opaque."""
    middle, top = layered_entries()
    layers = [busybox_layer(), make_layer(middle), make_layer(top)]
    return single(build_image(layers, architecture=platforms.host().architecture))


@functools.cache
def multiplatform_image() -> Built:
    """An index: linux/amd64 runs busybox; linux/arm64/v8 is one tiny non-runnable layer."""
    amd64 = build_image([busybox_layer()], architecture="amd64")
    arm_layer = make_layer([file("hello-arm64.txt", "this is the arm64 image\n")])
    arm64 = build_image([arm_layer], architecture="arm64", variant="v8", cmd=("/hello",))
    return index_of([amd64, arm64])


def expected_tree(layers: list[Layer]) -> dict[str, Entry]:
    """The root file tree after applying `layers` in order, keyed by path without '/'.

    Whiteouts delete the path and everything below it; an opaque marker empties a directory
    of what lower layers put there. Hard links appear as the entry they link to.
    """
    tree: dict[str, Entry] = {}
    for layer in layers:
        for entry in layer.entries:
            path = entry.path.strip("/")
            if entry.kind in ("whiteout", "opaque"):
                prefix = path + "/"
                for key in [k for k in tree if k.startswith(prefix)]:
                    del tree[key]
                if entry.kind == "whiteout":
                    tree.pop(path, None)
                continue
            if entry.kind == "hardlink":
                target = tree[entry.target.strip("/")]
                tree[path] = Entry(
                    path,
                    target.kind,
                    target.data,
                    target.mode,
                    target.uid,
                    target.gid,
                    target.target,
                    target.xattrs,
                )
                continue
            tree[path] = entry
    return tree


# -- docker-registry -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bcrypt(password: str) -> str:
    # Python 3.11's crypt module uses libxcrypt, which does bcrypt; it is gone in 3.13.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    # The lowest bcrypt cost: the registry checks the hash on every request.
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))


@dataclass
class Registry:
    """A docker-registry process on 127.0.0.1 with its own storage and config."""

    workdir: Path
    port: int = field(default_factory=free_port)
    users: dict[str, str] = field(default_factory=dict)
    token: TokenServer | None = None
    tls: RegistryTLS | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def storage(self) -> Path:
        return self.workdir / "storage"

    def blob_path(self, digest: str) -> Path:
        """Where the registry keeps a blob's bytes (for corrupting or deleting it in tests)."""
        hex_ = digest.removeprefix("sha256:")
        return self.storage / "docker/registry/v2/blobs/sha256" / hex_[:2] / hex_ / "data"

    def _config(self) -> Path:
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "  maintenance:",
            "    uploadpurging:",
            "      enabled: false",
            "http:",
            f"  addr: {self.host}",
            "  secret: ctrdeck-test-secret",
        ]
        if self.tls is not None:
            lines += [
                "  tls:",
                f"    certificate: {self.tls.cert}",
                f"    key: {self.tls.key}",
            ]
            if self.tls.client_ca is not None:
                lines += ["    clientcas:", f"      - {self.tls.client_ca}"]
        if self.users:
            htpasswd = self.workdir / "htpasswd"
            htpasswd.write_text("".join(f"{u}:{_bcrypt(p)}\n" for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: ctrdeck-test", f"    path: {htpasswd}"]
        elif self.token is not None:
            lines += [
                "auth:",
                "  token:",
                f"    realm: {self.token.url}/token",
                f"    service: {self.token.service}",
                f"    issuer: {self.token.issuer}",
                f"    rootcertbundle: {self.token.cert}",
            ]
        path = self.workdir / "config.yml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self) -> Registry:
        if self._proc is not None:
            return self
        self.storage.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / "registry.log").open("ab")
        self._proc = subprocess.Popen(
            [REGISTRY_BIN, "serve", str(self._config())],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"docker-registry exited: {self.log_text()}")
            if self.tls is not None:
                # A TLS registry may want a client certificate: a listening port will do.
                try:
                    socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                    return self
                except OSError:
                    time.sleep(0.05)
                    continue
            try:
                with urllib.request.urlopen(f"{self.url}/v2/", timeout=1):
                    return self
            except urllib.error.HTTPError as exc:
                if exc.code == 401:
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"docker-registry did not answer on {self.host}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), cutting transfers in flight; `start` brings it back."""
        if self._proc is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
        self.stop()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_text(self) -> str:
        path = self.workdir / "registry.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def push(
        self,
        built: Built,
        repo: str,
        tag: str = "latest",
        *,
        docker_format: bool = False,
        creds: tuple[str, str] | None = None,
    ) -> str:
        """Push `built` as `<host>/<repo>:<tag>` with skopeo; return the reference.

        OCI as built (digests preserved) unless `docker_format`, which has skopeo convert to
        Docker schema 2 (new manifest digests, same layer blobs).
        """
        layout = Path(tempfile.mkdtemp(prefix="oci-", dir=self.workdir))
        try:
            built.write_layout(layout, tag)
            cmd = ["skopeo", "--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"]
            cmd += ["--all"] if built.is_index else []
            cmd += ["--format", "v2s2"] if docker_format else ["--preserve-digests"]
            if creds is None and self.users:
                creds = next(iter(self.users.items()))
            if creds is not None:
                cmd += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
            ref = f"{self.host}/{repo}:{tag}"
            cmd += [f"oci:{layout}:{tag}", f"docker://{ref}"]
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise RuntimeError(f"skopeo push of {ref} failed: {result.stderr.strip()}")
            return ref
        finally:
            shutil.rmtree(layout, ignore_errors=True)


@dataclass(frozen=True)
class RegistryTLS:
    """The registry's certificate and key, and the CA its clients' certificates need."""

    cert: Path
    key: Path
    client_ca: Path | None = None


@contextlib.contextmanager
def running_registry(
    users: dict[str, str] | None = None,
    token: TokenServer | None = None,
    tls: RegistryTLS | None = None,
) -> Iterator[Registry]:
    workdir = Path(tempfile.mkdtemp(prefix="ctrdeck-registry-"))
    reg = Registry(workdir, users=dict(users or {}), token=token, tls=tls)
    try:
        yield reg.start()
    finally:
        reg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _need_tools() -> None:
    for tool in (REGISTRY_BIN, shutil.which("skopeo") or "/usr/bin/skopeo", BUSYBOX_BIN):
        if not Path(tool).exists():
            pytest.skip(f"{tool} is not installed (docker-registry, skopeo, busybox-static)")


@pytest.fixture(name="registry")
def registry_fixture() -> Iterator[Registry]:
    """A fresh, empty, plain-HTTP docker-registry on 127.0.0.1, stopped afterwards."""
    _need_tools()
    with running_registry() as reg:
        yield reg


# -- a token server for Bearer auth ----------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


DENIED_MESSAGE = "anonymous access to this registry is disabled by policy"
REFRESH_REFUSED = "refresh token expired or revoked"


class TokenServer:
    """A Docker token endpoint on 127.0.0.1 that signs JWTs docker-registry accepts.

    The registry itself stays real: it is configured with `auth.token` and this server's
    certificate as its root bundle. Anonymous callers get `pull` only (or, with
    `deny_anonymous`, a 403 with a distribution-style error body); `users` get what they ask
    for. Every request is recorded in `requests` as (username or "", scopes).
    """

    issuer = "ctrdeck-test-issuer"
    service = "ctrdeck-test-registry"

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        deny_anonymous: bool = False,
        validity: int | None = None,
    ) -> None:
        self.workdir = workdir
        self.users = dict(users or {})
        self.deny_anonymous = deny_anonymous
        self.validity = validity
        self.requests: list[tuple[str, list[str]]] = []
        self.refreshes: list[tuple[str, list[str]]] = []
        self.refresh_tokens: dict[str, str] = {}
        self.key = workdir / "token.key"
        self.cert = workdir / "token.crt"
        subprocess.run(
            [
                "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256",
                "-keyout", str(self.key), "-out", str(self.cert), "-days", "2",
                "-subj", "/CN=ctrdeck-test-token",
            ],
            check=True, capture_output=True,
        )  # fmt: skip
        der = subprocess.run(
            ["openssl", "x509", "-in", str(self.cert), "-outform", "DER"],
            check=True,
            capture_output=True,
        ).stdout
        self._x5c = base64.b64encode(der).decode()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> TokenServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def sign(self, user: str, scopes: list[str]) -> str:
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            wanted = [a for a in actions.split(",") if a]
            granted = wanted if user else [a for a in wanted if a == "pull"]
            access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": [self._x5c]}
        # docker-registry allows 60 s of clock skew past `exp`; `validity` is what it accepts.
        exp = now + 300 if self.validity is None else now + self.validity - 60
        claims = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.service,
            "exp": exp,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        signing_input = f"{_b64url(_json(header))}.{_b64url(_json(claims))}"
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", str(self.key)],
            input=signing_input.encode(),
            check=True,
            capture_output=True,
        ).stdout
        return f"{signing_input}.{_b64url(signature)}"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                scopes = query.get("scope", [])
                user = ""
                auth = self.headers.get("Authorization", "")
                if auth.startswith("Basic "):
                    name, _, password = base64.b64decode(auth[6:]).decode().partition(":")
                    if server.users.get(name) != password:
                        self.send_response(401)
                        self.end_headers()
                        return
                    user = name
                server.requests.append((user, scopes))
                if not user and server.deny_anonymous:
                    denied = json.dumps(
                        {"errors": [{"code": "DENIED", "message": DENIED_MESSAGE}]}
                    ).encode()
                    self.send_response(403)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(denied)))
                    self.end_headers()
                    self.wfile.write(denied)
                    return
                answer: dict[str, Any] = {"token": server.sign(user, scopes), "expires_in": 300}
                if user:
                    refresh = uuid.uuid4().hex
                    server.refresh_tokens[refresh] = user
                    answer["refresh_token"] = refresh
                self._json(200, answer)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode())
                scopes = " ".join(form.get("scope", [])).split()
                refresh = (form.get("refresh_token") or [""])[0]
                user = server.refresh_tokens.get(refresh, "")
                server.refreshes.append((user, scopes))
                if form.get("grant_type") != ["refresh_token"] or not user:
                    self._json(
                        401,
                        {"errors": [{"code": "UNAUTHORIZED", "message": REFRESH_REFUSED}]},
                    )
                    return
                self._json(200, {"access_token": server.sign(user, scopes), "expires_in": 300})

            def _json(self, status: int, answer: dict[str, Any]) -> None:
                body = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler
