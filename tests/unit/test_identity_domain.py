from datetime import UTC, datetime, timedelta

import pytest

from services.identity import domain
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, ValidationError

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def principal(roles: set[str], org: str = "org-a") -> Principal:
    return Principal(subject="u1", organization_id=org, organization_kind="PHARMA", roles=frozenset(roles))


@pytest.mark.parametrize(
    ("password", "missing"),
    [
        ("Short1!", {"at least 12 characters"}),
        ("alllowercase1!", {"an uppercase letter"}),
        ("ALLUPPERCASE1!", {"a lowercase letter"}),
        ("NoDigitsHere!!", {"a digit"}),
        ("NoSymbols12345", {"a symbol"}),
        ("", {"at least 12 characters", "a lowercase letter", "an uppercase letter", "a digit", "a symbol"}),
    ],
)
def test_password_policy_names_every_broken_rule(password: str, missing: set[str]) -> None:
    assert set(domain.password_problems(password)) == missing


def test_strong_password_passes_and_weak_one_raises_with_field_violations() -> None:
    domain.check_password("Correct-Horse-42")
    with pytest.raises(ValidationError) as error:
        domain.check_password("weak", "new_password")
    assert error.value.detail == "WEAK_PASSWORD"
    assert {f for f, _ in error.value.field_violations} == {"new_password"}
    assert len(error.value.field_violations) == 4


def test_fifth_failure_locks_for_thirty_minutes_and_resets_count() -> None:
    failed = 0
    for _ in range(4):
        outcome = domain.after_failed_login(failed, NOW)
        assert outcome.locked_until is None
        failed = outcome.failed_logins
    outcome = domain.after_failed_login(failed, NOW)
    assert outcome.locked_until == NOW + timedelta(minutes=30)
    assert outcome.failed_logins == 0
    assert domain.is_locked(outcome.locked_until, NOW + timedelta(minutes=29))
    assert not domain.is_locked(outcome.locked_until, NOW + timedelta(minutes=30, seconds=1))


def test_roles_must_fit_the_organization_kind_and_default_by_kind() -> None:
    violations = domain.Violations()
    assert domain.check_roles((), "PHARMA", violations) == ("pharma_scientist",)
    assert domain.check_roles((), "CRO", violations) == ("cro_technician",)
    assert not violations.items
    domain.check_roles(("cro_admin",), "PHARMA", violations)
    assert violations.items and violations.items[0][0] == "roles"


def test_role_hierarchy() -> None:
    admin = principal({"pharma_admin"})
    assert admin.has_any_role("pharma_scientist")
    assert not admin.has_any_role("cro_technician")
    assert principal({"system_admin"}).has_any_role("cro_admin", "auditor")
    assert not principal({"pharma_scientist"}).has_any_role("pharma_admin")


def test_user_admin_only_within_own_organization() -> None:
    domain.require_user_admin(principal({"pharma_admin"}), "org-a")
    with pytest.raises(AuthorizationError):
        domain.require_user_admin(principal({"pharma_admin"}), "org-b")
    with pytest.raises(AuthorizationError):
        domain.require_user_admin(principal({"pharma_scientist"}), "org-a")
    domain.require_user_admin(principal({"system_admin"}, org="platform"), "org-b")


def test_api_key_roles_never_exceed_the_creator() -> None:
    admin = principal({"pharma_admin"})
    assert domain.grantable_roles(admin, ()) == ("pharma_admin",)
    assert domain.grantable_roles(admin, ("pharma_scientist",)) == ("pharma_scientist",)
    with pytest.raises(AuthorizationError):
        domain.grantable_roles(admin, ("system_admin",))


def test_email_checks() -> None:
    violations = domain.Violations()
    domain.check_email("not-an-email", violations)
    domain.check_email("", violations)
    domain.check_email("ok@example.com", violations)
    assert [f for f, _ in violations.items] == ["email", "email"]
    assert domain.normalize_email("  Mixed@Example.COM ") == "mixed@example.com"
