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

/// The media types a document may be uploaded as.
pub const MEDIA_TYPES: &[&str] = &[
    "text/plain",
    "text/markdown",
    "text/html",
    "application/pdf",
];

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

    /// A short name for the command line of `ragbox extract`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Markdown => "markdown",
            Self::Html => "html",
            Self::Pdf => "pdf",
        }
    }

    /// The kind named by [`Kind::name`].
    pub fn from_name(name: &str) -> Option<Self> {
        [Self::Text, Self::Markdown, Self::Html, Self::Pdf]
            .into_iter()
            .find(|k| k.name() == name)
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
    #[error("unsupported document type{0}; accepted: {accepted}", accepted = MEDIA_TYPES.join(", "))]
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

/// Elements may nest this deep in an HTML document; deeper ones are refused, since
/// HTML-to-text conversion costs the square of the depth.
pub const MAX_HTML_DEPTH: usize = 256;

/// Checks, in one linear pass and without parsing, what can be checked at upload time:
/// text and HTML must be UTF-8 with some content, HTML must not nest deeper than
/// [`MAX_HTML_DEPTH`], a PDF must start like one. The parsing is the job's.
pub fn precheck(kind: Kind, bytes: &[u8]) -> Result<(), ExtractError> {
    match kind {
        Kind::Pdf if !bytes.starts_with(b"%PDF-") => Err(ExtractError::Undecodable(
            "the file is not a PDF (no %PDF- header)".into(),
        )),
        Kind::Pdf if bytes.len() < 16 => Err(ExtractError::Empty),
        Kind::Pdf => Ok(()),
        Kind::Text | Kind::Markdown => nonblank(utf8(bytes)?),
        Kind::Html => {
            let text = utf8(bytes)?;
            check_html_depth(text)?;
            nonblank(text)
        }
    }
}

fn nonblank(text: &str) -> Result<(), ExtractError> {
    if text.chars().all(|c| c.is_whitespace() || c.is_control()) {
        return Err(ExtractError::Empty);
    }
    Ok(())
}

/// Extracts the text of a document.
pub fn extract(kind: Kind, bytes: &[u8]) -> Result<String, ExtractError> {
    let text = match kind {
        Kind::Text | Kind::Markdown => utf8(bytes)?.to_owned(),
        Kind::Html => {
            let source = utf8(bytes)?;
            check_html_depth(source)?;
            html(source)?
        }
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

/// Elements without content.
const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "keygen", "command", "basefont", "frame", "isindex",
];
/// Elements whose end tag may be left out (they close themselves at the next sibling),
/// and the document's frame: neither makes nesting deeper.
const SELF_CLOSING: &[&str] = &[
    "p", "li", "dt", "dd", "tr", "td", "th", "thead", "tbody", "tfoot", "option", "optgroup",
    "colgroup", "caption", "rb", "rt", "rtc", "rp", "html", "head", "body",
];
/// Elements whose content is raw text, read to their end tag.
const RAW: &[&str] = &["script", "style", "textarea", "title", "xmp", "plaintext"];

/// Refuses HTML whose elements nest deeper than [`MAX_HTML_DEPTH`], scanning tags in one
/// linear pass (comments, declarations and raw-text elements skipped). Unclosed
/// elements count as open, as a parser would nest them.
pub fn check_html_depth(source: &str) -> Result<(), ExtractError> {
    let bytes = source.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while let Some(at) = memchr(b'<', &bytes[i..]) {
        i += at + 1;
        let rest = &bytes[i..];
        if rest.starts_with(b"!--") {
            i += find(rest, b"-->").map_or(rest.len(), |e| e + 3);
            continue;
        }
        if rest.first().is_some_and(|b| *b == b'!' || *b == b'?') {
            i += memchr(b'>', rest).map_or(rest.len(), |e| e + 1);
            continue;
        }
        let closing = rest.first() == Some(&b'/');
        let name_start = usize::from(closing);
        let name_len = rest[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-' || **b == b':')
            .count();
        if name_len == 0 {
            continue;
        }
        let name = source[i + name_start..i + name_start + name_len].to_ascii_lowercase();
        let end = memchr(b'>', rest).map_or(rest.len(), |e| e + 1);
        let self_closed = end >= 2 && rest[end - 2] == b'/';
        i += end;
        if VOID.contains(&name.as_str()) || SELF_CLOSING.contains(&name.as_str()) {
            continue;
        }
        if closing {
            depth = depth.saturating_sub(1);
            continue;
        }
        if self_closed {
            continue;
        }
        if RAW.contains(&name.as_str()) {
            let close = format!("</{name}");
            let lower_rest = &bytes[i..];
            i += find_ascii_ci(lower_rest, close.as_bytes()).unwrap_or(lower_rest.len());
            continue;
        }
        depth += 1;
        if depth > MAX_HTML_DEPTH {
            return Err(ExtractError::Undecodable(format!(
                "the HTML nests elements deeper than {MAX_HTML_DEPTH} levels"
            )));
        }
    }
    Ok(())
}

fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn find_ascii_ci(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
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
    fn html_depth_is_bounded_and_counted_like_a_parser() {
        let deep = format!(
            "{}x{}",
            "<blockquote>".repeat(300),
            "</blockquote>".repeat(300)
        );
        assert!(matches!(
            precheck(Kind::Html, deep.as_bytes()),
            Err(ExtractError::Undecodable(m)) if m.contains("deeper")
        ));
        let unclosed = format!("{}x", "<div>".repeat(MAX_HTML_DEPTH + 1));
        assert!(check_html_depth(&unclosed).is_err());
        // Siblings, void and optional-end elements, comments and scripts add no depth.
        let wide = format!(
            "<html><body>{}{}{}<!-- {} --><script>{}</script></body></html>",
            "<div><p>a</div>".repeat(5000),
            "<br><img src=x><li>item".repeat(5000),
            "<span/>".repeat(5000),
            "<div>".repeat(1000),
            "<div>".repeat(1000),
        );
        assert!(check_html_depth(&wide).is_ok());
        let ok = format!("{}x{}", "<div>".repeat(200), "</div>".repeat(200));
        assert!(precheck(Kind::Html, ok.as_bytes()).is_ok());
        assert_eq!(Kind::from_name(Kind::Pdf.name()), Some(Kind::Pdf));
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
