"""Certificates for TLS tests, made with the openssl command line.

`make_pki(dir)` writes a CA, a server certificate for 127.0.0.1 and localhost,
a client certificate signed by that CA, and a second CA with its own client
certificate (which the engine must refuse). Keys are EC P-256, so making them
takes milliseconds.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path
    wrong_name_cert: Path
    wrong_name_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _ca(d: Path, name: str) -> tuple[Path, Path]:
    key, cert = d / f"{name}.key", d / f"{name}.pem"
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    _openssl(
        "req", "-x509", "-new", "-key", key, "-out", cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def _leaf(d: Path, name: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    extfile = d / f"{name}.ext"
    extfile.write_text(ext + "\n")
    _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    _openssl("req", "-new", "-key", key, "-out", csr, "-subj", f"/CN={name}")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", extfile,
    )  # fmt: skip
    return cert, key


SERVER_USAGE = "extendedKeyUsage=serverAuth"
SERVER_EXT = f"subjectAltName=IP:127.0.0.1,DNS:localhost\n{SERVER_USAGE}"
CLIENT_EXT = "extendedKeyUsage=clientAuth"


def make_pki(d: Path) -> Pki:
    d.mkdir(parents=True, exist_ok=True)
    ca = _ca(d, "ca")
    other = _ca(d, "other-ca")
    server = _leaf(d, "server", ca, SERVER_EXT)
    client = _leaf(d, "client", ca, CLIENT_EXT)
    other_client = _leaf(d, "other-client", other, CLIENT_EXT)
    wrong = _leaf(d, "wrong-name", ca, f"subjectAltName=DNS:elsewhere.example\n{SERVER_USAGE}")
    return Pki(
        ca=ca[0],
        server_cert=server[0],
        server_key=server[1],
        client_cert=client[0],
        client_key=client[1],
        other_ca=other[0],
        other_client_cert=other_client[0],
        other_client_key=other_client[1],
        wrong_name_cert=wrong[0],
        wrong_name_key=wrong[1],
    )
