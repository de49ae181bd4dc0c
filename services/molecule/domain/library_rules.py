"""Library rules in plain Python (no I/O): who may do what with a library, and what a valid input is.

Access (DOMAIN.md "Libraries"): the owner has OWNER; an explicit grant gives VIEWER or EDITOR;
an ORGANIZATION-visible library gives every member of its organization at least VIEWER. The
highest of these applies.

Decisions:
- Nobody reaches another organization's library, system_admin included: DOMAIN.md says data
  belongs to an organization and is seen elsewhere only when shared on purpose (a submission), and
  a library is never shared that way. A library the caller cannot see answers 404, never 403, so
  its existence does not leak.
- Organization admins (pharma_admin, cro_admin; system_admin for its own organization) see every
  library of their organization in lists and may read its details and grants — they must be able to
  find a leaver's libraries — but they get no implicit level: the molecules and the distribution
  of a private library stay its owner's and grantees' (access_level UNSPECIFIED, 403 on contents).
- Changing visibility is sharing, so it needs OWNER even though other details need only EDITOR.
- Grants are VIEWER or EDITOR; there is no second owner and no ownership transfer.
- Creating a library needs a working role (scientist, technician or their admins); an auditor
  reads, it does not organise.
- Names are unique per owner ignoring case ("Hits" and "hits" would be indistinguishable in a
  picker); they are trimmed, 1–100 characters, without control characters.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum, IntEnum

from services.molecule.domain import properties
from services.runtime.auth import Principal
from services.runtime.db import canonical_uuid
from services.runtime.errors import AuthorizationError, NotFoundError, ValidationError
from services.runtime.validation import Violations

MAX_NAME_LENGTH = 100
MAX_DESCRIPTION_LENGTH = 2000
MAX_BATCH = 10_000
MAX_BAD_IDS_SHOWN = 10
DEFAULT_BINS = 20
MAX_BINS = 200
DEFAULT_PLOT_SIZE = (640, 400)
MIN_PLOT_PX = 100
MAX_PLOT_PX = 2000

CATEGORIES = ("GENERAL", "PROJECT", "LEAD_SERIES", "SCREENING", "REFERENCE", "CUSTOM")
VISIBILITIES = ("PRIVATE", "ORGANIZATION")
DEFAULT_CATEGORY = "GENERAL"
DEFAULT_VISIBILITY = "PRIVATE"
CREATOR_ROLES = ("pharma_admin", "pharma_scientist", "cro_admin", "cro_technician")
ORGANIZATION_ADMIN_ROLES = ("pharma_admin", "cro_admin")

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_EXCEPT_LINES = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # descriptions keep \t \n \r


class Level(IntEnum):
    """Access levels, numbered as molbridge.molecule.v1.LibraryAccess.Level (NONE is LEVEL_UNSPECIFIED)."""

    NONE = 0
    VIEWER = 1
    EDITOR = 2
    OWNER = 3


GRANTABLE_LEVELS = (Level.VIEWER, Level.EDITOR)


class Action(Enum):
    READ = Level.VIEWER  # molecules, distribution
    EDIT_DETAILS = Level.EDITOR  # name, description, category
    CHANGE_MOLECULES = Level.EDITOR
    CHANGE_VISIBILITY = Level.OWNER
    SHARE = Level.OWNER
    DELETE = Level.OWNER

    @property
    def needs(self) -> Level:
        return Level(self.value)


@dataclass(frozen=True)
class LibraryFacts:
    """What access depends on."""

    organization_id: str
    owner_id: str
    visibility: str


def access_level(principal: Principal, library: LibraryFacts, granted: Level = Level.NONE) -> Level:
    """The caller's level; `granted` is the caller's explicit grant on the library, if any."""
    if principal.organization_id != library.organization_id:
        return Level.NONE
    if principal.subject == library.owner_id:
        return Level.OWNER
    if library.visibility == "ORGANIZATION":
        return max(granted, Level.VIEWER)
    return granted


def is_organization_admin(principal: Principal) -> bool:
    return principal.has_any_role(*ORGANIZATION_ADMIN_ROLES)


def may_see(principal: Principal, library: LibraryFacts, level: Level) -> bool:
    """Whether the library exists for the caller (details and grants), whatever they may do with it."""
    if principal.organization_id != library.organization_id:
        return False
    return level >= Level.VIEWER or is_organization_admin(principal)


def require(principal: Principal, library: LibraryFacts, level: Level, action: Action) -> None:
    """404 for a library the caller cannot see, 403 for one they see but may not do `action` with."""
    if not may_see(principal, library, level):
        raise NotFoundError("Library not found")
    if level < action.needs:
        have = level.name if level else "no"
        raise AuthorizationError(
            f"This needs {action.needs.name} access to the library; you have {have} access",
            detail="LIBRARY_ACCESS_REQUIRED",
            metadata={"required_level": action.needs.name},
        )


def require_creator(principal: Principal) -> None:
    principal.require_any_role(*CREATOR_ROLES)


# ---- inputs ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Details:
    """Library details; in a change, None means "keep"."""

    name: str | None = None
    description: str | None = None
    category: str | None = None
    visibility: str | None = None


def check_new(name: str, description: str, category: str, visibility: str) -> Details:
    """A new library's details; empty category/visibility take the defaults."""
    violations = Violations()
    details = Details(
        name=_name(name, violations),
        description=_description(description, violations),
        category=_choice("category", category or DEFAULT_CATEGORY, CATEGORIES, violations),
        visibility=_choice("visibility", visibility or DEFAULT_VISIBILITY, VISIBILITIES, violations),
    )
    violations.raise_if_any("Invalid library")
    return details


