"""Encryption at rest for provider credentials and pipeline secrets (AES-256-GCM, a fresh nonce per value)."""

from __future__ import annotations

import base64
import logging
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

log = logging.getLogger(__name__)

_VERSION = "v1"
_NONCE_BYTES = 12
KEY_FILE_NAME = "secret.key"
#: The alembic config attribute carrying the master secret to migrations that seal stored secrets.
MASTER_SECRET_ATTRIBUTE = "callbridge_master_secret"


def derive_key(master: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose (`secrets`, `join-tokens`, ...) from the master secret."""
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=f"callbridge/{purpose}".encode()
    ).derive(master.encode())


class SecretDecryptionError(Exception):
    """A stored secret cannot be decrypted (wrong CALLBRIDGE_SECRET_KEY, or tampered data)."""


class SecretBox:
    """Encrypts short strings. `context` binds a value to its place, so values can't be swapped around."""

    def __init__(self, master_secret: str) -> None:
        self._aead = AESGCM(derive_key(master_secret, "secrets"))

    def encrypt(self, plaintext: str, context: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, plaintext.encode(), context.encode())
        return f"{_VERSION}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, token: str, context: str) -> str:
        version, _, body = token.partition(".")
        if version != _VERSION:
            raise SecretDecryptionError(f"unknown secret format {version!r}")
        try:
            raw = base64.urlsafe_b64decode(body)
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], context.encode()).decode()
        except (InvalidTag, ValueError) as exc:
            raise SecretDecryptionError(
                "stored secret cannot be decrypted with this CALLBRIDGE_SECRET_KEY"
            ) from exc


def load_master_secret(configured: str, data_dir: Path) -> str:
    """CALLBRIDGE_SECRET_KEY, else a key generated once under the data directory (with a warning)."""
    if configured:
        return configured
    path = data_dir / KEY_FILE_NAME
    if path.is_file():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it a moment ago
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(key + "\n")
    log.warning(
        "CALLBRIDGE_SECRET_KEY is not set: generated %s. Back it up; without it the stored provider "
        "credentials cannot be decrypted. Set CALLBRIDGE_SECRET_KEY in production.",
        path,
    )
    return key
