"""Real files of every ingestible type, made by the tests, each holding known facts.

Each file states a fact no other file does, so a search for it names its document.
"""

from __future__ import annotations

import io
import json
from typing import Any

import httpx

from tests.integration.jobclient import poll

# filename -> (content type, a phrase found only in that file)
FACTS = {
    "handbook.pdf": "The orbital station Kestrel rotates every ninety seconds",
    "design.docx": "The cobalt gateway batches invoices every fifteen minutes",
    "pricing.html": "Platinum tier",
    "notes.md": "The lighthouse keeper logs barometric pressure at dawn",
    "inventory.csv": "walnut",
    "config.json": "marigold",
    "readme.txt": "The glacier sensor network reports meltwater turbidity hourly",
}


def pdf_bytes(pages: int = 3) -> bytes:
    """A multi-page PDF: a heading and paragraphs on each page; page 2 has the Kestrel fact."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=False)
    for page in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", "B", 16)
        pdf.cell(0, 10, f"Chapter {page} Operations", new_x="LMARGIN", new_y="NEXT")
        pdf.ln(6)
        pdf.set_font("helvetica", size=11)
        body = (f"This page describes routine operations for chapter {page}. Crews rotate "
                "shifts and file reports with the duty officer before the next shift begins.")
        if page == 2:
            body = (FACTS["handbook.pdf"] + ", which sets the rhythm of every experiment "
                    "aboard and keeps the solar panels facing the sun.")
        pdf.multi_cell(0, 5, body, new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def docx_bytes() -> bytes:
    """A docx with headings over paragraphs; the 'Billing' section holds the cobalt fact."""
    import docx

    document = docx.Document()
    document.add_heading("Architecture Overview", level=1)
    document.add_paragraph("The platform is split into services that communicate through a "
                           "message bus and share nothing else.")
    document.add_heading("Billing", level=2)
    document.add_paragraph(FACTS["design.docx"] + " and retries failed ones with backoff.")
    document.add_heading("Observability", level=2)
    document.add_paragraph("Every service exports metrics and structured logs to a central "
                           "collector that operators query during incidents.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


HTML = """<!doctype html><html><head><title>Pricing</title></head><body>
<h1>Pricing plans</h1>
<p>Our plans are billed monthly and can be cancelled at any time without fees.</p>
<table>
<tr><th>Plan</th><th>Seats</th><th>Monthly price</th></tr>
<tr><td>Starter tier</td><td>5</td><td>19 dollars</td></tr>
<tr><td>Platinum tier</td><td>500</td><td>4999 dollars</td></tr>
</table>
<h2>Support</h2><p>Support answers within one business day on every plan.</p>
</body></html>"""

MARKDOWN = """# Coastal Station Manual

## Daily routine

The lighthouse keeper logs barometric pressure at dawn and again at dusk, then compares both
readings with the forecast received over the radio.

## Emergencies

- Ring the bell three times when fog rolls in.
- Light the backup lamp if the main lamp fails.
"""

CSV = "item,quantity,warehouse\noak planks,120,north\nwalnut veneer,45,east\npine beams,300,south\n"

JSON = {"project": "garden", "plants": [{"name": "marigold", "bed": 3, "water": "daily"},
                                        {"name": "fern", "bed": 1, "water": "weekly"}]}

TXT = (FACTS["readme.txt"] + " to the hydrology lab.\n\n"
       "Field teams replace batteries every spring before the thaw begins.\n")


def all_files() -> dict[str, tuple[bytes, str]]:
    """filename -> (bytes, content type), one per supported type."""
    return {
        "handbook.pdf": (pdf_bytes(), "application/pdf"),
        "design.docx": (docx_bytes(), "application/vnd.openxmlformats-officedocument."
                                      "wordprocessingml.document"),
        "pricing.html": (HTML.encode(), "text/html"),
        "notes.md": (MARKDOWN.encode(), "text/markdown"),
        "inventory.csv": (CSV.encode(), "text/csv"),
        "config.json": (json.dumps(JSON).encode(), "application/json"),
        "readme.txt": (TXT.encode(), "text/plain"),
    }


# -- bombs: a few bytes that describe unbounded work ------------------------------------------


def pdf_page_tree_bomb(references: int = 200_000) -> bytes:
    """A 1.2 MB PDF whose page tree lists one page `references` times, written as raw objects."""
    kids = " ".join(["3 0 R"] * references)
    text = b"BT /F1 12 Tf 72 720 Td (The same page again) Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {references} >>".encode(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(text), text),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = io.BytesIO(b"%PDF-1.7\n")
    out.seek(0, io.SEEK_END)
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n%s\nendobj\n" % (number, body))
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    out.write(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    out.write(b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n"
              % (len(objects) + 1, xref))
    return out.getvalue()


def docx_paragraph_bomb(paragraphs: int = 10_000_000) -> bytes:
    """An 88 KB .docx whose document.xml inflates to 60 MB of empty paragraphs."""
    import zipfile

    main = "http://schemas.openxmlformats.org/wordprocessingml/2006/main"
    document = (f'<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="{main}">'
                "<w:body>").encode() + b"<w:p/>" * paragraphs + b"</w:body></w:document>"
    content_types = (
        '<?xml version="1.0" encoding="UTF-8"?><Types xmlns="http://schemas.openxmlformats.org'
        '/package/2006/content-types"><Default Extension="rels" ContentType="application/'
        'vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" '
        'ContentType="application/xml"/><Override PartName="/word/document.xml" ContentType='
        '"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml"/>'
        "</Types>")
    relationships = (
        '<?xml version="1.0" encoding="UTF-8"?><Relationships xmlns="http://schemas.'
        'openxmlformats.org/package/2006/relationships"><Relationship Id="rId1" Type="http://'
        'schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
        'Target="word/document.xml"/></Relationships>')
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("[Content_Types].xml", content_types)
        archive.writestr("_rels/.rels", relationships)
        archive.writestr("word/document.xml", document)
    return out.getvalue()


def wide_csv(columns: int = 1_000_000) -> bytes:
    """A CSV whose header and one row have `columns` columns each."""
    header = ",".join(f"c{i}" for i in range(columns))
    return f"{header}\n{','.join(['1'] * columns)}\n".encode()


def create_base(http: httpx.Client, headers: dict[str, str] | None = None,
                **fields: Any) -> dict[str, Any]:
    response = http.post("/v1/knowledge", headers=headers,
                         json={"name": fields.pop("name", "kb"), **fields})
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def upload(http: httpx.Client, base_id: str, filename: str, content: bytes,
           content_type: str = "application/octet-stream", *,
           metadata: str | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    data = {"metadata": metadata} if metadata is not None else None
    return http.post(f"/v1/knowledge/{base_id}/documents", headers=headers, data=data,
                     files={"file": (filename, content, content_type)})


def wait_document(http: httpx.Client, document_id: str, *, timeout_s: float = 90.0,
                  headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The document once it is no longer processing."""

    def check() -> dict[str, Any] | None:
        body: dict[str, Any] = http.get(f"/v1/documents/{document_id}", headers=headers).json()
        return body if body.get("status") in ("processed", "failed") else None

    return poll(check, timeout_s, interval_s=0.1, what=f"document {document_id}")


def ingest(http: httpx.Client, base_id: str, filename: str, content: bytes,
           content_type: str = "application/octet-stream", **kwargs: Any) -> dict[str, Any]:
    """Upload and wait; returns the finished document."""
    response = upload(http, base_id, filename, content, content_type, **kwargs)
    assert response.status_code == 202, response.text
    return wait_document(http, response.json()["document"]["id"],
                         headers=kwargs.get("headers"))
