"""Tokens of the logged-in user, kept per gateway target in the user's config dir (mode 0600)."""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from molbridge_client import Tokens

# A login as stored here: the partner client's Tokens.
Profile = Tokens


def default_credentials_path(env: Mapping[str, str] = os.environ) -> Path:
    config_home = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME") or Path.home()) / ".config")
    return Path(config_home) / "molbridge" / "credentials.json"


class CredentialStore:
    """`{"profiles": {"<target>": Profile}}`: one login per gateway, so tokens never go to another."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_credentials_path()

    def for_target(self, target: str) -> TargetTokens:
        """The login for one gateway, as the partner client's TokenStore."""
        return TargetTokens(self, target)

    def get(self, target: str) -> Profile | None:
        raw = self._read().get(target)
        try:
            return Profile(**raw) if raw else None
        except TypeError:  # written by another version: treat as logged out
            return None

    def put(self, target: str, profile: Profile) -> None:
        profiles = self._read()
        profiles[target] = asdict(profile)
        self._write(profiles)

    def delete(self, target: str) -> bool:
        profiles = self._read()
        if profiles.pop(target, None) is None:
            return False
        self._write(profiles)
        return True

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Excludes other `molbridge` processes, so two never rotate the same refresh token (the second
        would present a spent token and revoke the session)."""
        self._ensure_dir()
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return {}
        profiles = data.get("profiles") if isinstance(data, dict) else None
        return profiles if isinstance(profiles, dict) else {}

    def _write(self, profiles: dict[str, dict[str, Any]]) -> None:
        self._ensure_dir()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        # Created 0600 from the start: the tokens are never readable by others, not even briefly.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"profiles": profiles}, out, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def _ensure_dir(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)


class TargetTokens:
    """molbridge_client.TokenStore over one target's entry: the CLI's processes share the file and lock."""

    def __init__(self, store: CredentialStore, target: str) -> None:
        self.store = store
        self.target = target

    def load(self) -> Tokens | None:
        return self.store.get(self.target)

    def save(self, tokens: Tokens) -> None:
        self.store.put(self.target, tokens)

    def clear(self) -> None:
        self.store.delete(self.target)

    def locked(self) -> AbstractContextManager[None]:
        return self.store.locked()
