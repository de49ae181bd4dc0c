"""A CRO service of the catalogue and its field rules; specification schemas (JSON Schema draft
2020-12) checked and applied. Pure: no I/O, no grpc."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from services.cro.domain.vocabulary import CRO_ADMIN, ServiceType
from services.runtime.auth import Principal
from services.runtime.errors import AuthorizationError, ValidationError

MAX_NAME = 200
MAX_DESCRIPTION = 5000
CURRENCY = re.compile(r"^[A-Z]{3}$")
MAX_TURNAROUND_DAYS = 3650


@dataclass
class CroService:
    id: str
    organization_id: str
    name: str
    service_type: ServiceType
    base_price: Decimal
    currency: str
    turnaround_days: int
    created_by: str
    description: str = ""
    specification_schema: dict[str, Any] = field(default_factory=dict)
    active: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None
    organization_name: str = ""


def require_cro_admin(principal: Principal) -> None:
    """Only a cro_admin of a CRO organization (or a system_admin) manages the catalogue."""
    if principal.is_system_admin:
        return
    if principal.organization_kind != "CRO" or not principal.has_any_role(CRO_ADMIN):
        raise AuthorizationError(
            "only cro_admin (of a CRO organization) or system_admin may manage CRO services",
            detail="ROLE_REQUIRED",
        )


def parse_money(name: str, text: str, violations: list[tuple[str, str]]) -> Decimal | None:
    """Decimal text ≥ 0 with at most 2 decimals; a problem goes to `violations`."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        violations.append((name, "a decimal number, e.g. 1250.00"))
        return None
    if not value.is_finite() or value < 0:
        violations.append((name, "a decimal number ≥ 0"))
        return None
    if value != value.quantize(Decimal("0.01")):
        violations.append((name, "at most 2 decimals"))
        return None
    return value.quantize(Decimal("0.01"))


def schema_violations(schema: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Problems of a specification schema (JSON Schema draft 2020-12); an empty schema accepts any object."""
    try:
        Draft202012Validator.check_schema(dict(schema))
    except SchemaError as error:
        where = "/".join(str(p) for p in error.absolute_path)
        return [("specification_schema", f"{error.message}" + (f" (at {where})" if where else ""))]
    return []


def specification_violations(schema: Mapping[str, Any], specifications: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The specifications' errors against the schema, one per field path (relative to the specifications;
    "" for the object itself), e.g. ("temperature", "'hot' is not of type 'number'")."""
    if not schema:
        return []
    validator = Draft202012Validator(dict(schema))
    found = []
    for error in sorted(validator.iter_errors(dict(specifications)), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "required" and isinstance(error.validator_value, list):
            # "x is a required property": name the missing field itself
            missing = [name for name in error.validator_value if name not in (error.instance or {})]
            for name in missing:
                found.append((f"{path}.{name}" if path else name, "required"))
            continue
        found.append((path, error.message))
    return found


@dataclass(frozen=True)
class ServiceFields:
    """Create/update input as text (from the request); None: not given (update keeps it)."""

    name: str | None = None
    description: str | None = None
    service_type: str | None = None
    base_price: str | None = None
    currency: str | None = None
    turnaround_days: int | None = None
    specification_schema: Mapping[str, Any] | None = None
    active: bool | None = None


def apply_fields(service: CroService, fields: ServiceFields, *, creating: bool) -> list[str]:
    """Checks and applies `fields` (every violation at once: 400); answers the names changed."""
    violations: list[tuple[str, str]] = []
    changed: list[str] = []

    def put(name: str, value: Any) -> None:
        if getattr(service, name) != value:
            setattr(service, name, value)
            changed.append(name)

    if fields.name is not None:
        name = fields.name.strip()
        if not name or len(name) > MAX_NAME:
            violations.append(("name", f"required, at most {MAX_NAME} characters"))
        else:
            put("name", name)
    if fields.description is not None:
        if len(fields.description) > MAX_DESCRIPTION:
            violations.append(("description", f"at most {MAX_DESCRIPTION} characters"))
        else:
            put("description", fields.description.strip())
    if fields.service_type is not None:
        if fields.service_type not in ServiceType.__members__:
            violations.append(("service_type", f"one of {', '.join(ServiceType)}"))
        else:
            put("service_type", ServiceType(fields.service_type))
    if fields.base_price is not None:
        price = parse_money("base_price", fields.base_price or "0", violations)
        if price is not None:
            put("base_price", price)
    if fields.currency is not None:
        currency = fields.currency.strip().upper()
        if not CURRENCY.match(currency):
            violations.append(("currency", "an ISO 4217 code of three capital letters, e.g. USD"))
        else:
            put("currency", currency)
    if fields.turnaround_days is not None:
        if not 1 <= fields.turnaround_days <= MAX_TURNAROUND_DAYS:
            violations.append(("turnaround_days", f"between 1 and {MAX_TURNAROUND_DAYS}"))
        else:
            put("turnaround_days", fields.turnaround_days)
    if fields.specification_schema is not None:
        problems = schema_violations(fields.specification_schema)
        violations += problems
        if not problems:
            put("specification_schema", dict(fields.specification_schema))
    if fields.active is not None:
        put("active", fields.active)
    if violations:
        summary = "; ".join(f"{name}: {problem}" for name, problem in violations)
        what = "the CRO service is not valid" if creating else "the change is not valid"
        raise ValidationError(f"{what}: {summary}", field_violations=violations)
    return changed
