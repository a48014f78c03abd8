//! A reader of `text/event-stream` bodies: bytes in, whole events out, whatever the
//! chunk boundaries.

/// One event: its `event:` name (empty when none was given) and its `data:` lines
/// joined by newlines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `event:` field.
    pub event: String,
    /// `data:` fields.
    pub data: String,
}

/// Accumulates bytes until events are complete.
#[derive(Debug, Default)]
pub struct SseParser {
    pending: Vec<u8>,
    event: String,
    data: Vec<String>,
}

/// Bytes held while waiting for the end of a line; more is a broken stream.
const MAX_LINE: usize = 4 << 20;

impl SseParser {
    /// Feeds the next bytes; returns the events they completed. A line longer than
    /// 4 MiB is an error.
    pub fn push(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, String> {
        self.pending.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(len) = self.pending[start..].iter().position(|&b| b == b'\n') {
            let mut line = &self.pending[start..start + len];
            start += len + 1;
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            let line = String::from_utf8_lossy(line).into_owned();
            if let Some(event) = self.line(&line) {
                out.push(event);
            }
        }
        self.pending.drain(..start);
        if self.pending.len() > MAX_LINE {
            return Err("an event-stream line is longer than 4 MiB".into());
        }
        Ok(out)
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() && self.event.is_empty() {
                return None;
            }
            return Some(SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data).join("\n"),
            });
        }
        if line.starts_with(':') {
            return None; // a comment (keep-alive)
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => self.event = value.to_owned(),
            "data" => self.data.push(value.to_owned()),
            _ => {} // id, retry: not needed here
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_any_split() {
        let body = "event: message_start\r\ndata: {\"a\":1}\r\n\r\n: keep-alive\n\ndata: one\ndata: two\n\ndata: [DONE]\n\n";
        let want = vec![
            SseEvent {
                event: "message_start".into(),
                data: "{\"a\":1}".into(),
            },
            SseEvent {
                event: String::new(),
                data: "one\ntwo".into(),
            },
            SseEvent {
                event: String::new(),
                data: "[DONE]".into(),
            },
        ];
        for size in 1..body.len() {
            let mut parser = SseParser::default();
            let mut got = Vec::new();
            for chunk in body.as_bytes().chunks(size) {
                got.extend(parser.push(chunk).unwrap());
            }
            assert_eq!(got, want, "chunks of {size}");
        }
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut parser = SseParser::default();
        let err = parser.push(&vec![b'x'; MAX_LINE + 1]).unwrap_err();
        assert!(err.contains("4 MiB"));
    }
}
