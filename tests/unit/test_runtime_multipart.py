"""The incremental multipart/form-data parser (services/runtime/multipart.py): the same result however the
body is cut; and client file names."""

from __future__ import annotations

import random

import pytest

from services.runtime.multipart import (
    MAX_HEADER_BYTES,
    MultipartError,
    MultipartParser,
    PartEnd,
    PartStart,
    boundary_of,
    clean_filename,
)

BOUNDARY = "----WebKitFormBoundaryQx3"
D = f"--{BOUNDARY}".encode()


def parse(body: bytes, cuts: list[int] | None = None, boundary: str = BOUNDARY) -> list[object]:
    """Events with adjacent data joined (how the data is cut into events is the parser's business)."""
    parser = MultipartParser(boundary)
    points = sorted({0, len(body), *(cuts or [])})
    events: list[object] = []
    for start, end in zip(points, points[1:], strict=False):
        for event in parser.feed(body[start:end]):
            assert event != b"", "an empty data event"
            if isinstance(event, bytes) and events and isinstance(events[-1], bytes):
                events[-1] += event
            else:
                events.append(event)
    parser.close()
    return events


def part(name: str, data: bytes, filename: str | None = None) -> bytes:
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    return D + f"\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + data + b"\r\n"


# Data that looks almost like a delimiter, binary bytes and CR/LF runs: all of it must come back as is.
TRICKY = b"\r\n--" + BOUNDARY[:-1].encode() + b"\r\n\r\n" + D[2:] + b"\x00\xff\r\r\n" + b"-" * 50


def test_any_cutting_gives_the_same_events() -> None:
    body = (
        b"preamble\r\n" + part("note", b"hello") + part("file", TRICKY * 20, "a.csv") + D + b"--\r\nepilogue"
    )
    expected = [
        PartStart("note", None, ""),
        b"hello",
        PartEnd(),
        PartStart("file", "a.csv", ""),
        TRICKY * 20,
        PartEnd(),
    ]
    assert parse(body) == expected
    rng = random.Random(7)
    for _ in range(200):
        cuts = rng.sample(range(1, len(body)), rng.randint(1, 40))
        assert parse(body, cuts) == expected
    assert parse(body, list(range(len(body)))) == expected  # one byte at a time


def test_empty_parts_padding_and_headers() -> None:
    body = (
        D
        + b"  \t\r\n"  # transport padding after a delimiter
        + b"Content-Disposition: form-data; name=\"file\"; filename*=UTF-8''na%C3%AFve%20list.csv\r\n"
        + b"Content-Type: text/csv\r\n\r\n\r\n"
        + D
        + b'\r\nContent-Disposition: form-data; name="empty"\r\n\r\n\r\n'
        + D
        + b"--"
    )
    assert parse(body) == [
        PartStart("file", "naïve list.csv", "text/csv"),
        PartEnd(),
        PartStart("empty", None, ""),
        PartEnd(),
    ]
    utf8_name = (
        D + '\r\nContent-Disposition: form-data; name="file"; filename="données.csv"\r\n\r\nx\r\n'.encode()
    )
    assert parse(utf8_name + D + b"--")[0] == PartStart("file", "données.csv", "")


@pytest.mark.parametrize(
    "body",
    [
        part("file", b"smiles\nCCO\n"),  # no closing delimiter: truncated
        part("file", b"smiles")[:-2],
        b"no delimiter at all",
        D + b"junk\r\nContent-Disposition: form-data; name=file\r\n\r\nx\r\n" + D + b"--",
        D + b"\r\nContent-Type: text/csv\r\n\r\nx\r\n" + D + b"--",  # no Content-Disposition
        D + b"\r\nX-Long: " + b"a" * MAX_HEADER_BYTES + b"\r\n\r\nx\r\n" + D + b"--",
    ],
)
def test_malformed_bodies(body: bytes) -> None:
    with pytest.raises(MultipartError) as error:
        parse(body)
    assert error.value.detail == "MALFORMED_MULTIPART"


def test_boundary_parameter() -> None:
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY}") == BOUNDARY
    assert boundary_of('multipart/form-data; charset=utf-8; boundary="a b:c"') == "a b:c"
    for bad in (
        "multipart/form-data",
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=" + "x" * 71,
        'multipart/form-data; boundary="ends with space "',
    ):
        with pytest.raises(MultipartError):
            boundary_of(bad)


def test_client_file_names_are_cleaned() -> None:
    assert clean_filename("C:\\Users\\me\\screen.csv", "upload.csv") == "screen.csv"
    assert clean_filename("../../etc/passwd", "upload.csv") == "passwd"
    assert clean_filename("a\x00b\nc.csv", "upload.csv") == "abc.csv"
    for nameless in (None, "", ".."):
        assert clean_filename(nameless, "upload.csv") == "upload.csv"
    assert len(clean_filename("x" * 1000 + ".csv", "upload.csv")) == 255
