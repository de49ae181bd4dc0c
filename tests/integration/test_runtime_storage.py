"""Object storage adapters against real peers: a temporary directory, and moto's S3 server over HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import io
import random
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from services.runtime import csv_format
from services.runtime.errors import IntegrationError, NotFoundError
from services.runtime.settings import Settings
from services.runtime.storage import (
    MIB,
    STAGED_TAG,
    FileTooLargeError,
    LocalStorage,
    ObjectStorage,
    S3Storage,
    make_storage,
)
from stack.ports import free_port
from tests.data.csv import corpus
from tests.integration.s3_server import MotoS3


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoS3]:
    with MotoS3(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server


def new_s3_storage(server: MotoS3) -> S3Storage:
    storage = S3Storage(
        f"test-{uuid.uuid4().hex[:12]}", endpoint_url=server.url, part_bytes=5 * MIB, **server.credentials
    )
    storage.create_bucket_if_missing()
    return storage


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "objects")
    return new_s3_storage(request.getfixturevalue("moto_s3"))


def leftovers(storage: ObjectStorage, moto: MotoS3 | None) -> list[str]:
    """Everything the storage holds, unfinished S3 multipart uploads and local temporary files included."""
    if isinstance(storage, LocalStorage):
        if not storage.root.exists():
            return []
        return sorted(str(p.relative_to(storage.root)) for p in storage.root.rglob("*") if p.is_file())
    assert isinstance(storage, S3Storage) and moto is not None
    client = moto.client()
    objects = client.list_objects_v2(Bucket=storage.bucket).get("Contents", [])
    uploads = client.list_multipart_uploads(Bucket=storage.bucket).get("Uploads", [])
    return sorted([o["Key"] for o in objects] + [f"multipart:{u['Key']}" for u in uploads])


def moto_of(request: pytest.FixtureRequest, storage: ObjectStorage) -> MotoS3 | None:
    return request.getfixturevalue("moto_s3") if isinstance(storage, S3Storage) else None


async def chunked(data: bytes, size: int = MIB) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        await asyncio.sleep(0)  # like a network stream: other tasks run between chunks
        yield data[start : start + size]


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


async def test_small_object_round_trip(storage: ObjectStorage) -> None:
    size = await storage.put_stream("uploads/org/small", chunked(b"smiles\nCCO\n", 4), max_bytes=100)
    assert size == 11
    assert await storage.get_bytes("uploads/org/small") == b"smiles\nCCO\n"
    await storage.put_bytes("reports/job/errors.csv", b"row,reason\n", "text/csv")
    with storage.open_reader("reports/job/errors.csv") as reader:
        assert reader.read() == b"row,reason\n"
    await storage.delete("reports/job/errors.csv")
    await storage.delete("reports/job/errors.csv")  # gone already: not an error
    with pytest.raises(NotFoundError):
        await storage.get_bytes("reports/job/errors.csv")
    with pytest.raises(NotFoundError):
        storage.open_reader("reports/job/errors.csv")
    with pytest.raises(NotFoundError):
        storage.read_range("reports/job/errors.csv", 0, 4)


async def test_streamed_put_of_a_large_file(storage: ObjectStorage, request: pytest.FixtureRequest) -> None:
    data = payload(12 * MIB + 12345)
    assert await storage.put_stream("uploads/org/large", chunked(data), max_bytes=100 * MIB) == len(data)
    with storage.open_reader("uploads/org/large") as reader:
        digest = hashlib.sha256()
        while block := reader.read(256 * 1024):
            digest.update(block)
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    moto = moto_of(request, storage)
    if moto is not None:  # 5 MiB parts: a multipart upload of three parts (its ETag says so)
        head = moto.client().head_object(Bucket=storage.bucket, Key="uploads/org/large")  # type: ignore[attr-defined]
        assert head["ETag"].strip('"').endswith("-3")
    assert leftovers(storage, moto) == ["uploads/org/large"]


@pytest.mark.parametrize("size_mib", [3, 7])  # under one S3 part, and after a part has been uploaded
async def test_size_limit_aborts_and_leaves_nothing(
    storage: ObjectStorage, request: pytest.FixtureRequest, size_mib: int
) -> None:
    limit = size_mib * MIB - 1
    with pytest.raises(FileTooLargeError) as error:
        await storage.put_stream("uploads/org/big", chunked(payload(size_mib * MIB)), max_bytes=limit)
    assert f"{limit:,} bytes" in error.value.message and "limit" in error.value.message
    assert error.value.detail == "FILE_TOO_LARGE" and error.value.metadata == {"limit": str(limit)}
    assert leftovers(storage, moto_of(request, storage)) == []


async def test_a_failing_source_leaves_nothing(
    storage: ObjectStorage, request: pytest.FixtureRequest
) -> None:
    async def broken() -> AsyncIterator[bytes]:
        async for chunk in chunked(payload(6 * MIB)):
            yield chunk
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        await storage.put_stream("uploads/org/broken", broken(), max_bytes=100 * MIB)
    assert leftovers(storage, moto_of(request, storage)) == []


async def test_range_reads(storage: ObjectStorage) -> None:
    data = payload(6 * MIB, seed=2)
    await storage.put_stream("uploads/org/ranges", chunked(data), max_bytes=len(data))
    for start, end in [(0, 10), (5 * MIB - 3, 5 * MIB + 70_000), (len(data) - 5, len(data)), (100, 100)]:
        with storage.read_range("uploads/org/ranges", start, end) as stream:
            parts = []
            while block := stream.read(4096):
                parts.append(block)
        assert b"".join(parts) == data[start:end], (start, end)
    with pytest.raises(ValueError):
        storage.read_range("uploads/org/ranges", 10, 5)


async def test_csv_chunks_read_through_ranges_match_the_whole_file(storage: ObjectStorage) -> None:
    """What a CSV worker on another machine does: plan on the whole object, read one range per chunk."""
    out = io.BytesIO()
    corpus.write_csv(out, ["smiles", "name", "notes"], corpus.random_rows(3000, 3, seed=5))
    await storage.put_bytes("uploads/org/molecules", out.getvalue(), "text/csv")
    with storage.open_reader("uploads/org/molecules") as whole:
        dialect = csv_format.sniff(whole.read(csv_format.SNIFF_BYTES))
    with storage.open_reader("uploads/org/molecules") as whole:
        expected = list(csv_format.iter_rows(whole, dialect))
    with storage.open_reader("uploads/org/molecules") as whole:
        chunks = csv_format.plan_chunks(whole, dialect, rows_per_chunk=400)
    assert len(chunks) == 8
    rows = []
    for chunk in reversed(chunks):  # any order, as workers pick them
        with storage.read_range("uploads/org/molecules", chunk.byte_start, chunk.byte_end) as stream:
            rows[:0] = list(csv_format.read_chunk(stream, chunk, dialect, columns=3))
    assert rows == expected


async def test_presigned_url(storage: ObjectStorage) -> None:
    await storage.put_bytes(
        "reports/job-1/errors.csv", b"row,smiles,reason\n2,xx,invalid SMILES\n", "text/csv"
    )
    url = await storage.presigned_url("reports/job-1/errors.csv", 60, download_name="rejected rows é.csv")
    if isinstance(storage, LocalStorage):
        assert url is None
        return
    assert url is not None
    async with httpx.AsyncClient() as client:  # no credentials: the URL alone grants the download
        response = await client.get(url)
    assert response.status_code == 200
    assert response.content == b"row,smiles,reason\n2,xx,invalid SMILES\n"
    assert "filename*=UTF-8''rejected%20rows%20%C3%A9.csv" in response.headers["content-disposition"]
    tampered = url.replace("errors.csv", "other.csv")
    async with httpx.AsyncClient() as client:
        assert (await client.get(tampered)).status_code == 403


async def test_keys_cannot_escape(storage: ObjectStorage) -> None:
    for key in ("../outside", "uploads/../../x", "/absolute", "uploads//double", ".hidden", ""):
        with pytest.raises(ValueError):
            await storage.put_bytes(key, b"x")


def test_make_storage_picks_the_adapter(tmp_path: Path, moto_s3: MotoS3) -> None:
    local = make_storage(Settings.from_env("molecule", {"MOLBRIDGE_DATA_DIR": str(tmp_path)}))
    assert isinstance(local, LocalStorage) and local.root == tmp_path.resolve() / "objects"
    bucket = f"made-{uuid.uuid4().hex[:12]}"
    env: dict[str, Any] = {
        "S3_BUCKET": bucket,
        "S3_ENDPOINT_URL": moto_s3.url,
        "S3_REGION": "eu-west-1",
        "S3_CREATE_BUCKET": "1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    s3 = make_storage(Settings.from_env("molecule", env))
    assert isinstance(s3, S3Storage) and s3.bucket == bucket
    client = moto_s3.client()
    assert client.get_bucket_location(Bucket=bucket)["LocationConstraint"] == "eu-west-1"
    assert isinstance(make_storage(Settings.from_env("molecule", env)), S3Storage)  # exists already: fine


def expiring(rules: list[dict[str, Any]], key: str, tags: dict[str, str]) -> list[str]:
    """The IDs of the enabled rules that would expire `key` carrying `tags` (S3's filter semantics)."""
    found = []
    for rule in rules:
        shape = rule.get("Filter", {})
        shape = shape.get("And", shape)
        wanted = {tag["Key"]: tag["Value"] for tag in shape.get("Tags", [shape["Tag"]] if "Tag" in shape else [])}
        if (
            rule["Status"] == "Enabled" and "Expiration" in rule and key.startswith(shape.get("Prefix", ""))
            and wanted.items() <= tags.items()
        ):
            found.append(rule["ID"])
    return found


def test_the_bucket_lifecycle_expires_staged_uploads_and_reports_and_never_records(moto_s3: MotoS3) -> None:
    bucket = f"life-{uuid.uuid4().hex[:12]}"
    client = moto_s3.client()
    client.create_bucket(Bucket=bucket)
    operators = {"ID": "archive-logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 90}}
    client.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [operators]})
    env = {"S3_BUCKET": bucket, "S3_ENDPOINT_URL": moto_s3.url, "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "MOLBRIDGE_UPLOAD_EXPIRY_DAYS": "3"}

    make_storage(Settings.from_env("molecule", env))  # at start
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    by_id = {rule["ID"]: rule for rule in rules}
    ours = {"molbridge-staged-uploads", "molbridge-reports", "molbridge-incomplete-multipart"}
    assert set(by_id) == {"archive-logs"} | ours
    assert by_id["molbridge-staged-uploads"]["Expiration"]["Days"] == 3
    assert by_id["molbridge-reports"]["Expiration"]["Days"] == 7
    assert by_id["molbridge-incomplete-multipart"]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"] == 1
    staged = dict([STAGED_TAG])
    assert expiring(rules, "uploads/org/abc", staged) == ["molbridge-staged-uploads"]
    assert expiring(rules, "uploads/org/abc", {}) == []  # imported: kept
    assert expiring(rules, "reports/job/errors.csv", {}) == ["molbridge-reports"]
    for record in ("documents/org/abc", "results/org/abc.csv", "audit-anchors/12.json", "audit-anchors/latest.json"):
        assert expiring(rules, record, staged) == [], record  # records: 7 years (21 CFR Part 11), never expired

    # A changed setting replaces our rules on the next start; the operator's rule stays.
    make_storage(Settings.from_env("molecule", env | {"MOLBRIDGE_REPORT_EXPIRY_DAYS": "2"}))
    rules = client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]
    assert sorted(rule["ID"] for rule in rules) == sorted(by_id)
    assert {rule["ID"]: rule for rule in rules}["molbridge-reports"]["Expiration"]["Days"] == 2
    assert {rule["ID"]: rule for rule in rules}["archive-logs"] == by_id["archive-logs"]

    untouched = f"life-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=untouched)
    make_storage(Settings.from_env("molecule", env | {"S3_BUCKET": untouched, "MOLBRIDGE_S3_LIFECYCLE": "0"}))
    with pytest.raises(client.exceptions.ClientError, match="NoSuchLifecycleConfiguration"):
        client.get_bucket_lifecycle_configuration(Bucket=untouched)


@pytest.mark.parametrize("size", [100, 6 * MIB], ids=["single", "multipart"])
async def test_staged_objects_carry_the_tag_until_kept(moto_s3: MotoS3, size: int) -> None:
    storage = new_s3_storage(moto_s3)
    client = moto_s3.client()

    def tags(key: str) -> dict[str, str]:
        return {t["Key"]: t["Value"] for t in client.get_object_tagging(Bucket=storage.bucket, Key=key)["TagSet"]}

    await storage.put_stream("uploads/org/staged", chunked(payload(size)), max_bytes=size, staged=True)
    await storage.put_stream("documents/org/record", chunked(payload(size)), max_bytes=size)
    assert tags("uploads/org/staged") == dict([STAGED_TAG])
    assert tags("documents/org/record") == {}
    await storage.keep("uploads/org/staged")
    assert tags("uploads/org/staged") == {}
    assert await storage.get_bytes("uploads/org/staged") == payload(size)  # the object itself is untouched


async def test_unreachable_s3_is_an_integration_error() -> None:
    storage = S3Storage("nowhere", endpoint_url=f"http://127.0.0.1:{free_port()}", **MotoS3.credentials)
    with pytest.raises(IntegrationError):
        await storage.get_bytes("uploads/org/x")
