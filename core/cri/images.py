"""CRI images: the engine's image records in `k8s.io`, seen the way kubelet sees images.

A CRI image is identified by its config digest (`id`); every image record
whose target resolves (for this host's platform) to that config is one of its
names: a tag (`repoTags`) or a `repo@digest` (`repoDigests`). A pull goes
through the engine's own pull pipeline, then records the `repo@digest` and
the `sha256:<config>` names, as containerd's CRI does, so an image can be
found, and removed, by tag, digest or id. The image's `USER` gives `uid` (a
number) or `username` (a name).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

from core.api.containerd.services.images.v1 import ImageDelete
from core.cri import NAMESPACE
from core.descriptor import Descriptor
from core.engine import Engine
from core.errors import CtrdeckError, NotFound
from core.images import handlers, mediatypes, platforms, reference
from core.metadata.images import Image

log = logging.getLogger("ctrdeck.cri")

MANAGED_LABEL = "io.cri-containerd.image"
_ID = re.compile(r"(sha256:)?[0-9a-f]{64}")
_ID_PREFIX = re.compile(r"[0-9a-f]{6,63}")


@dataclass
class CriImage:
    """One image as the CRI reports it, with the records that name it."""

    id: str
    size: int
    config: dict[str, Any]
    chain_id: str
    repo_tags: list[str] = field(default_factory=list)
    repo_digests: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)

    @property
    def user(self) -> str:
        return str((self.config.get("config") or {}).get("User") or "")

    def uid_and_name(self) -> tuple[int | None, str]:
        name = self.user.partition(":")[0]
        if not name:
            return None, ""
        return (int(name), "") if name.isdigit() else (None, name)


class CriImages:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # A target digest always resolves to the same config: cache the walk.
        self._resolved: dict[str, tuple[str, int, dict[str, Any], str]] = {}

    def _blob(self, digest: str) -> bytes:
        return b"".join(self.engine.content.read(digest))

    def _resolve(self, target: Descriptor) -> tuple[str, int, dict[str, Any], str]:
        """(config digest, size, config document, top chain ID) of a record's target."""
        cached = self._resolved.get(target.digest)
        if cached is not None:
            return cached
        desc, data = target, self._blob(target.digest)
        if mediatypes.is_index(handlers.media_type_of(desc, data)):
            entries = handlers.index_entries(data, f"index {desc.digest}")
            desc = handlers.select_manifests(entries, platforms.default_matcher(), 1)[0]
            data = self._blob(desc.digest)
        manifest = handlers.read_manifest(data, f"manifest {desc.digest}")
        config_bytes = self._blob(manifest.config.digest)
        config = handlers.read_config(config_bytes)
        size = manifest.config.size + sum(layer.size for layer in manifest.layers)
        chain = handlers.chain_ids(config.diff_ids)
        found = (manifest.config.digest, size, config.raw, chain[-1] if chain else "")
        self._resolved[target.digest] = found
        return found

    def all(self) -> list[CriImage]:
        by_id: dict[str, CriImage] = {}
        for record in self.engine.metadata.images.list(NAMESPACE):
            try:
                config_digest, size, config, chain = self._resolve(record.target)
            except CtrdeckError as exc:
                # An image whose blobs are not all here (a pull in flight) is not one yet.
                log.debug("image %s is not usable: %s", record.name, exc.message)
                continue
            image = by_id.setdefault(config_digest, CriImage(config_digest, size, config, chain))
            image.records.append(record.name)
            if record.name.startswith("sha256:"):
                continue
            try:
                ref = reference.parse(record.name)
            except CtrdeckError:
                continue
            if ref.digest:
                _append(image.repo_digests, str(ref))
            else:
                _append(image.repo_tags, str(ref))
                _append(image.repo_digests, f"{ref.name}@{record.target.digest}")
        return sorted(by_id.values(), key=lambda i: i.id)

    def find(self, ref: str) -> CriImage | None:
        """The image `ref` names (a tag, a `repo@digest`, an id or a unique id prefix)."""
        images = self.all()
        if _ID.fullmatch(ref):
            wanted = ref if ref.startswith("sha256:") else f"sha256:{ref}"
            return next((i for i in images if i.id == wanted), None)
        try:
            name = str(reference.parse(ref))
        except CtrdeckError:
            if _ID_PREFIX.fullmatch(ref):
                found = [i for i in images if i.id.removeprefix("sha256:").startswith(ref)]
                return found[0] if len(found) == 1 else None
            raise
        return next((i for i in images if name in i.records or name in i.repo_digests), None)

    def get(self, ref: str) -> CriImage:
        image = self.find(ref)
        if image is None:
            raise NotFound(f'image "{ref}" not found')
        return image

    async def pull(self, ref: str, user: str = "") -> CriImage:
        """Pull `ref` into `k8s.io` as `user` (`NAME:SECRET`, kept for this pull alone)."""
        from core.images.pull import request_from  # on first pull: the registry client, TLS

        parsed = reference.parse(ref)
        pulled: Image | None = None
        pulls = self.engine.puller.pull(NAMESPACE, request_from(str(parsed), user=user))
        async for progress in pulls:
            pulled = progress.image or pulled
        if pulled is None:
            raise NotFound(f'pull of "{ref}" registered no image')
        config_digest, _, _, _ = self._resolve(pulled.target)
        store = self.engine.metadata.images
        for name in (f"{parsed.name}@{pulled.target.digest}", config_digest):
            try:
                store.get(NAMESPACE, name)
            except NotFound:
                store.create(
                    NAMESPACE,
                    Image(name=name, target=pulled.target, labels={MANAGED_LABEL: "managed"}),
                )
        return self.get(config_digest)

    async def remove(self, ref: str) -> None:
        """Remove every record of the image `ref` names; nothing to remove is fine."""
        image = self.find(ref)
        if image is None:
            return
        for name in image.records:
            try:
                self.engine.metadata.images.delete(NAMESPACE, name)
            except NotFound:
                continue
            self.engine.events.publish(NAMESPACE, "/images/delete", ImageDelete(name=name))
        await self.engine.gc.collect(wait=False)


def _append(items: list[str], value: str) -> None:
    if value not in items:
        items.append(value)
