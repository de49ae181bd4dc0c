"""Molecule rules in plain Python (no I/O): what a valid new molecule, update, flag or picture request is,
and which status changes a user may make. See service/molecules.py for the decisions they implement."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from services.molecule.domain import chemistry, properties
from services.molecule.domain.imports import MAX_NAME_LENGTH, PropertyValue, stored_value
from services.molecule.domain.vocabulary import (
    ARCHIVED,
    AVAILABLE,
    FLAG_TYPES,
    HELD_STATUSES,
    IMPORTED,
    STATUSES,
    USER_STATUSES,
)
from services.runtime.errors import PreconditionError, ValidationError
from services.runtime.validation import Violations

MAX_BATCH = 1000
MAX_NOTES_LENGTH = 2000
MAX_UNITS_LENGTH = 32
PRIORITY = "PRIORITY"
LEVELS = ("HIGH", "MEDIUM", "LOW")
DEFAULT_IMAGE_PX = 300
IMAGE_TYPES = {"svg": "image/svg+xml", "png": "image/png"}


@dataclass(frozen=True, slots=True)
class PropertyInput:
    name: str
    value: float | int | str | bool | None  # None: no value (UpdateMolecule: remove the IMPORTED value)
    units: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class NewMolecule:
    smiles: str
    name: str = ""
    properties: Sequence[PropertyInput] = ()


@dataclass(frozen=True, slots=True)
class Outcome:
    index: int
    outcome: str  # registered | merged | rejected
    molecule_id: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Image:
    content_type: str
    data: bytes


class Rejected(Exception):
    """One molecule of a batch is refused; `field` names what is wrong with it."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def invalid(field_name: str, reason: str) -> ValidationError:
    return ValidationError(f"Invalid {field_name}: {reason}", field_violations=[(field_name, reason)])


def check_image_request(fmt: str, width: int, height: int) -> tuple[str, int, int]:
    """(kind, width, height) of a picture request, defaults filled in; 400 naming every bad field."""
    kind = (fmt or "svg").strip().lower()
    width, height = width or DEFAULT_IMAGE_PX, height or DEFAULT_IMAGE_PX
    violations = Violations()
    if kind not in IMAGE_TYPES:
        violations.add("format", "svg or png")
    low, high = chemistry.MIN_DEPICTION_PX, chemistry.MAX_DEPICTION_PX
    for name, size in (("width", width), ("height", height)):
        if not low <= size <= high:
            violations.add(name, f"{name} must be {low}–{high} px, got {size}")
    violations.raise_if_any("Invalid picture request: {first}")
    return kind, width, height


def check_batch_size(count: int) -> None:
    if not count:
        raise invalid("molecules", "at least one molecule")
    if count > MAX_BATCH:
        raise invalid("molecules", f"at most {MAX_BATCH} molecules per request, got {count}")


def check_update(name: str, status: str) -> str:
    """The trimmed new name; 400 for a name too long or an unknown status."""
    new_name = name.strip()
    violations = Violations()
    if len(new_name) > MAX_NAME_LENGTH:
        violations.add("name", f"at most {MAX_NAME_LENGTH} characters")
    if status and status not in STATUSES:
        violations.add("status", f"one of {', '.join(STATUSES)}")
    violations.raise_if_any("Invalid update: {first}")
    return new_name


def check_flag(flag_type: str, level: str, notes: str) -> None:
    violations = Violations()
    if flag_type not in FLAG_TYPES:
        violations.add("type", f"one of {', '.join(FLAG_TYPES)}")
    elif flag_type == PRIORITY and level not in LEVELS:
        violations.add("level", f"PRIORITY needs a level: {', '.join(LEVELS)}")
    elif flag_type != PRIORITY and level:
        violations.add("level", "only PRIORITY flags have a level")
    if len(notes) > MAX_NOTES_LENGTH:
        violations.add("notes", f"at most {MAX_NOTES_LENGTH} characters")
    violations.raise_if_any("Invalid flag: {first}")


