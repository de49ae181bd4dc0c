"""A CSV request body streamed into object storage (services/runtime/csv_uploads.py): what is stored, its
SHA-256, its name, and nothing left behind when the caller's recording fails. Local storage in a temp dir;
the molecule service's upload RPC is covered end to end by tests/integration/test_molecule_upload.py."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from services.runtime.csv_format import CsvFormatError
from services.runtime.csv_uploads import StoredCsv, stored_csv
from services.runtime.errors import ValidationError
from services.runtime.storage import FileTooLargeError, LocalStorage

BOUNDARY = "----csvrt"
CSV = b"smiles,name,ic50\r\n" + b"".join(b"C%d,mol %d,%d.5\r\n" % (i, i, i) for i in range(5_000))


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def _form(*fields: tuple[str, str | None, bytes]) -> bytes:
    body = b""
    for name, filename, content in fields:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        body += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


async def _store(
    storage: LocalStorage,
    content_type: str,
    body: bytes,
    *,
    cut: int = 7_001,
    max_bytes: int = 10 << 20,
    disposition: str = "",
) -> StoredCsv:
    async with stored_csv(
        storage,
        "results/org-1/abc",
        content_type,
        _chunks(body, cut),
        max_bytes=max_bytes,
        default_filename="results.csv",
        disposition=disposition,
    ) as stored:
        return stored


def _objects(root: Path) -> Sequence[Path]:
    return [path for path in root.rglob("*") if path.is_file()]


async def test_a_raw_body_is_stored_with_its_sha256_size_and_default_name(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    stored = await _store(storage, "text/csv; charset=utf-8", CSV)
    assert stored == StoredCsv(
        "results/org-1/abc", "results.csv", len(CSV), "text/csv", hashlib.sha256(CSV).hexdigest()
    )
    assert await storage.get_bytes(stored.object_key) == CSV


async def test_a_multipart_file_field_is_hashed_alone_and_keeps_its_name(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    body = _form(("note", None, b"first batch"), ("file", "plate 7.csv", CSV), ("other", None, b"x"))
    for cut in (61, 4_099, 65_536):  # however the body is cut
        stored = await _store(storage, f"multipart/form-data; boundary={BOUNDARY}", body, cut=cut)
        assert (stored.filename, stored.size_bytes) == ("plate 7.csv", len(CSV))
        assert stored.sha256 == hashlib.sha256(CSV).hexdigest()
        assert stored.media_type == "multipart/form-data"


async def test_a_raw_body_takes_its_name_from_content_disposition(tmp_path: Path) -> None:
    stored = await _store(
        LocalStorage(tmp_path), "text/plain", CSV, disposition='attachment; filename="lab/run 3.csv"'
    )
    assert stored.filename == "run 3.csv"


async def test_refusals_leave_nothing_stored(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(ValidationError) as raised:
        await _store(storage, "application/json", CSV)
    assert raised.value.detail == "UNSUPPORTED_MEDIA_TYPE"
    with pytest.raises(CsvFormatError) as not_text:
        await _store(storage, "text/csv", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 100)
    assert not_text.value.detail == "NOT_TEXT"
    with pytest.raises(FileTooLargeError):
        await _store(storage, "text/csv", CSV, max_bytes=100_000)
    with pytest.raises(ValidationError) as missing:
        await _store(storage, f"multipart/form-data; boundary={BOUNDARY}", _form(("data", "a.csv", CSV)))
    assert missing.value.detail == "MISSING_FILE"
    assert _objects(tmp_path) == []


async def test_an_error_while_the_caller_records_the_upload_removes_the_object(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    with pytest.raises(RuntimeError, match="the caller's table refused it"):
        async with stored_csv(
            storage, "uploads/o/k", "text/csv", _chunks(CSV, 4096), max_bytes=1 << 20, default_filename="u.csv"
        ) as stored:
            assert await storage.get_bytes(stored.object_key) == CSV
            raise RuntimeError("the caller's table refused it")
    assert _objects(tmp_path) == []
