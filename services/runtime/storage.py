"""Object storage, the port uploads and reports go through: a local directory by default, S3 via boto3.

Keys are opaque paths such as `uploads/<org>/<uuid>` or `reports/<job>/errors.csv`. Files may be
100 MB, so writes stream (`put_stream` never holds the whole file; S3 gets a multipart upload) and
reads hand back a sequential stream: `open_reader` for a whole object, `read_range` for the bytes
[start, end) that a CSV worker on any machine needs for its chunk.

The coroutine methods run boto3 (blocking) in threads. `open_reader` and `read_range` are plain
blocking calls returning a blocking stream: whoever reads the stream is already in a thread (the CSV
module is synchronous), so open and read there together.

A missing object raises NotFoundError; an S3 failure IntegrationError; a stream over its size limit
FileTooLargeError, after the partial object has been removed.

Lifecycle (S3; applied at start by `make_storage`, see `lifecycle_rules`): a CSV upload is stored
*staged* (tagged); starting an import keeps it (`keep` removes the tag). Staged uploads under `uploads/`
and generated reports under `reports/` (error reports, rebuilt on every request for a link) expire.
Records never do: `documents/` (versions and signed PDFs), `results/` (CRO results files) and
`audit-anchors/` must be kept 7 years (21 CFR Part 11), so no rule names them and they are never
tagged. The local directory (development) keeps everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import quote

import boto3
import botocore.config
import botocore.exceptions

from services.runtime.errors import IntegrationError, NotFoundError, ValidationError
from services.runtime.settings import Settings

MIB = 1 << 20
OCTET_STREAM = "application/octet-stream"
S3_PART_BYTES = 8 * MIB  # S3's minimum part is 5 MiB; 10,000 parts of 8 MiB cover 80 GB
# Segments start with a letter or digit: no "..", no hidden names (the local adapter's temporary files).
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]*(?:/[A-Za-z0-9][A-Za-z0-9._=-]*)*$")
_MAX_KEY_LENGTH = 512

UPLOADS_PREFIX, REPORTS_PREFIX = "uploads/", "reports/"
STAGED_TAG = ("molbridge-lifecycle", "staged")  # an upload no import has used (yet)
RULE_PREFIX = "molbridge-"  # our lifecycle rules' IDs; other rules on the bucket are left as they are

T = TypeVar("T")


class FileTooLargeError(ValidationError):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(
            f"the file is larger than {describe_size(max_bytes)}, the upload limit",
            detail="FILE_TOO_LARGE",
            metadata={"limit": str(max_bytes)},
        )


def describe_size(size: int) -> str:
    """`100 MiB (104,857,600 bytes)`: the exact figure, and one a person can read."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", MIB), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:.4g} {unit} ({size:,} bytes)"
    return f"{size:,} bytes"


def check_key(key: str) -> str:
    if len(key) > _MAX_KEY_LENGTH or not _KEY.match(key):
        raise ValueError(f"invalid object key {key!r}")
    return key


class ObjectStorage(ABC):
    @abstractmethod
    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, staged: bool = False
    ) -> int:
        """Store the chunks as one object, returning its size; nothing is left behind on failure.
        `staged`: the object expires (see the module docstring) unless `keep` is called."""

    @abstractmethod
    async def keep(self, key: str) -> None:
        """A staged object is used after all (an upload being imported): it no longer expires."""

    @abstractmethod
    async def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> None: ...

    @abstractmethod
    async def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    async def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""

    @abstractmethod
    async def presigned_url(
        self, key: str, expires_s: int, *, download_name: str | None = None, content_type: str | None = None
    ) -> str | None:
        """A URL anyone may GET for `expires_s` seconds, or None when the storage cannot sign one; the
        answer names `download_name` in its Content-Disposition and carries `content_type` when given."""

    @abstractmethod
    def open_reader(self, key: str) -> BinaryIO:
        """The whole object as a sequential stream (blocking; close it when done)."""

    @abstractmethod
    def read_range(self, key: str, start: int, end: int) -> BinaryIO:
        """Bytes [start, end) of the object as a stream (blocking; close it when done)."""


# --- local directory ---------------------------------------------------------------------------------


