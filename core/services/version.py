"""Version: which engine answers, in the shape `ctr version` prints."""

from __future__ import annotations

from core import __version__
from core.api.containerd.services.version import v1 as api
from core.api.google.protobuf import Empty
from core.services.codec import Preencoded

# Semver build metadata keeps containerd's API level readable to clients that
# gate features on it, and still says plainly which engine this is.
VERSION = f"1.6.20+ctrdeck.{__version__}"
REVISION = f"ctrdeck-{__version__}"
# The reply never changes: encoded once, not per call.
_REPLY = Preencoded(bytes(api.VersionResponse(version=VERSION, revision=REVISION)))


class VersionService(api.VersionBase):
    PARTS: tuple[str, ...] = ()
    """The engine's parts it uses: Introspection lists their types as its `requires`."""

    async def version(self, message: Empty) -> api.VersionResponse:
        return _REPLY  # type: ignore[return-value]
