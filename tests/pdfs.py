"""Small real PDFs for tests (pypdf): what a signature, a seal or DocuSign needs to work on."""

from __future__ import annotations

import io

from pypdf import PdfWriter


def blank_pdf(pages: int = 1) -> bytes:
    """A valid PDF of `pages` empty A4 pages."""
    writer = PdfWriter()
    for _ in range(pages):
        writer.add_blank_page(width=595, height=842)
    buffer = io.BytesIO()
    writer.write(buffer)
    return buffer.getvalue()
