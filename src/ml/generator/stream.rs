//! Incremental text: the decoded answer so far in, the next piece to send out, holding
//! back incomplete characters and what may begin a stop sequence.

/// Turns the decoded text so far into new pieces: holds back an incomplete UTF-8
/// character and anything that may be the start of a stop sequence, and cuts the text
/// at the first stop sequence.
pub(super) struct TextStream<'a> {
    stops: &'a [String],
    sent: usize,
    held: String,
}

impl<'a> TextStream<'a> {
    pub(super) fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            sent: 0,
            held: String::new(),
        }
    }

    /// The next piece to send, and whether a stop sequence was reached.
    pub(super) fn advance(&mut self, text: &str) -> (String, bool) {
        let text = text.trim_end_matches('\u{FFFD}');
        if let Some(at) = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| text.find(s.as_str()))
            .min()
        {
            let piece = text.get(self.sent..at).unwrap_or_default().to_owned();
            self.sent = at.max(self.sent);
            return (piece, true);
        }
        // Keep back the longest tail that could begin a stop sequence.
        let mut keep = 0;
        for stop in self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if text.ends_with(&stop[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let end = text.len() - keep;
        let piece = text.get(self.sent..end).unwrap_or_default().to_owned();
        self.held = text[end..].to_owned();
        self.sent = self.sent.max(end);
        (piece, false)
    }

    /// What was held back, at the end of generation.
    pub(super) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stream_cuts_at_stop_sequences_and_holds_their_prefixes() {
        let stops = vec!["\nUser:".to_owned()];
        let mut s = TextStream::new(&stops);
        assert_eq!(s.advance("Hello"), ("Hello".into(), false));
        assert_eq!(s.advance("Hello world\nUs"), (" world".into(), false));
        assert_eq!(s.advance("Hello world\nUser: hi"), ("".into(), true));
        let mut s = TextStream::new(&stops);
        s.advance("a\nU");
        assert_eq!(s.flush(), "\nU");
    }

    #[test]
    fn text_stream_waits_for_whole_characters() {
        let mut s = TextStream::new(&[]);
        assert_eq!(s.advance("caf\u{FFFD}"), ("caf".into(), false));
        assert_eq!(s.advance("café"), ("é".into(), false));
    }
}