def check_flag_type(flag_type: str) -> None:
    if flag_type not in FLAG_TYPES:
        raise invalid("type", f"one of {', '.join(FLAG_TYPES)}")


def check_transition(current: str, target: str) -> None:
    """Users move a molecule between AVAILABLE and ARCHIVED, never while a submission holds it."""
    if target not in USER_STATUSES:
        raise ValidationError(
            f"Status {target} is set by the submission workflow, not by hand",
            detail="STATUS_RESERVED",
            field_violations=[("status", f"one of {', '.join(USER_STATUSES)}")],
        )
    if current in HELD_STATUSES:
        raise PreconditionError(
            f"The molecule is held by a submission (status {current}): its status cannot change by hand",
            detail="MOLECULE_IN_SUBMISSION",
        )


def follows_submission(current: str, set_at: datetime | None, target: str, event_at: datetime) -> bool:
    """Whether a submission's transition (at `event_at`) moves a molecule now `current` to `target`.
    Events may arrive out of order: one older than the event that last set the status (`set_at`) is
    stale. A release (AVAILABLE) never brings back a molecule its owners archived; an unknown status
    is not ours to set."""
    if target not in STATUSES or target == ARCHIVED:
        return False
    if set_at is not None and event_at < set_at:
        return False
    return not (target == AVAILABLE and current == ARCHIVED)


def checked_input(new: NewMolecule) -> tuple[str, dict[str, PropertyValue]]:
    """A new molecule's name and IMPORTED values, or Rejected naming the field."""
    name = new.name.strip()
    if len(name) > MAX_NAME_LENGTH:
        raise Rejected("name", f"at most {MAX_NAME_LENGTH} characters")
    values: dict[str, PropertyValue] = {}
    for i, given in enumerate(new.properties):
        value = _checked_value(given, f"properties[{i}]")
        if value is None:
            raise Rejected(f"properties[{i}].value", f"a value is required for {given.name}")
        if given.name.strip() in values:
            raise Rejected(f"properties[{i}].name", f"{given.name.strip()} is given twice")
        values[given.name.strip()] = value
    return name, values


def checked_values(given: Sequence[PropertyInput]) -> dict[str, PropertyValue | None]:
    """UpdateMolecule's values by name (None: remove); 400 naming the first bad one."""
    out: dict[str, PropertyValue | None] = {}
    for i, value in enumerate(given):
        try:
            checked = _checked_value(value, f"properties[{i}]")
            if value.name.strip() in out:
                raise Rejected(f"properties[{i}].name", f"{value.name.strip()} is given twice")
        except Rejected as problem:
            raise invalid(problem.field, problem.reason) from None
        out[value.name.strip()] = checked
    return out


def _checked_value(given: PropertyInput, at: str) -> PropertyValue | None:
    name = given.name.strip()
    definition = properties.definition(name)
    if definition is None:
        raise Rejected(f"{at}.name", f"unknown property {name[:64]!r} (a known property or custom_<name>)")
    if given.source and given.source != IMPORTED:
        raise Rejected(f"{at}.source", f"only IMPORTED values can be given here, not {given.source}")
    units = given.units.strip()
    if definition.custom:
        if len(units) > MAX_UNITS_LENGTH:
            raise Rejected(f"{at}.units", f"at most {MAX_UNITS_LENGTH} characters")
    elif units and units != definition.units:
        raise Rejected(f"{at}.units", f"{name} is stored in {definition.units or 'no units'}, not {units!r}")
    if given.value is None:
        return None
    if not isinstance(given.value, (int, float, str)):  # a JSON list or object (bool is an int)
        raise Rejected(f"{at}.value", "a number, text or boolean, not a list or object")
    try:
        number, text, catalogue_units = stored_value(properties.check_value(name, given.value))
    except properties.PropertyValueError as error:
        raise Rejected(f"{at}.value", error.reason) from None
    return number, text, units if definition.custom else catalogue_units
