"""Identity's use cases, by area; `IdentityService` offers all of them to the servicer and the CLI.

Each use case reads: check role → load → ask the domain → save → record (audit and revocation
events go to the outbox with the change).
"""

from services.identity.service.api_keys import ApiKeyUseCases
from services.identity.service.audit import CONSUMER_NAME, AuditTrail, AuditUseCases
from services.identity.service.base import UseCases
from services.identity.service.organizations import OrganizationUseCases
from services.identity.service.passwords import PasswordUseCases
from services.identity.service.sessions import MFA_AUDIENCE, SessionUseCases
from services.identity.service.signers import SignerUseCases
from services.identity.service.users import PLATFORM_ORGANIZATION, Bootstrap, UserUseCases


class IdentityService(
    SignerUseCases, SessionUseCases, PasswordUseCases, UserUseCases, OrganizationUseCases, ApiKeyUseCases, AuditUseCases
):
    """Every identity use case over one set of dependencies (see UseCases)."""


__all__ = [
    "CONSUMER_NAME",
    "MFA_AUDIENCE",
    "PLATFORM_ORGANIZATION",
    "ApiKeyUseCases",
    "AuditTrail",
    "AuditUseCases",
    "Bootstrap",
    "IdentityService",
    "OrganizationUseCases",
    "PasswordUseCases",
    "SessionUseCases",
    "SignerUseCases",
    "UseCases",
    "UserUseCases",
]
