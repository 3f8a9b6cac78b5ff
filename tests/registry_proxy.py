"""A test proxy in front of a registry that redirects blob downloads to object storage.

`RedirectingProxy` listens on 127.0.0.1 and forwards every request to a real registry as is
(Authorization included), except blob GETs, which it answers with a 307 to `BlobStorage`, a
second server on another loopback host (127.0.0.2) that serves the registry's stored blob files
and records the headers of every request it gets, so a test can show that the registry's
Authorization never reaches it; given a certificate and key, the storage speaks HTTPS instead
(on 127.0.0.1, the address the test certificates name). With `loop`, blob GETs are redirected
back to the proxy itself, forever.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.registry import Registry

_BLOB = re.compile(r"^/v2/.+/blobs/(sha256:[0-9a-f]{64})$")
_HOP = {"connection", "keep-alive", "transfer-encoding", "host"}


class _Server:
    scheme = "http"

    def __init__(self, host: str, handler: type[BaseHTTPRequestHandler]) -> None:
        self._server = ThreadingHTTPServer((host, 0), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host}:{port}"

    def start(self) -> Any:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


class BlobStorage(_Server):
    """Serves `/blobs/<digest>` from the registry's storage; remembers request headers."""

    def __init__(self, registry: Registry, tls: tuple[Path, Path] | None = None) -> None:
        self.seen: list[dict[str, str]] = []
        storage = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                storage.seen.append({k.lower(): v for k, v in self.headers.items()})
                path = registry.blob_path(self.path.rsplit("/", 1)[-1].split("?")[0])
                if not path.exists():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                data = path.read_bytes()
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        super().__init__("127.0.0.1" if tls else "127.0.0.2", Handler)
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
            self.scheme = "https"


class RedirectingProxy(_Server):
    """Forwards to `registry`; blob GETs go to `storage` (or, with `loop`, back here)."""

    def __init__(self, registry: Registry, storage: BlobStorage, *, loop: bool = False) -> None:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _redirect(self, location: str) -> None:
                self.send_response(307)
                self.send_header("Location", location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _forward(self) -> None:
                blob = _BLOB.match(self.path.split("?")[0])
                if blob is not None and self.command == "GET":
                    if loop:
                        self._redirect(f"http://{proxy.host}{self.path}")
                    else:
                        self._redirect(f"{storage.scheme}://{storage.host}/blobs/{blob.group(1)}")
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn = http.client.HTTPConnection(registry.host, timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    # A HEAD answer's Content-Length is the length a GET would have.
                    if key.lower() not in _HOP and (
                        key.lower() != "content-length" or self.command == "HEAD"
                    ):
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = _forward

        super().__init__("127.0.0.1", Handler)
