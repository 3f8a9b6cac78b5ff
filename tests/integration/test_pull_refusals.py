"""A registry's refusal reaches the client with its own status code and words.

Through the real engine and a real docker-registry on 127.0.0.1: a repository
behind Basic authentication, pulled without credentials, is UNAUTHENTICATED and
quotes the registry's answer; a token server that refuses anonymous callers
with 403 makes the pull PERMISSION_DENIED with the token server's message.
Before, both were FAILED_PRECONDITION.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from core.api.containerd.services.images import v1 as images_api
from core.client import Client
from tests.registry import DENIED_MESSAGE, TokenServer, busybox_image, running_registry

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="snapshot mounts need root"),
]


async def pull_error(client: Client, ref: str) -> GRPCError:
    with pytest.raises(GRPCError) as raised:
        async for _ in client.images.pull(images_api.PullImageRequest(ref=ref, plain_http=True)):
            pass
    return raised.value


async def test_pull_without_credentials_is_unauthenticated(client: Client) -> None:
    with running_registry(users={"alice": "s3cret"}) as reg:
        ref = reg.push(busybox_image(), "test/private", "v1")
        error = await pull_error(client, ref)
    assert error.status == Status.UNAUTHENTICATED
    message = error.message or ""
    assert "requires credentials" in message and reg.host in message
    # The registry's own words for its 401 (a HEAD answer has no body, only a reason).
    assert "Unauthorized" in message


async def test_pull_refused_by_the_token_server_is_permission_denied(client: Client) -> None:
    with tempfile.TemporaryDirectory(prefix="ctrdeck-token-") as tmp:
        token = TokenServer(Path(tmp), users={"bob": "hunter2"}, deny_anonymous=True).start()
        try:
            with running_registry(token=token) as reg:
                ref = reg.push(busybox_image(), "test/closed", "v1", creds=("bob", "hunter2"))
                error = await pull_error(client, ref)
        finally:
            token.stop()
    assert error.status == Status.PERMISSION_DENIED
    assert DENIED_MESSAGE in (error.message or "")
