"""What the document types ragbox accepts contain, for schemathesis (SCHEMATHESIS_HOOKS).

The OpenAPI document declares an upload's `file` part by its media types (text/plain,
text/markdown, text/html, application/pdf); a schema cannot say what a file of each type
holds. Without these, schemathesis fills a `text/plain` part with a PNG image, which the
server rightly refuses. These strategies generate files of each declared type: text with
at least one visible character (a document of white space only is refused as empty),
HTML around such text, and a small well-formed PDF.
"""

import html
import unicodedata

import schemathesis
from hypothesis import strategies as st


def _visible(text):
    return any(not (c.isspace() or unicodedata.category(c).startswith("C")) for c in text)


_text = st.text(min_size=1, max_size=2000).filter(_visible)

_PDF = (
    b"%PDF-1.4\n1 0 obj\n<</Type/Catalog/Pages 2 0 R>>\nendobj\n"
    b"2 0 obj\n<</Type/Pages/Kids[3 0 R]/Count 1>>\nendobj\n"
    b"3 0 obj\n<</Type/Page/Parent 2 0 R/MediaBox[0 0 1 1]>>\nendobj\n"
    b"trailer\n<</Size 4/Root 1 0 R>>\n%%EOF\n"
)

schemathesis.openapi.media_type("text/plain", _text.map(lambda t: t.encode("utf-8")))
schemathesis.openapi.media_type("text/markdown", _text.map(lambda t: f"# {t}".encode("utf-8")))
schemathesis.openapi.media_type(
    "text/html", _text.map(lambda t: f"<p>{html.escape(t)}</p>".encode("utf-8"))
)
schemathesis.openapi.media_type("application/pdf", st.just(_PDF))
