"""Uploads and their limits (no I/O): what an uploaded CSV file is, where its bytes live, how big it may be."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from services.runtime import csv_format

DEFAULT_MAX_UPLOAD_BYTES, DEFAULT_MAX_ROWS = 100 << 20, 500_000  # 100 MiB


@dataclass(frozen=True, slots=True)
class ImportLimits:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_rows: int = DEFAULT_MAX_ROWS

    @property
    def csv(self) -> csv_format.CsvLimits:
        """For csv_format.plan_chunks / iter_rows / preview: the row limit is enforced while reading."""
        return csv_format.CsvLimits(max_rows=self.max_rows)


@dataclass(frozen=True, slots=True)
class StoredUpload:
    storage_key: str
    organization_id: str
    filename: str
    size_bytes: int
    content_type: str
    created_by: str
    created_at: datetime | None = None

    @property
    def object_key(self) -> str:
        return upload_object_key(self.organization_id, self.storage_key)


def upload_object_key(organization_id: str, storage_key: str) -> str:
    """Where an upload's bytes live in object storage."""
    return f"uploads/{organization_id}/{storage_key}"
