"""Where a session's tokens live. The client keeps them in memory by default; the CLI keeps them in a
file shared by its processes (cli/credentials.py) through the same TokenStore protocol."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Protocol

# Refresh a little before the access token expires, so a call never races its expiry.
EXPIRY_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Tokens:
    email: str
    user_id: str
    access_token: str
    refresh_token: str
    expires_at: float  # Unix time the access token expires

    def expired(self) -> bool:
        return time.time() >= self.expires_at - EXPIRY_MARGIN_SECONDS


class TokenStore(Protocol):
    def load(self) -> Tokens | None: ...

    def save(self, tokens: Tokens) -> None: ...

    def clear(self) -> None: ...

    def locked(self) -> AbstractContextManager[None]:
        """Held while refreshing, so two users of one store never rotate the same refresh token (the
        second would present a spent token, and the server revokes the whole session)."""
        ...


class MemoryTokenStore:
    """Tokens of one Client object, gone when the process ends."""

    def __init__(self) -> None:
        self._tokens: Tokens | None = None
        self._lock = threading.Lock()

    def load(self) -> Tokens | None:
        return self._tokens

    def save(self, tokens: Tokens) -> None:
        self._tokens = tokens

    def clear(self) -> None:
        self._tokens = None

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._lock:
            yield
