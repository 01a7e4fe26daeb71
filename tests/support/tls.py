"""Throwaway certificate authorities and server certificates for TLS tests, made with the openssl CLI."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Ca:
    """A self-signed CA: its certificate (what clients trust) and its key (what signs servers)."""

    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the TLS tests need the openssl command")
    subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)


def make_ca(directory: Path, name: str) -> Ca:
    """A new CA (EC P-256, valid 2 days) named `name`, under `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = Ca(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca.key, "-out", ca.cert, "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
    )  # fmt: skip
    return ca


def make_server_pem(ca: Ca, directory: Path, name: str, dns: str) -> Path:
    """A server key and certificate for the DNS name `dns` only (no IP address), signed by `ca`, in
    one PEM file: the unencrypted PKCS#8 key, then the certificate (Kafka's PEM keystore)."""
    key, csr, cert = (directory / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", f"/CN={dns}",
    )  # fmt: skip
    extensions = directory / f"{name}.ext"
    extensions.write_text(f"subjectAltName=DNS:{dns}\nextendedKeyUsage=serverAuth\n")
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca.cert, "-CAkey", ca.key, "-CAcreateserial",
        "-out", cert, "-days", "2", "-extfile", extensions,
    )  # fmt: skip
    pem = directory / f"{name}.pem"
    pem.write_text(key.read_text() + cert.read_text())
    return pem
