"""CSV upload and preview through the ImportService servicer, in-process over a real gRPC channel.

Callers are real users of the real identity service (same database, its own schema); the
molecule service verifies their tokens against the identity JWKS, as it does in the mesh.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from google.api.httpbody_pb2 import HttpBody
from google.rpc import error_details_pb2, status_pb2
from molbridge.molecule.v1 import import_service_pb2 as pb
from molbridge.molecule.v1 import import_service_pb2_grpc as pb_grpc
from sqlalchemy.ext.asyncio import AsyncEngine

import services.molecule
from services.identity.bootstrap import MIGRATIONS as IDENTITY_MIGRATIONS
from services.identity.store import SCHEMA as IDENTITY_SCHEMA
from services.molecule.bootstrap import build_parts
from services.molecule.service.uploads import ImportLimits, UploadService, upload_object_key
from services.molecule.settings import MoleculeSettings
from services.molecule.store.tables import SCHEMA as MOLECULE_SCHEMA
from services.molecule.store.uow import molecule_transactions
from services.runtime import migrations
from services.runtime.auth import Authenticator, Principal, TokenVerifier
from services.runtime.db import make_engine
from services.runtime.process import Process, running
from services.runtime.storage import MIB, ObjectStorage, S3Storage
from stack.ports import free_port
from tests.data.csv import corpus
from tests.integration.identity_world import started_identity
from tests.integration.s3_server import MotoS3

MOLECULE_MIGRATIONS = Path(services.molecule.__file__).parent / "migrations"
ADMIN = ("root@platform.test", "Platform-Root-Pass1!")
PASSWORD = "Scientist-Pass-123!"
LIMIT = 4 * MIB
BOUNDARY = "----WebKitFormBoundary7MA4YWxkTrZu0gW"


@dataclass
class World:
    stub: pb_grpc.ImportServiceStub
    storage: ObjectStorage
    engine: AsyncEngine
    tokens: dict[
        str, str
    ]  # "alpha_scientist", "alpha_admin", "beta_scientist", "cro_technician", "system_admin"
    orgs: dict[str, str]  # "alpha", "beta" → organization id

    def auth(self, who: str) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.tokens[who]}")]


@pytest.fixture
async def world(database_url: str, tmp_path: Path) -> AsyncIterator[World]:
    IDENTITY_MIGRATIONS.upgrade(database_url)
    migrations.upgrade(database_url, MOLECULE_SCHEMA, MOLECULE_MIGRATIONS)
    identity_engine = make_engine(database_url, IDENTITY_SCHEMA)
    identity = await started_identity(identity_engine, tmp_path / "mail", *ADMIN)
    verifier = TokenVerifier(identity.jwks)
    admin_token = (await identity.login(*ADMIN)).access_token
    admin = await verifier.verify(admin_token)
    tokens, orgs = {"system_admin": admin_token}, {}
    members = {
        "alpha": ("PHARMA", ["pharma_scientist", "pharma_admin"]),
        "beta": ("PHARMA", ["pharma_scientist"]),
        "cro": ("CRO", ["cro_technician"]),
    }
    for org_name, (kind, roles) in members.items():
        org = await identity.create_organization(admin, f"{org_name} {uuid.uuid4().hex[:6]}", kind, "")
        orgs[org_name] = org.id
        for role in roles:
            email = f"{role}@{org_name}.test"
            await identity.create_user(
                admin,
                email=email,
                full_name=role,
                password=PASSWORD,
                roles=[role],
                organization_id=org.id,
                request_id="",
            )
            tokens[f"{org_name}_{role.split('_')[1]}"] = (await identity.login(email, PASSWORD)).access_token

    port = free_port()
    settings = MoleculeSettings.from_env(
        "molecule",
        {
            "MOLBRIDGE_MOLECULE_ADDR": f"127.0.0.1:{port}",
            "MOLBRIDGE_DATA_DIR": str(tmp_path / "data"),
            "MOLBRIDGE_MAX_UPLOAD_BYTES": str(LIMIT),
        },
    )
    engine = make_engine(database_url, MOLECULE_SCHEMA)
    part = build_parts(settings, engine)
    process = Process(
        servicers=part.servicers, authenticator=Authenticator(verifier, identity),
        on_stop=part.on_stop,
    )
    try:
        async with running("molecule", process, settings), grpc.aio.insecure_channel(settings.listen_addr) as channel:
            yield World(pb_grpc.ImportServiceStub(channel), part.storage, engine, tokens, orgs)
    finally:
        await engine.dispose()
        await identity_engine.dispose()


# --- helpers ---------------------------------------------------------------------------------------------


def messages(body: bytes, content_type: str, cuts: Iterable[int] = (), largest: int = MIB) -> list[HttpBody]:
    """The body as the gateway sends it: messages of at most `largest` bytes (and cut at `cuts` too),
    only the first carrying the content type."""
    points = sorted({0, len(body), *range(0, len(body), largest), *cuts})
    pieces = [body[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]
    return [HttpBody(content_type=content_type, data=pieces[0]), *(HttpBody(data=p) for p in pieces[1:])]


def form(*fields: tuple[str, str | None, bytes], boundary: str = BOUNDARY, close: bool = True) -> bytes:
    """A multipart/form-data body as browsers write it: (name, filename or None, content) per field."""
    out = bytearray()
    for name, filename, data in fields:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n".encode()
        if filename is not None:
            out += b"Content-Type: text/csv\r\n"
        out += b"\r\n" + data + b"\r\n"
    if close:
        out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def multipart_type(boundary: str = BOUNDARY) -> str:
    return f"multipart/form-data; boundary={boundary}"


def csv_bytes(rows: int, *, seed: int = 1, **options: object) -> bytes:
    out = io.BytesIO()
    corpus.write_csv(out, ["smiles", "name", "notes"], corpus.random_rows(rows, 3, seed), **options)  # type: ignore[arg-type]
    return out.getvalue()


async def upload(world: World, who: str, msgs: Sequence[HttpBody], **kw: object) -> pb.StoredUpload:
    async def requests() -> AsyncIterator[HttpBody]:
        for message in msgs:
            yield message

    metadata = world.auth(who) + list(kw.get("metadata", []))  # type: ignore[call-overload]
    return (await world.stub.UploadCsv(requests(), metadata=metadata)).data


async def upload_error(world: World, who: str, msgs: Sequence[HttpBody]) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await upload(world, who, msgs)
    return error.value


def error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    details = dict(error.trailing_metadata() or ())["grpc-status-details-bin"]
    for detail in status_pb2.Status.FromString(details).details:
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info
    raise AssertionError("no ErrorInfo in the status")


def assert_validation(error: grpc.aio.AioRpcError, detail: str) -> error_details_pb2.ErrorInfo:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    info = error_info(error)
    assert info.reason == "VALIDATION_ERROR" and info.metadata["detail"] == detail, info
    return info


async def stored_files(world: World) -> list[Path]:
    root = world.storage.root  # type: ignore[attr-defined]
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def upload_rows(world: World) -> list[sa.Row]:
    async with world.engine.connect() as connection:
        return list(await connection.execute(sa.text("SELECT * FROM molecule.uploads ORDER BY created_at")))


# --- upload ------------------------------------------------------------------------------------------------


async def test_raw_csv_upload_is_stored_and_recorded(world: World) -> None:
    body = csv_bytes(40_000)
    assert 2 * MIB < len(body) < LIMIT
    stored = await upload(world, "alpha_scientist", messages(body, "text/csv; charset=utf-8"))
    assert (
        len(stored.storage_key) == 32 and stored.filename == "upload.csv" and stored.size_bytes == len(body)
    )
    key = upload_object_key(world.orgs["alpha"], stored.storage_key)
    assert await world.storage.get_bytes(key) == body
    [row] = await upload_rows(world)
    assert (row.storage_key, str(row.organization_id), row.filename, row.size_bytes, row.content_type) == (
        stored.storage_key,
        world.orgs["alpha"],
        "upload.csv",
        len(body),
        "text/csv",
    )
    assert row.created_by

    # A raw body may be named by a Content-Disposition header; a pharma admin writes too.
    named = await upload(
        world,
        "alpha_admin",
        messages(b"smiles\nCCO\n", ""),
        metadata=[("content-disposition", 'attachment; filename="../screen 7.csv"')],
    )
    assert named.filename == "screen 7.csv" and named.size_bytes == 11


async def test_multipart_upload_streams_the_file_field(world: World) -> None:
    content = csv_bytes(50_000, seed=2)
    body = form(("library", None, b"lib-1"), ("file", "C:\\lab\\données.csv", content), ("note", None, b"hi"))
    delimiter = f"--{BOUNDARY}".encode()
    starts = [i for i in range(len(body)) if body.startswith(delimiter, i)]
    assert len(starts) == 4
    # Cut every delimiter (with its CRLF) in the middle, and the file part's first bytes and last byte apart.
    cuts = [i + len(delimiter) // 2 for i in starts] + [starts[1] + 1, starts[2] - 1]
    msgs = messages(body, multipart_type(), cuts)
    assert len(msgs) > 8 and max(len(m.data) for m in msgs) <= MIB
    stored = await upload(world, "alpha_scientist", msgs)
    assert stored.filename == "données.csv" and stored.size_bytes == len(content)
    assert (
        await world.storage.get_bytes(upload_object_key(world.orgs["alpha"], stored.storage_key)) == content
    )


async def test_multipart_in_tiny_messages(world: World) -> None:
    content = "smiles;name\r\nCCO;éthanol\r\n".encode() * 40
    body = form(("file", "tiny.csv", content), boundary="x-y")
    msgs = messages(body, multipart_type("x-y"), range(0, len(body), 7))
    stored = await upload(world, "beta_scientist", msgs)
    assert stored.filename == "tiny.csv"
    assert await world.storage.get_bytes(upload_object_key(world.orgs["beta"], stored.storage_key)) == content


async def test_over_the_size_limit_is_refused_naming_the_limit(world: World) -> None:
    body = csv_bytes(80_000, seed=3)
    assert len(body) > LIMIT
    for msgs in (messages(body, "text/csv"), messages(form(("file", "big.csv", body)), multipart_type())):
        error = await upload_error(world, "alpha_scientist", msgs)
        info = assert_validation(error, "FILE_TOO_LARGE")
        assert "4 MiB (4,194,304 bytes)" in (error.details() or "") and info.metadata["limit"] == str(LIMIT)
    assert await stored_files(world) == [] and await upload_rows(world) == []


async def test_binary_and_malformed_bodies_are_refused_before_storage(world: World) -> None:
    junk = [case for case in corpus.unreadable_files() if case.detail == "NOT_TEXT"]
    assert {"png", "xlsx", "random_bytes"} <= {case.name for case in junk}
    for case in junk:
        error = await upload_error(world, "alpha_scientist", messages(case.data, "application/octet-stream"))
        assert_validation(error, "NOT_TEXT")
        assert error.details() == "this is not a text CSV file", case.name
    png = next(case.data for case in junk if case.name == "png")
    cases = [
        (messages(form(("file", "picture.csv", png)), multipart_type()), "NOT_TEXT"),
        (messages(b"", "text/csv"), "EMPTY_FILE"),
        (messages(form(("other", None, b"smiles\nCCO\n")), multipart_type()), "MISSING_FILE"),
        (
            messages(form(("file", "cut.csv", b"smiles\nCCO\n"), close=False)[:-10], multipart_type()),
            "MALFORMED_MULTIPART",
        ),
        (messages(form(("file", "x.csv", b"smiles\nCCO\n")), "multipart/form-data"), "MALFORMED_MULTIPART"),
        (messages(b'{"smiles": "CCO"}', "application/json"), "UNSUPPORTED_MEDIA_TYPE"),
        (messages("smiles,name\nCCO,ethanol\n".encode("utf-16"), "text/csv"), "UNSUPPORTED_ENCODING"),
    ]
    for msgs, detail in cases:
        assert_validation(await upload_error(world, "alpha_scientist", msgs), detail)
    assert await stored_files(world) == [] and await upload_rows(world) == []


async def test_upload_needs_a_pharma_writer(world: World) -> None:
    body = messages(b"smiles\nCCO\n", "text/csv")
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await world.stub.UploadCsv(iter(body))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
    error = await upload_error(world, "cro_technician", body)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert await stored_files(world) == []


# --- preview -----------------------------------------------------------------------------------------------


async def preview(world: World, who: str, key: str, rows: int = 0) -> pb.CsvPreview:
    request = pb.PreviewCsvRequest(storage_key=key, rows=rows)
    return (await world.stub.PreviewCsv(request, metadata=world.auth(who))).data


async def test_preview_detects_the_dialect_and_suggests_a_mapping(world: World) -> None:
    out = io.BytesIO()
    corpus.write_csv(
        out,
        ["SMILES", "MW", "LogP", "IC50 (nM)", "Compound Name", "Notes"],
        [["CCO", "46.07", "-0.31", "1200", "éthanol", "a, b"]] * 30,
        bom=True,
    )
    bom = await upload(world, "alpha_scientist", messages(out.getvalue(), "text/csv"))
    shown = await preview(world, "alpha_scientist", bom.storage_key)
    assert (shown.encoding, shown.delimiter) == ("utf-8-sig", ",")
    assert list(shown.headers) == ["SMILES", "MW", "LogP", "IC50 (nM)", "Compound Name", "Notes"]
    assert len(shown.rows) == 20 and list(shown.rows[0].cells) == [
        "CCO",
        "46.07",
        "-0.31",
        "1200",
        "éthanol",
        "a, b",
    ]
    assert dict(shown.suggested_mapping) == {
        "SMILES": "smiles",
        "MW": "molecular_weight",
        "LogP": "logp",
        "IC50 (nM)": "ic50",
        "Compound Name": "name",
        "Notes": "custom_notes",
    }
    assert len((await preview(world, "alpha_scientist", bom.storage_key, rows=3)).rows) == 3
    assert len((await preview(world, "alpha_scientist", bom.storage_key, rows=1000)).rows) == 30

    excel = corpus.SAMPLES["excel_windows1252.csv"].read_bytes()  # cp1252, ";", CRLF, decimal commas
    stored = await upload(
        world, "alpha_scientist", messages(form(("file", "excel.csv", excel)), multipart_type())
    )
    shown = await preview(world, "alpha_scientist", stored.storage_key, rows=2)
    assert (shown.encoding, shown.delimiter) == ("cp1252", ";")
    assert shown.headers[:3] == ["Structure", "Nom du composé", "MW (g/mol)"]
    assert shown.rows[0].cells[:2] == ["CC(=O)Oc1ccccc1C(=O)O", "Aspirine"]
    assert {shown.suggested_mapping[h] for h in ("Structure", "MW (g/mol)", "cLogP")} == {
        "smiles",
        "molecular_weight",
        "logp",
    }

    latin1 = "smiles\tnom\tconcentration (µM)\nCCO\téthanol\t5\nCCN\tçà\t7\n".encode("latin-1")
    stored = await upload(world, "alpha_scientist", messages(latin1, "text/plain"))
    shown = await preview(world, "alpha_scientist", stored.storage_key)
    assert shown.delimiter == "\t" and shown.headers[2] == "concentration (µM)"
    assert [list(row.cells) for row in shown.rows] == [["CCO", "éthanol", "5"], ["CCN", "çà", "7"]]

    notes = corpus.SAMPLES["notes_multiline.csv"].read_bytes()  # quoted commas and line breaks, CRLF
    stored = await upload(world, "alpha_scientist", messages(notes, "text/csv"))
    shown = await preview(world, "alpha_scientist", stored.storage_key)
    assert any("\n" in cell for row in shown.rows for cell in row.cells)
    assert all(len(row.cells) == len(shown.headers) for row in shown.rows)


async def test_preview_is_scoped_to_the_organization(world: World) -> None:
    stored = await upload(world, "alpha_scientist", messages(b"smiles,name\nCCO,ethanol\n", "text/csv"))
    assert list((await preview(world, "alpha_admin", stored.storage_key)).headers) == ["smiles", "name"]
    for who, key in [
        ("beta_scientist", stored.storage_key),
        ("system_admin", stored.storage_key),  # an import from it would copy alpha's structures elsewhere
        ("cro_technician", stored.storage_key),
        ("alpha_scientist", uuid.uuid4().hex),
        ("alpha_scientist", "../../etc/passwd"),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as error:
            await preview(world, who, key)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND, (who, key)
        assert error_info(error.value).reason == "RESOURCE_NOT_FOUND"


async def test_preview_of_a_file_that_cannot_be_read_names_the_problem(world: World) -> None:
    headers_only = await upload(world, "alpha_scientist", messages(b"smiles,name\r\n", "text/csv"))
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await preview(world, "alpha_scientist", headers_only.storage_key)
    assert_validation(error.value, "NO_DATA_ROWS")


async def test_upload_and_preview_on_s3(database_url: str, tmp_path: Path) -> None:
    """The same service over S3 (moto's server): a multipart upload large enough for S3 multipart."""
    migrations.upgrade(database_url, MOLECULE_SCHEMA, MOLECULE_MIGRATIONS)
    engine = make_engine(database_url, MOLECULE_SCHEMA)
    with MotoS3(tmp_path / "moto.log") as s3:
        storage = S3Storage("uploads-test", endpoint_url=s3.url, part_bytes=5 * MIB, **s3.credentials)
        storage.create_bucket_if_missing()
        uploads = UploadService(molecule_transactions(engine), storage, ImportLimits(max_upload_bytes=20 * MIB))
        scientist = Principal("user-1", str(uuid.uuid4()), "PHARMA", frozenset({"pharma_scientist"}))
        content = csv_bytes(200_000, seed=4)
        assert 5 * MIB < len(content) < 20 * MIB

        async def body() -> AsyncIterator[bytes]:
            for message in messages(form(("file", "big.csv", content)), ""):
                yield message.data

        stored = await uploads.upload(scientist, multipart_type(), body())
        assert (stored.filename, stored.size_bytes) == ("big.csv", len(content))
        head = s3.client().head_object(Bucket="uploads-test", Key=stored.object_key)
        parts = -(-len(content) // (5 * MIB))  # an S3 multipart upload's ETag ends with its part count
        assert head["ContentLength"] == len(content) and head["ETag"].strip('"').endswith(f"-{parts}")
        shown = await uploads.preview(scientist, stored.storage_key, 5)
        assert shown.headers == ["smiles", "name", "notes"] and len(shown.rows) == 5
    await engine.dispose()
