"""A minimal PDF writer: pages of monospaced text lines, nothing else.

An audit export must open anywhere without a PDF library on our side: PDF 1.4 with the
standard Courier font (every viewer has it), uncompressed content streams, and an exact
cross-reference table. Text outside Latin-1 is shown as `?` (the standard fonts' encoding).
"""

from __future__ import annotations

from collections.abc import Sequence

LINES_PER_PAGE = 62
CHARS_PER_LINE = 95  # Courier 8 pt on A4 within 36 pt margins
_PAGE = (595, 842)  # A4 in points


def _escape(text: str) -> bytes:
    raw = text.encode("latin-1", errors="replace")
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def wrap(line: str, width: int = CHARS_PER_LINE) -> list[str]:
    """A long line as several, continuation lines indented."""
    if len(line) <= width:
        return [line]
    out = [line[:width]]
    rest = line[width:]
    while rest:
        out.append("    " + rest[: width - 4])
        rest = rest[width - 4 :]
    return out


def text_pdf(lines: Sequence[str], title: str) -> bytes:
    """A PDF document showing `lines` (wrapped, paginated), each page footed with its number."""
    wrapped = [part for line in lines for part in wrap(line)] or [""]
    pages = [wrapped[i : i + LINES_PER_PAGE] for i in range(0, len(wrapped), LINES_PER_PAGE)]
    # objects: 1 catalog, 2 page tree, 3 font, 4 info, then a (page, content) pair per page
    objects: list[bytes] = [b"", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>",
                            b"<< /Title (" + _escape(title) + b") /Producer (DEE) >>"]  # fmt: skip
    kids = []
    for number, page in enumerate(pages, start=1):
        page_id, content_id = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_id} 0 R".encode())
        body = [b"BT /F1 8 Tf 10 TL 36 806 Td"]
        body += [b"(" + _escape(line) + b") Tj T*" for line in page]
        body.append(b"ET BT /F1 8 Tf 36 20 Td (" + _escape(f"{title} - page {number} of {len(pages)}") + b") Tj ET")
        stream = b"\n".join(body)
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (*_PAGE, content_id))  # fmt: skip
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects[0] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objects[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % len(pages)
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info 4 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