class LocalStorage(ObjectStorage):
    """Objects as files under `root`; a write goes to a hidden temporary file renamed into place."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, staged: bool = False
    ) -> int:
        path = self._path(key)
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        size = 0
        try:
            with open(temporary, "wb") as file:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > max_bytes:
                        raise FileTooLargeError(max_bytes)
                    await asyncio.to_thread(file.write, chunk)
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        return size

    async def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> None:
        await self.put_stream(key, _once(data), max_bytes=len(data))

    async def keep(self, key: str) -> None:
        return None  # nothing expires in the local directory

    async def get_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise _not_found() from None

    async def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    async def presigned_url(
        self, key: str, expires_s: int, *, download_name: str | None = None, content_type: str | None = None
    ) -> str | None:
        return None  # nothing serves the directory: the service streams the object itself

    def open_reader(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise _not_found() from None

    def read_range(self, key: str, start: int, end: int) -> BinaryIO:
        _check_range(start, end)
        file = self.open_reader(key)
        file.seek(start)
        return cast(BinaryIO, io.BufferedReader(_Window(file, end - start)))


class _Window(io.RawIOBase):
    """At most `length` bytes of a file from its current position."""

    def __init__(self, file: BinaryIO, length: int) -> None:
        self._file, self._left = file, length

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self._left)
        if wanted <= 0:
            return 0
        got = self._file.readinto(memoryview(buffer)[:wanted])  # type: ignore[attr-defined]
        self._left -= got
        return int(got)

    def close(self) -> None:
        self._file.close()
        super().close()


# --- S3 --------------------------------------------------------------------------------------------------


class S3Storage(ObjectStorage):
    """One bucket through boto3 (AWS, or any S3-compatible server given `endpoint_url`).

    Credentials not given here come from boto3's usual chain (environment, profile, instance role).
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        session_token: str | None = None,
        part_bytes: int = S3_PART_BYTES,
    ) -> None:
        if part_bytes < 5 * MIB:
            raise ValueError("S3 parts must be at least 5 MiB")
        self.bucket, self.region, self._part_bytes = bucket, region, part_bytes
        config = botocore.config.Config(
            signature_version="s3v4",
            # S3-compatible servers (MinIO, moto, Ceph) serve buckets as paths, not host names.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
        )
        session = boto3.session.Session(  # a session of our own: the default one is not thread-safe
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            aws_session_token=session_token,
            region_name=region,
        )
        self._client: Any = session.client("s3", endpoint_url=endpoint_url, config=config)

    def create_bucket_if_missing(self) -> None:
        """Blocking; for development and test servers (S3_CREATE_BUCKET=1), called at start."""
        try:
            self._client.head_bucket(Bucket=self.bucket)
            return
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) not in ("404", "NoSuchBucket", "NotFound"):
                raise _s3_error(exc) from exc
        # us-east-1 is the one region that must not be named
        where = {} if self.region == "us-east-1" else {"LocationConstraint": self.region}
        extra = {"CreateBucketConfiguration": where} if where else {}
        _s3(lambda: self._client.create_bucket(Bucket=self.bucket, **extra))

    async def _call(self, method: str, key: str, **kwargs: Any) -> Any:
        call = getattr(self._client, method)
        return await asyncio.to_thread(_s3, lambda: call(Bucket=self.bucket, Key=key, **kwargs))

    async def put_stream(
        self, key: str, chunks: AsyncIterator[bytes], *, max_bytes: int, staged: bool = False
    ) -> int:
        check_key(key)
        tagging = {"Tagging": "=".join(STAGED_TAG)} if staged else {}
        buffer = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []

        async def ship(data: bytes) -> None:
            reply = await self._call(
                "upload_part", key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=data
            )
            parts.append({"ETag": reply["ETag"], "PartNumber": len(parts) + 1})

        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLargeError(max_bytes)
                buffer += chunk
                while len(buffer) >= self._part_bytes:
                    if upload_id is None:
                        upload_id = (await self._call("create_multipart_upload", key, **tagging))["UploadId"]
                    part = bytes(buffer[: self._part_bytes])
                    del buffer[: self._part_bytes]
                    await ship(part)
            if upload_id is None:  # smaller than one part: a single request
                await self._call("put_object", key, Body=bytes(buffer), **tagging)
            else:
                if buffer:
                    await ship(bytes(buffer))
                await self._call(
                    "complete_multipart_upload", key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                )
        except BaseException:
            if upload_id is not None:  # otherwise the parts are kept (and billed) until a lifecycle rule
                await asyncio.shield(self._abort(key, upload_id))
            raise
        return size

    async def _abort(self, key: str, upload_id: str) -> None:
        # The original error matters more; a bucket lifecycle rule reaps what an abort leaves.
        with contextlib.suppress(IntegrationError):
            await self._call("abort_multipart_upload", key, UploadId=upload_id)

    async def put_bytes(self, key: str, data: bytes, content_type: str = OCTET_STREAM) -> None:
        await self._call("put_object", check_key(key), Body=data, ContentType=content_type)

    async def keep(self, key: str) -> None:
        await self._call("delete_object_tagging", check_key(key))

    def apply_lifecycle(self, rules: list[dict[str, Any]]) -> None:
        """Blocking; called at start. Replaces our rules (IDs `molbridge-…`) and keeps any other rule the
        bucket has. Replicas starting together write the same rules, so the last writer changes nothing."""
        try:
            current = self._client.get_bucket_lifecycle_configuration(Bucket=self.bucket)["Rules"]
        except botocore.exceptions.ClientError as exc:
            if _error_code(exc) != "NoSuchLifecycleConfiguration":
                raise _s3_error(exc) from exc
            current = []
        others = [rule for rule in current if not str(rule.get("ID", "")).startswith(RULE_PREFIX)]
        configuration = {"Rules": others + rules}
        _s3(lambda: self._client.put_bucket_lifecycle_configuration(
            Bucket=self.bucket, LifecycleConfiguration=configuration
        ))

    async def get_bytes(self, key: str) -> bytes:
        def read() -> bytes:
            with self.open_reader(key) as body:
                return _s3(body.read)

        return await asyncio.to_thread(read)

    async def delete(self, key: str) -> None:
        await self._call("delete_object", check_key(key))

    async def presigned_url(
        self, key: str, expires_s: int, *, download_name: str | None = None, content_type: str | None = None
    ) -> str | None:
        params = {"Bucket": self.bucket, "Key": check_key(key)}
        if download_name:
            params["ResponseContentDisposition"] = attachment_disposition(download_name)
        if content_type:  # objects are stored as streams, without a type of their own
            params["ResponseContentType"] = content_type
        return str(self._client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s))

    def open_reader(self, key: str) -> BinaryIO:
        check_key(key)
        reply = _s3(lambda: self._client.get_object(Bucket=self.bucket, Key=key))
        return cast(BinaryIO, reply["Body"])

    def read_range(self, key: str, start: int, end: int) -> BinaryIO:
        _check_range(start, end)
        check_key(key)
        if start == end:  # S3 cannot express an empty range
            return io.BytesIO(b"")
        reply = _s3(
            lambda: self._client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={start}-{end - 1}")
        )
        return cast(BinaryIO, reply["Body"])


