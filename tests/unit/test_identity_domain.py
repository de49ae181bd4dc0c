from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.identity import domain
from services.runtime.auth import Principal
from services.runtime.errors import AuthenticationError, AuthorizationError, ValidationError

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


def key_holder(key_roles: tuple[str, ...], creator_roles: tuple[str, ...], *, active: bool = True,
               revoked: bool = False) -> domain.KeyHolder:
    key = domain.ApiKey(
        id="k1", name="sync", organization_id="org-a", roles=key_roles, prefix="mbk_", created_by="u1",
        created_at=NOW, revoked_at=NOW if revoked else None,
    )
    return domain.KeyHolder(key=key, organization_kind="PHARMA", creator_active=active, creator_roles=creator_roles)


def test_an_api_key_acts_with_at_most_its_creators_current_roles() -> None:
    acting = key_holder(("pharma_admin",), ("pharma_admin",)).principal()
    assert acting is not None and acting.roles == frozenset({"pharma_admin"}) and acting.via == "api_key"
    # The creator was demoted: the admin role goes, an implied one stays.
    narrowed = key_holder(("pharma_admin", "pharma_scientist"), ("pharma_scientist",)).principal()
    assert narrowed is not None and narrowed.roles == frozenset({"pharma_scientist"})
    assert key_holder(("pharma_scientist",), ("pharma_admin",)).principal() is not None  # implied by admin
    assert key_holder(("pharma_admin",), ("pharma_scientist",)).principal() is None  # nothing left
    assert key_holder(("pharma_scientist",), ("pharma_scientist",), active=False).principal() is None
    assert key_holder(("pharma_scientist",), ("pharma_scientist",), revoked=True).principal() is None


def test_acting_principal_follows_the_account_not_the_token() -> None:
    user = domain.User(
        id="u1", email="a@b.test", full_name="A", organization_id="org-a", roles=("pharma_scientist",),
        active=True, mfa_enabled=False, locked_until=None, created_at=NOW, updated_at=NOW, last_login_at=None,
    )
    account = domain.Account(user=user, organization_kind="PHARMA", password_hash="", failed_logins=0,
                             mfa_secret=None, mfa_last_step=0)
    stale = principal({"pharma_admin"})
    assert account.acting_principal(stale).roles == frozenset({"pharma_scientist"})
    gone = domain.Account(**{**account.__dict__, "user": replace(user, active=False)})
    with pytest.raises(AuthenticationError) as refused:
        gone.acting_principal(stale)
    assert refused.value.detail == "TOKEN_REVOKED"


def test_every_login_refusal_is_one_and_the_same_answer() -> None:
    first, second = domain.invalid_credentials(), domain.invalid_credentials()
    assert (first.detail, first.message) == (second.detail, second.message) == (
        "INVALID_CREDENTIALS", "Wrong email or password",
    )
    assert "lock" not in first.message.lower()


def test_reset_emails_stop_after_three_per_window() -> None:
    assert [domain.may_send_reset_email(n) for n in range(5)] == [True, True, True, False, False]
    assert timedelta(hours=1) == domain.RESET_EMAIL_WINDOW


def test_a_signer_prints_their_full_name_or_else_their_email() -> None:
    user = domain.User(
        id="u1", email="ada@b.test", full_name="  Ada Lovelace ", organization_id="org-a",
        roles=("pharma_scientist", "pharma_admin"), active=True, mfa_enabled=False, locked_until=None,
        created_at=NOW, updated_at=NOW, last_login_at=None,
    )
    assert domain.signer_of(user) == domain.Signer(
        user_id="u1", printed_name="Ada Lovelace", email="ada@b.test", organization_id="org-a",
        roles=("pharma_admin", "pharma_scientist"),
    )
    assert domain.signer_of(replace(user, full_name=" ")).printed_name == "ada@b.test"


def test_only_a_person_signs() -> None:
    domain.require_person(principal({"pharma_scientist"}))
    key = Principal(subject="k1", organization_id="org-a", organization_kind="PHARMA",
                    roles=frozenset({"pharma_scientist"}), via="api_key")
    with pytest.raises(AuthorizationError) as refused:
        domain.require_person(key)
    assert "signatures need a person" in refused.value.message
    wrong, locked = domain.signer_not_confirmed(locked=False), domain.signer_not_confirmed(locked=True)
    assert (wrong.detail, locked.detail) == ("SIGNER_NOT_CONFIRMED", "ACCOUNT_LOCKED")
    assert "lock" in wrong.message and "30 minutes" in locked.message


def test_what_needs_a_login_refuses_an_api_key_as_not_authorized() -> None:
    domain.require_user(principal({"pharma_scientist"}))
    key = Principal(subject="k1", organization_id="org-a", organization_kind="PHARMA",
                    roles=frozenset({"pharma_admin"}), via="api_key")
    with pytest.raises(AuthorizationError) as refused:  # 403: a valid credential that may not do this
        domain.require_user(key)
    assert refused.value.detail == "USER_REQUIRED" and "login" in refused.value.message
