"""Webhook signing secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256) with the key from
MOLBRIDGE_WEBHOOK_SECRET_KEY, or, when unset (local runs), a key file under the data directory created
on first use (every process of one data directory reads the same file)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

KEY_FILE = "webhook-secret.key"


class SecretBox:
    """Encrypts and decrypts webhook secrets; `new_secret` makes one."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken as error:  # a different key: the configuration is wrong, not the row
            raise RuntimeError("A webhook secret cannot be decrypted: MOLBRIDGE_WEBHOOK_SECRET_KEY changed?") from error

    @staticmethod
    def new_secret() -> str:
        return "whsec_" + secrets.token_urlsafe(32)


def key_from_file(directory: Path) -> bytes:
    """The key in `directory`/webhook-secret.key, created (0600) by the first process that needs it."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / KEY_FILE
    if not path.exists():
        # Written whole under another name, then linked: a concurrent reader never sees half a key.
        draft = directory / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(Fernet.generate_key())
        try:
            os.link(draft, path)
        except FileExistsError:
            pass  # another process was first: its key is the one
        finally:
            draft.unlink()
    return path.read_bytes().strip()
