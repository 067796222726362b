"""Doctors' Ed25519 keys: canonical payload bytes, key generation, signing and verification.

The platform holds only public keys. A doctor's private key stays on the doctor's device (the CLI
`python -m o2o doctor keygen|sign` is the reference client).
"""

import base64
import binascii
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

PUBLIC_KEY_BYTES = 32
SIGNATURE_BYTES = 64


class KeyFormatError(ValueError):
    """A key, signature or base64 value that is not what it claims to be."""


def canonical_bytes(document: Any) -> bytes:
    """Serialise a JSON document one way only: sorted keys, no spaces, UTF-8."""
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64decode(value: str, *, what: str = "value") -> bytes:
    """Decode standard base64 strictly (no stray characters), or raise KeyFormatError."""
    try:
        return base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFormatError(f"The {what} is not valid base64.") from None


def parse_public_key(value: str) -> bytes:
    """Return the raw 32-byte Ed25519 public key in a base64 string, or raise KeyFormatError."""
    raw = b64decode(value, what="public key")
    if len(raw) != PUBLIC_KEY_BYTES:
        raise KeyFormatError(
            f"The public key must be the raw {PUBLIC_KEY_BYTES}-byte Ed25519 key in base64 "
            f"(got {len(raw)} bytes)."
        )
    try:
        Ed25519PublicKey.from_public_bytes(raw)
    except ValueError:
        raise KeyFormatError("The public key is not a valid Ed25519 key.") from None
    return raw


def verify(public_key: bytes, payload: bytes, signature: bytes) -> bool:
    """Say whether signature is the Ed25519 signature of payload by public_key."""
    if len(signature) != SIGNATURE_BYTES:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, payload)
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_private_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """The base64 of the raw public key, as `POST /doctors/me/keys` takes it."""
    raw = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return b64encode(raw)


def sign(private_key: Ed25519PrivateKey, payload: bytes) -> bytes:
    return private_key.sign(payload)


def write_private_key(private_key: Ed25519PrivateKey, path: Path) -> None:
    """Write the key as unencrypted PKCS#8 PEM, readable by the owner only; never overwrite."""
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL: an existing key is never replaced by accident; 0600 from the first byte written.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.chmod(path, 0o600)


def read_private_key(path: Path) -> Ed25519PrivateKey:
    """Load an Ed25519 private key written by `write_private_key`, or raise KeyFormatError."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise KeyFormatError(f"{path} is not an unencrypted PEM private key.") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFormatError(f"{path} is not an Ed25519 key.")
    return key