def _s3(call: Callable[[], T]) -> T:
    try:
        return call()
    except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
        raise _s3_error(exc) from exc


def _s3_error(exc: Exception) -> Exception:
    missing = ("NoSuchKey", "404", "NotFound")
    if isinstance(exc, botocore.exceptions.ClientError) and _error_code(exc) in missing:
        return _not_found()
    return IntegrationError(f"object storage failed: {type(exc).__name__}", detail="OBJECT_STORAGE")


def _error_code(exc: botocore.exceptions.ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def attachment_disposition(filename: str) -> str:
    """Content-Disposition for a download: an ASCII fallback and the exact name (RFC 6266)."""
    ascii_name = filename.encode("ascii", "replace").decode().replace('"', "'").replace("\\", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename, safe='')}"


# --- shared helpers and the factory ---------------------------------------------------------------


def _not_found() -> NotFoundError:
    return NotFoundError("the stored file was not found", detail="OBJECT_NOT_FOUND")


def _check_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise ValueError(f"invalid byte range [{start}, {end})")


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def lifecycle_rules(*, upload_days: int, report_days: int) -> list[dict[str, Any]]:
    """Our bucket lifecycle: prefix-scoped expiries for what is not a record, and the parts of multipart
    uploads that were neither completed nor aborted (a crash mid-upload)."""
    key, value = STAGED_TAG
    return [
        {"ID": f"{RULE_PREFIX}staged-uploads", "Status": "Enabled", "Expiration": {"Days": upload_days},
         "Filter": {"And": {"Prefix": UPLOADS_PREFIX, "Tags": [{"Key": key, "Value": value}]}}},
        {"ID": f"{RULE_PREFIX}reports", "Status": "Enabled", "Expiration": {"Days": report_days},
         "Filter": {"Prefix": REPORTS_PREFIX}},
        {"ID": f"{RULE_PREFIX}incomplete-multipart", "Status": "Enabled", "Filter": {"Prefix": ""},
         "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1}},
    ]


def make_storage(settings: Settings) -> ObjectStorage:
    """S3 when S3_BUCKET is set (S3_ENDPOINT_URL, S3_REGION, AWS_* credentials, S3_CREATE_BUCKET=1 to
    create the bucket now, MOLBRIDGE_S3_LIFECYCLE=0 to leave the bucket's lifecycle to the operator),
    else a directory under the data dir."""
    if not settings.s3_bucket:
        return LocalStorage(settings.data_dir / "objects")
    storage = S3Storage(
        settings.s3_bucket,
        endpoint_url=settings.s3_endpoint_url,
        region=settings.s3_region or settings.aws_default_region or "us-east-1",
        access_key_id=settings.aws_access_key_id,
        secret_access_key=settings.aws_secret_access_key,
        session_token=settings.aws_session_token,
    )
    if settings.s3_create_bucket:
        storage.create_bucket_if_missing()
    if settings.s3_lifecycle:
        storage.apply_lifecycle(
            lifecycle_rules(upload_days=settings.upload_expiry_days, report_days=settings.report_expiry_days)
        )
    return storage
