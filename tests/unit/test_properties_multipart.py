"""Properties of the incremental multipart/form-data parser (services/runtime/multipart.py): the same parts,
fields and file bytes however the stream is cut (every single cut of a small body, random cuts of bigger
ones), content holding pieces of the delimiter comes back as is, and anything else fails only with
MultipartError."""

from __future__ import annotations

from hypothesis import example, given, settings
from hypothesis import strategies as st

from services.runtime.multipart import MultipartError, PartEnd, PartStart, boundary_of
from tests.unit.test_runtime_multipart import parse  # events with adjacent data joined

FAST = settings(max_examples=200, deadline=None)
CUTTING = settings(max_examples=100, deadline=None)  # each example is parsed once per cut: fewer of them

boundaries = st.text(alphabet="abcXYZ019-_'()+,./:=?", min_size=1, max_size=30)
names = st.text(alphabet="abcdefxyz_0123456789-", min_size=1, max_size=12)
filenames = st.one_of(st.none(), st.text(alphabet="abc é.-_ü0", min_size=1, max_size=12).filter(str.strip))
content_types = st.sampled_from(["", "text/csv", "application/octet-stream", "text/plain; charset=utf-8"])
padding = st.sampled_from(["", " ", "\t", " \t "])


@st.composite
def contents(draw: st.DrawFn, boundary: str, most: int = 12) -> bytes:
    """Bytes made of binary junk, line breaks and prefixes of the delimiter, never the delimiter itself."""
    delimiter = b"\r\n--" + boundary.encode()
    prefixes = st.integers(min_value=0, max_value=len(delimiter) - 1).map(lambda k: delimiter[:k])
    piece = st.one_of(
        prefixes, st.sampled_from([b"\r", b"\n", b"\r\n", b"--", b"-", b"\r\n\r\n"]), st.binary(max_size=6)
    )
    data = b"".join(draw(st.lists(piece, max_size=most)))
    return data.replace(delimiter, b"\r\n-X")  # cut any delimiter the pieces happened to spell


@st.composite
def forms(draw: st.DrawFn, most_parts: int = 3, most_pieces: int = 12) -> tuple[str, bytes, list[object]]:
    """A boundary, a well-formed body and the events it must give (adjacent data joined)."""
    boundary = draw(boundaries)
    dash = b"--" + boundary.encode()
    preamble = draw(contents(boundary, 4))
    body = preamble + b"\r\n" + dash if preamble else dash  # the first delimiter may open the body
    expected: list[object] = []
    for _ in range(draw(st.integers(min_value=0, max_value=most_parts))):
        name, filename, content_type = draw(names), draw(filenames), draw(content_types)
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        headers = f"Content-Disposition: {disposition}\r\n" + (
            f"Content-Type: {content_type}\r\n" if content_type else ""
        )
        data = draw(contents(boundary, most_pieces))
        body += draw(padding).encode() + b"\r\n" + headers.encode() + b"\r\n" + data + b"\r\n" + dash
        # email's get_filename strips the name (clean_filename would anyway)
        expected += [PartStart(name, filename and filename.strip(), content_type), *([data] if data else []), PartEnd()]
    body += b"--" + draw(st.sampled_from([b"", b"\r\n", b"\r\nepilogue\r\n--" + boundary.encode() + b"--"]))
    return boundary, body, expected


@CUTTING
@given(forms(most_parts=2, most_pieces=6))
def test_every_single_cut_of_a_small_body_gives_the_same_events(form: tuple[str, bytes, list[object]]) -> None:
    boundary, body, expected = form
    assert parse(body, [], boundary) == expected
    for cut in range(1, len(body)):
        assert parse(body, [cut], boundary) == expected, cut


@CUTTING
@given(forms(most_parts=2, most_pieces=6))
def test_a_body_fed_byte_by_byte_gives_the_same_events(form: tuple[str, bytes, list[object]]) -> None:
    boundary, body, expected = form
    assert parse(body, list(range(len(body))), boundary) == expected


@CUTTING
@given(forms(most_parts=4, most_pieces=40), st.lists(st.integers(min_value=1, max_value=3000), max_size=40))
def test_random_cuts_of_a_bigger_body_give_the_same_events(
    form: tuple[str, bytes, list[object]], cuts: list[int]
) -> None:
    boundary, body, expected = form
    assert parse(body, cuts, boundary) == expected


@FAST
@given(forms(most_parts=2, most_pieces=6), st.data())
def test_a_body_cut_short_is_an_error_not_a_shorter_file(
    form: tuple[str, bytes, list[object]], data: st.DataObject
) -> None:
    boundary, body, _ = form
    end = body.index(b"--" + boundary.encode() + b"--") + len(boundary) + 3  # just past the closing "--"
    short = body[: data.draw(st.integers(min_value=0, max_value=end - 1))]
    try:
        parse(short, [], boundary)
    except MultipartError:
        return
    raise AssertionError(f"a truncated body parsed: {short!r}")


def check_only_multipart_errors(boundary: str, body: bytes, cuts: list[int]) -> None:
    try:
        parse(body, cuts, boundary)
    except MultipartError as error:
        assert error.detail == "MALFORMED_MULTIPART"


@FAST
@given(boundaries, st.binary(max_size=300), st.lists(st.integers(min_value=1, max_value=300), max_size=5))
def test_arbitrary_bytes_fail_only_with_a_multipart_error(boundary: str, body: bytes, cuts: list[int]) -> None:
    check_only_multipart_errors(boundary, body, cuts)


@FAST
@given(st.data(), st.lists(st.integers(min_value=1, max_value=300), max_size=5))
def test_near_miss_bodies_fail_only_with_a_multipart_error(data: st.DataObject, cuts: list[int]) -> None:
    boundary = data.draw(boundaries)
    dash = "--" + boundary
    pieces = st.sampled_from(
        [dash, dash + "--", "\r\n", "\r\n\r\n", " ", "Content-Disposition: ", "form-data; ", 'name="a"', "name=",
         '; filename="x.csv"', "filename*=UTF-8''%C3%A9%ZZ", "filename*=bad''", "Content-Type: text/csv",
         '"', ";", "\x00", "é", "\udcff"]
    )  # fmt: skip
    text = "".join(data.draw(st.lists(pieces, max_size=20)))
    body = text.encode("utf-8", "surrogateescape")
    check_only_multipart_errors(boundary, body, cuts)


@FAST
@given(st.text(max_size=120))
@example("multipart/form-data; boundary*=UTF-8''%ZZ")
@example("multipart/form-data; boundary*0=a; boundary*1=b")
def test_any_content_type_gives_a_boundary_or_a_multipart_error(content_type: str) -> None:
    try:
        boundary = boundary_of(content_type)
    except MultipartError:
        return
    assert 1 <= len(boundary) <= 70
