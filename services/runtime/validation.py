"""Collecting field violations, so one 400 names every bad field (AIP-193 BadRequest.field_violations)."""

from __future__ import annotations

from services.runtime.errors import ValidationError


class Violations:
    """    violations = Violations()
        if len(name) > 100: violations.add("name", "at most 100 characters")
        violations.raise_if_any("Invalid update: {first}")
    """

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field_name: str, description: str) -> None:
        self.items.append((field_name, description))

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, message: str) -> None:
        """One ValidationError naming every violation; `{first}` in `message` is the first one's description."""
        if self.items:
            raise ValidationError(message.replace("{first}", self.items[0][1]), field_violations=list(self.items))
