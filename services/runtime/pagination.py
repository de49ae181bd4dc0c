"""List paging (page from 1, page_size default 50, max 100) and the meta every list answers with."""

from __future__ import annotations

from dataclasses import dataclass

from molbridge.common.v1.page_pb2 import PageMeta

from services.runtime.errors import ValidationError

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class PageRequest:
    page: int
    page_size: int

    @classmethod
    def of(cls, page: int, page_size: int) -> PageRequest:
        """Proto zero values mean "not given"; out-of-range values are the caller's mistake."""
        violations = []
        if page < 0:
            violations.append(("page", "page starts at 1"))
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            violations.append(("page_size", f"page_size must be between 1 and {MAX_PAGE_SIZE}"))
        if violations:
            raise ValidationError("Invalid paging parameters", field_violations=violations)
        return cls(page=page or 1, page_size=page_size or DEFAULT_PAGE_SIZE)

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.page_size

    def meta(self, total: int) -> PageMeta:
        return PageMeta(page=self.page, page_size=self.page_size, total=total)
