"""Endpoint secrets at rest: AES-256-GCM under a key derived (HKDF-SHA256) from the service's secret key
(MOLBRIDGE_WEBHOOK_SECRET_KEY). The plaintext secret is shown once at creation and needed again only to
sign; a database dump alone does not reveal it."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12
_CONTEXT = b"molbridge webhook endpoint secret v1"


class SecretBox:
    def __init__(self, key_material: str) -> None:
        if len(key_material) < 16:
            raise ValueError("the webhook secret key needs at least 16 characters")
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_CONTEXT).derive(key_material.encode())
        self._aead = AESGCM(key)

    def seal(self, plaintext: str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext.encode(), _CONTEXT)

    def open(self, sealed: bytes) -> str:
        try:
            return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _CONTEXT).decode()
        except InvalidTag:
            raise ValueError("a webhook secret does not decrypt with this key (was the key changed?)") from None


def local_key(data_dir: Path) -> str:
    """Without MOLBRIDGE_WEBHOOK_SECRET_KEY (a developer's machine): a key generated once under the data
    directory (mode 0600). Production sets the variable, the same for every replica."""
    path = data_dir / "notification-webhook-secret.key"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()  # made by an earlier start (or by another process just now)
    with os.fdopen(fd, "w") as file:
        file.write(secrets.token_urlsafe(32))
    return path.read_text().strip()
