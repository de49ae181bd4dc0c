"""The CLI's token store: per gateway, private to the user, in the XDG config dir."""

from __future__ import annotations

import stat
from pathlib import Path

from cli.credentials import CredentialStore, Profile, default_credentials_path


def profile(token: str, expires_at: float = 4102444800.0) -> Profile:
    return Profile("a@b.c", "u-1", f"access-{token}", f"refresh-{token}", expires_at)


def test_lives_in_the_xdg_config_dir(tmp_path: Path) -> None:
    xdg = {"XDG_CONFIG_HOME": str(tmp_path), "HOME": str(tmp_path / "home")}
    assert default_credentials_path(xdg) == tmp_path / "molbridge" / "credentials.json"
    home = {"HOME": str(tmp_path / "home")}
    assert default_credentials_path(home) == tmp_path / "home" / ".config" / "molbridge" / "credentials.json"


def test_profiles_are_kept_per_target_in_a_private_file(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "molbridge" / "credentials.json")
    assert store.get("127.0.0.1:8080") is None
    store.put("127.0.0.1:8080", profile("one"))
    store.put("gateway.example:443", profile("two"))
    store.put("127.0.0.1:8080", profile("three"))

    assert store.get("127.0.0.1:8080") == profile("three")
    assert store.get("gateway.example:443") == profile("two")
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(store.path.parent.stat().st_mode) == 0o700
    assert store.delete("127.0.0.1:8080") is True
    assert store.delete("127.0.0.1:8080") is False
    assert CredentialStore(store.path).get("gateway.example:443") == profile("two")
    assert [p.name for p in store.path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_an_unreadable_file_means_logged_out(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.path.write_text("not json")
    assert store.get("127.0.0.1:8080") is None
    store.path.write_text('{"profiles": {"127.0.0.1:8080": {"old_field": 1}}}')
    assert store.get("127.0.0.1:8080") is None


def test_expiry_leaves_a_margin() -> None:
    assert profile("x", expires_at=0).expired()
    assert not profile("x").expired()
