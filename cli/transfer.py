"""Files to and from the gateway: uploads as a stream of google.api.HttpBody messages within 1 MiB, and
streamed downloads, each with a progress line on stderr (bytes, MB/s, ETA)."""

from __future__ import annotations

import os
import sys
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from email.message import Message
from email.utils import collapse_rfc2231_value
from pathlib import Path
from typing import TypeVar

from google.api.httpbody_pb2 import HttpBody

from cli.client import CliError, Gateway
from cli.progress import ProgressLine, RateMeter, eta, format_bytes, format_duration, format_rate, fraction

# Every message of an upload stream, data and content type together, stays within 1 MiB.
UPLOAD_CHUNK_BYTES = 1024 * 1024 - 1024
PARTIAL_SUFFIX = ".part"  # a download is written here first: an interrupted one never looks complete

ResponseT = TypeVar("ResponseT")


def file_messages(
    path: Path,
    *,
    content_type: str,
    chunk_bytes: int = UPLOAD_CHUNK_BYTES,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[HttpBody]:
    """The file as upload messages of at most `chunk_bytes`, read as they are sent (never whole); the
    first carries the content type (an empty file is one empty message). `on_progress(bytes_taken)`
    runs each time the sender has taken a message."""
    with path.open("rb") as source:
        data = source.read(chunk_bytes)
        sent = len(data)
        yield HttpBody(content_type=content_type, data=data)
        if on_progress:
            on_progress(sent)
        while data := source.read(chunk_bytes):
            yield HttpBody(data=data)
            sent += len(data)
            if on_progress:
                on_progress(sent)


def content_disposition(filename: str) -> str:
    """A Content-Disposition naming the file, in ASCII as gRPC metadata requires (RFC 6266 `filename*`)."""
    if filename.isascii() and filename.isprintable() and not set(filename) & set('"\\'):
        return f'attachment; filename="{filename}"'
    return f"attachment; filename*=UTF-8''{urllib.parse.quote(filename, safe='')}"


def filename_of(disposition: str) -> str | None:
    """The file name a Content-Disposition gives (`filename*` wins), reduced to a bare name: a server
    never chooses the directory a download lands in. None when it names no usable file."""
    header = Message()
    header["content-disposition"] = disposition
    found = [v for k, v in header.get_params(header="content-disposition") or () if k == "filename"]
    exact = [v for v in found if isinstance(v, tuple)]  # RFC 2231 `filename*`: the exact name
    name = collapse_rfc2231_value((exact or found or [""])[0])
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name if name not in ("", ".", "..") and name.isprintable() else None


def readable_file(path: Path) -> None:
    """Fails now, with the reason, when `path` cannot be uploaded (not only once the upload has started)."""
    try:
        with path.open("rb"):
            pass
    except OSError as err:
        raise CliError(f"cannot read {path}: {err.strerror or err}") from err
    if not path.is_file():
        raise CliError(f"{path}: not a file")


def transfer_segments(done: int, total: int | None, meter: RateMeter) -> list[str]:
    """Bytes so far (of the total when known), rate, and ETA when the total is known."""
    rate = meter.rate(done)
    if total is None:
        return [format_bytes(done), format_rate(rate, "bytes")]
    return [f"{format_bytes(done)}/{format_bytes(total)}", format_rate(rate, "bytes"),
            f"ETA {format_duration(eta(done, total, rate))}"]


def final_segments(size: int, meter: RateMeter) -> list[str]:
    took = meter.elapsed()
    return [format_bytes(size), format_rate(size / took if took > 0 else None, "bytes"), f"in {format_duration(took)}"]


def upload_with_progress(
    gw: Gateway,
    method: Callable[..., ResponseT],
    path: Path,
    *,
    content_type: str,
    metadata: Sequence[tuple[str, str]] = (),
) -> ResponseT:
    """Stream the file to `method` (a client-streaming HttpBody RPC) with a progress line on stderr; its
    name goes in `content-disposition`, next to `metadata`."""
    size = path.stat().st_size
    line = ProgressLine(sys.stderr, f"upload {path.name}")
    meter = RateMeter()

    def show(sent: int) -> None:
        line.update(fraction(sent, size), transfer_segments(sent, size, meter))

    def messages() -> Iterator[HttpBody]:
        nonlocal meter
        meter = RateMeter()  # a repeated call (token refresh) starts over
        return file_messages(path, content_type=content_type, on_progress=show)

    disposition = ("content-disposition", content_disposition(path.name))
    try:
        answer = gw.upload(method, messages, metadata=[disposition, *metadata])
    except BaseException:
        line.end()  # the error goes on a line of its own
        raise
    line.finish(1.0, final_segments(size, meter))
    return answer


def save_stream(chunks: Iterable[HttpBody], path: Path, *, size: int | None = None, label: str = "") -> int:
    """Write a streamed download to `path` with a progress line; the bytes go to `path`.part first and
    take its name only once complete. Returns the number of bytes written."""
    partial = path.with_name(path.name + PARTIAL_SUFFIX)
    line = ProgressLine(sys.stderr, label or f"download {path.name}")
    meter = RateMeter()
    written = 0
    try:
        with partial.open("wb") as target:
            for chunk in chunks:
                target.write(chunk.data)
                written += len(chunk.data)
                line.update(fraction(written, size or 0), transfer_segments(written, size, meter))
        os.replace(partial, path)
    except OSError as err:
        line.end()
        partial.unlink(missing_ok=True)
        raise CliError(f"cannot write {path}: {err.strerror or err}") from err
    except BaseException:
        line.end()
        partial.unlink(missing_ok=True)
        raise
    line.finish(1.0 if size is not None else None, final_segments(written, meter))
    return written


def download_target(out: Path | None, suggested: str | None, fallback: str, *, force: bool) -> Path:
    """Where a download goes: `out` as given (a file, or a directory to put the suggested name in), else
    the suggested name (or `fallback`) in the current directory, which is never overwritten unless `force`."""
    name = suggested or fallback
    if out is not None and not out.is_dir():
        return out
    path = (out or Path.cwd()) / name
    if path.exists() and not force:
        raise CliError(f"{path} exists: pass --force to replace it, or --out FILE")
    return path

