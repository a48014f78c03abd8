//! Text extraction from the accepted document types: plain text, Markdown, HTML (text
//! only; scripts and styles dropped) and PDF (its text layer, pure Rust).

/// An accepted document type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `text/plain`.
    Text,
    /// `text/markdown`.
    Markdown,
    /// `text/html`.
    Html,
    /// `application/pdf`.
    Pdf,
}

/// The accepted media types, for error messages.
pub const ACCEPTED: &str = "text/plain, text/markdown, text/html, application/pdf";

impl Kind {
    /// The media type stored and shown for documents of this kind.
    pub fn media_type(self) -> &'static str {
        match self {
            Self::Text => "text/plain",
            Self::Markdown => "text/markdown",
            Self::Html => "text/html",
            Self::Pdf => "application/pdf",
        }
    }

    /// Parses a stored media type.
    pub fn from_media_type(s: &str) -> Option<Self> {
        let base = s
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match base.as_str() {
            "text/plain" => Some(Self::Text),
            "text/markdown" | "text/x-markdown" => Some(Self::Markdown),
            "text/html" | "application/xhtml+xml" => Some(Self::Html),
            "application/pdf" => Some(Self::Pdf),
            _ => None,
        }
    }

    fn from_extension(name: &str) -> Option<Self> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" | "log" | "csv" => Some(Self::Text),
            "md" | "markdown" => Some(Self::Markdown),
            "html" | "htm" | "xhtml" => Some(Self::Html),
            "pdf" => Some(Self::Pdf),
            _ => None,
        }
    }
}

/// Why a document's text could not be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// Not one of the accepted types (415).
    #[error("unsupported document type{0}; accepted: {ACCEPTED}")]
    Unsupported(String),
    /// No text in it (422).
    #[error("the document contains no text")]
    Empty,
    /// Bytes that are not what the type says (422, or a failed job for PDFs).
    #[error("{0}")]
    Undecodable(String),
}

/// Decides the type from the declared media type, the file name and the bytes.
pub fn detect(
    content_type: Option<&str>,
    filename: Option<&str>,
    bytes: &[u8],
) -> Result<Kind, ExtractError> {
    let declared = content_type
        .map(|c| {
            c.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|c| !c.is_empty() && c != "application/octet-stream");
    if let Some(ct) = &declared {
        return Kind::from_media_type(ct)
            .ok_or_else(|| ExtractError::Unsupported(format!(" `{ct}`")));
    }
    if let Some(kind) = filename.and_then(Kind::from_extension) {
        return Ok(kind);
    }
    if bytes.starts_with(b"%PDF-") {
        return Ok(Kind::Pdf);
    }
    match filename {
        Some(name) => Err(ExtractError::Unsupported(format!(" for `{name}`"))),
        None => Ok(Kind::Text),
    }
}

/// Checks what can be checked at upload time without the heavy work: text must be
/// UTF-8 with some content; a PDF must start like one.
pub fn precheck(kind: Kind, bytes: &[u8]) -> Result<(), ExtractError> {
    match kind {
        Kind::Pdf if !bytes.starts_with(b"%PDF-") => Err(ExtractError::Undecodable(
            "the file is not a PDF (no %PDF- header)".into(),
        )),
        Kind::Pdf if bytes.len() < 16 => Err(ExtractError::Empty),
        Kind::Pdf => Ok(()),
        _ => extract(kind, bytes).map(|_| ()),
    }
}

/// Extracts the text of a document.
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<String, ExtractError> {
    let text = match kind {
        Kind::Text | Kind::Markdown => utf8(bytes)?.to_owned(),
        Kind::Html => html(utf8(bytes)?)?,
        Kind::Pdf => pdf(bytes)?,
    };
    let text = normalise(&text);
    if text.trim().is_empty() {
        return Err(ExtractError::Empty);
    }
    Ok(text)
}

fn utf8(bytes: &[u8]) -> Result<&str, ExtractError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    std::str::from_utf8(bytes).map_err(|e| {
        ExtractError::Undecodable(format!(
            "the text is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })
}

fn html(source: &str) -> Result<String, ExtractError> {
    html2text::config::plain_no_decorate()
        .allow_width_overflow()
        .string_from_read(source.as_bytes(), 10_000)
        .map_err(|e| ExtractError::Undecodable(format!("the HTML could not be read: {e}")))
}

fn pdf(bytes: &[u8]) -> Result<String, ExtractError> {
    // pdf-extract panics on some malformed files; a panic here is a bad document.
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(ExtractError::Undecodable(format!(
            "the PDF could not be read: {e}"
        ))),
        Err(_) => Err(ExtractError::Undecodable("the PDF is malformed".into())),
    }
}

/// Unifies line ends and drops control characters other than newlines and tabs.
fn normalise(text: &str) -> String {
    text.replace("\r\n", "\n")
        .chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_types() {
        assert_eq!(
            detect(Some("text/plain; charset=utf-8"), None, b"x").unwrap(),
            Kind::Text
        );
        assert_eq!(detect(None, Some("a.MD"), b"x").unwrap(), Kind::Markdown);
        assert_eq!(
            detect(Some("application/octet-stream"), Some("a.htm"), b"x").unwrap(),
            Kind::Html
        );
        assert_eq!(detect(None, Some("blob"), b"%PDF-1.4").unwrap(), Kind::Pdf);
        assert!(matches!(
            detect(Some("image/png"), None, b"x"),
            Err(ExtractError::Unsupported(_))
        ));
        assert!(matches!(
            detect(None, Some("a.docx"), b"PK"),
            Err(ExtractError::Unsupported(_))
        ));
    }

    #[test]
    fn html_drops_scripts_and_styles() {
        let html = "<html><head><style>.x{color:red}</style><script>alert('boo')</script></head>\
                    <body><h1>Title</h1><p>Hello <b>there</b>.</p><script>var y = 1;</script></body></html>";
        let text = extract(Kind::Html, html.as_bytes()).unwrap();
        assert!(
            text.contains("Title") && text.contains("Hello there."),
            "{text}"
        );
        assert!(
            !text.contains("alert") && !text.contains("color") && !text.contains("var y"),
            "{text}"
        );
    }

    #[test]
    fn empty_and_undecodable() {
        assert_eq!(extract(Kind::Text, b"  \n\t "), Err(ExtractError::Empty));
        assert!(matches!(
            extract(Kind::Text, b"\xff\xfe\x00bad"),
            Err(ExtractError::Undecodable(_))
        ));
        assert!(matches!(
            precheck(Kind::Pdf, b"not a pdf at all"),
            Err(ExtractError::Undecodable(_))
        ));
        assert!(matches!(
            extract(Kind::Pdf, b"%PDF-1.4 garbage garbage garbage"),
            Err(ExtractError::Undecodable(_))
        ));
    }
}