def check_changes(name: str, description: str, category: str, visibility: str) -> Details:
    """Changes to a library: empty fields stay as they are (the UpdateLibrary contract)."""
    violations = Violations()
    details = Details(
        name=_name(name, violations) if name else None,
        description=_description(description, violations) if description else None,
        category=_choice("category", category, CATEGORIES, violations) if category else None,
        visibility=_choice("visibility", visibility, VISIBILITIES, violations) if visibility else None,
    )
    violations.raise_if_any("Invalid library changes")
    return details


def check_grant(library: LibraryFacts, user_id: str, level: Level) -> str:
    """The grantee's canonical id; NONE revokes."""
    canonical = canonical_uuid(user_id)
    violations = Violations()
    if canonical is None:
        violations.add("user_id", "must be a user id (UUID)")
    elif canonical == library.owner_id:
        violations.add("user_id", "the owner always has OWNER access")
    if level not in (Level.NONE, *GRANTABLE_LEVELS):
        violations.add("level", "must be VIEWER or EDITOR (unset revokes)")
    violations.raise_if_any("Invalid grant")
    assert canonical is not None
    return canonical


def check_batch(molecule_ids: Iterable[str]) -> tuple[list[str], list[str]]:
    """(canonical UUIDs in first-seen order without repeats, ids that are not UUIDs at all)."""
    ids = list(molecule_ids)
    if not ids:
        raise ValidationError("No molecule ids given", field_violations=[("molecule_ids", "at least one id")])
    if len(ids) > MAX_BATCH:
        raise ValidationError(
            f"Too many molecule ids: {len(ids)} (limit {MAX_BATCH:,} per request)",
            field_violations=[("molecule_ids", f"at most {MAX_BATCH} ids")],
        )
    seen: dict[str, None] = {}
    malformed: list[str] = []
    for raw in ids:
        canonical = canonical_uuid(raw)
        if canonical is None:
            malformed.append(raw)
        else:
            seen.setdefault(canonical, None)
    return list(seen), malformed


def molecules_not_found(bad_ids: list[str]) -> NotFoundError:
    """The batch is refused whole; up to MAX_BAD_IDS_SHOWN of the offending ids are named."""
    shown = bad_ids[:MAX_BAD_IDS_SHOWN]
    more = f" and {len(bad_ids) - len(shown)} more" if len(bad_ids) > len(shown) else ""
    return NotFoundError(
        f"{len(bad_ids)} molecule(s) not found: {', '.join(_short(i) for i in shown)}{more}",
        detail="MOLECULES_NOT_FOUND",
        metadata={"molecule_ids": ",".join(_short(i) for i in shown), "count": str(len(bad_ids))},
    )


def check_bins(bins: int) -> int:
    if bins == 0:
        return DEFAULT_BINS
    if not 1 <= bins <= MAX_BINS:
        raise ValidationError("Invalid bin count", field_violations=[("bins", f"between 1 and {MAX_BINS}")])
    return bins


def check_plot_size(width: int, height: int) -> tuple[int, int]:
    width, height = width or DEFAULT_PLOT_SIZE[0], height or DEFAULT_PLOT_SIZE[1]
    violations = Violations()
    for name, value in (("width", width), ("height", height)):
        if not MIN_PLOT_PX <= value <= MAX_PLOT_PX:
            violations.add(name, f"between {MIN_PLOT_PX} and {MAX_PLOT_PX} pixels")
    violations.raise_if_any("Invalid plot size")
    return width, height


def _name(name: str, violations: Violations) -> str:
    name = name.strip()
    if not name:
        violations.add("name", "required")
    elif len(name) > MAX_NAME_LENGTH:
        violations.add("name", f"at most {MAX_NAME_LENGTH} characters (got {len(name)})")
    elif _CONTROL.search(name):
        violations.add("name", "must not contain control characters")
    return name


def _description(description: str, violations: Violations) -> str:
    description = description.strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        violations.add("description", f"at most {MAX_DESCRIPTION_LENGTH} characters (got {len(description)})")
    elif _CONTROL_EXCEPT_LINES.search(description):
        violations.add("description", "must not contain control characters other than tabs and newlines")
    return description


def _choice(field_name: str, value: str, allowed: tuple[str, ...], violations: Violations) -> str:
    if value not in allowed:
        violations.add(field_name, f"one of {', '.join(allowed)}")
    return value


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"



# ---- listing and distributions --------------------------------------------------------------------


@dataclass(frozen=True)
class LibraryFilter:
    name_contains: str = ""
    categories: tuple[str, ...] = ()
    visibility: str = ""
    owner_id: str = ""


def check_filter(filters: LibraryFilter) -> None:
    violations = Violations()
    if filters.name_contains and len(filters.name_contains) > MAX_NAME_LENGTH:
        violations.add("name_contains", f"at most {MAX_NAME_LENGTH} characters")
    if filters.categories and set(filters.categories) - set(CATEGORIES):
        violations.add("categories", f"one of {', '.join(CATEGORIES)}")
    if filters.visibility and filters.visibility not in VISIBILITIES:
        violations.add("visibility", f"one of {', '.join(VISIBILITIES)}")
    violations.raise_if_any("Invalid library filter")


def numeric_property(name: str) -> properties.PropertyDefinition:
    """The property a distribution is drawn for: known (or custom_*) and numeric."""
    definition = properties.definition(name)
    if definition is None:
        raise ValidationError(
            f"Unknown property: {name[:64]!r}",
            field_violations=[("property", "a known property (GET /api/v1/molecules/properties) or custom_<name>")],
        )
    if definition.value_type not in (None, properties.ValueType.NUMERIC, properties.ValueType.INTEGER):
        raise ValidationError(
            f"{name} is not numeric", field_violations=[("property", "a distribution needs a numeric property")]
        )
    return definition
