//! Incremental text: generated token ids in, pieces of text out. The tokenizer's own
//! `DecodeStream` turns ids into text once its characters are whole; a [`StopFilter`]
//! then holds back what may begin a stop sequence and cuts the text at the first one.

use tokenizers::{
    DecodeStream, DecoderWrapper, ModelWrapper, NormalizerWrapper, PostProcessorWrapper,
    PreTokenizerWrapper, Tokenizer,
};

use super::compute;
use crate::domain::GenError;

/// The `DecodeStream` of a [`Tokenizer`] (whose parts are the wrapper enums).
type Decoder<'t> = DecodeStream<
    't,
    ModelWrapper,
    NormalizerWrapper,
    PreTokenizerWrapper,
    PostProcessorWrapper,
    DecoderWrapper,
>;

/// One answer's text as it is generated.
pub(super) struct TextStream<'t> {
    decoder: Decoder<'t>,
    stops: StopFilter<'t>,
}

impl<'t> TextStream<'t> {
    /// A stream decoding with `tokenizer` (special tokens left out) that ends before
    /// any of `stops`.
    pub(super) fn new(tokenizer: &'t Tokenizer, stops: &'t [String]) -> Self {
        Self {
            decoder: tokenizer.decode_stream(true),
            stops: StopFilter::new(stops),
        }
    }

    /// The text to send after token `id` (often empty: a character or a possible stop
    /// sequence is incomplete), and whether a stop sequence was reached, in which case
    /// the text is what came before it and the answer ends.
    pub(super) fn step(&mut self, id: u32) -> Result<(String, bool), GenError> {
        match self.decoder.step(id).map_err(compute)? {
            Some(text) => Ok(self.stops.push(&text)),
            None => Ok((String::new(), false)),
        }
    }

    /// What was held back, when the answer ends for another reason than a stop
    /// sequence.
    pub(super) fn flush(&mut self) -> String {
        self.stops.flush()
    }
}

/// Cuts text at the first stop sequence, holding back any tail that could be the
/// start of one until the next text shows whether it is.
pub(super) struct StopFilter<'a> {
    stops: &'a [String],
    held: String,
}

impl<'a> StopFilter<'a> {
    /// A filter for `stops` (empty ones never match).
    pub(super) fn new(stops: &'a [String]) -> Self {
        Self {
            stops,
            held: String::new(),
        }
    }

    /// Takes the next text; returns what may be sent now, and whether a stop sequence
    /// was reached (then the text before it is returned and the rest dropped).
    pub(super) fn push(&mut self, text: &str) -> (String, bool) {
        self.held.push_str(text);
        if let Some(at) = self.first_stop() {
            self.held.truncate(at);
            return (std::mem::take(&mut self.held), true);
        }
        let keep = self.possible_start();
        let tail = self.held.split_off(self.held.len() - keep);
        (std::mem::replace(&mut self.held, tail), false)
    }

    /// What was held back.
    pub(super) fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Where the earliest stop sequence in the held text begins.
    fn first_stop(&self) -> Option<usize> {
        self.stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.held.find(s.as_str()))
            .min()
    }

    /// Bytes at the end of the held text that a stop sequence could begin with.
    fn possible_start(&self) -> usize {
        let mut keep = 0;
        for stop in self.stops {
            for (i, _) in stop.char_indices().skip(1) {
                if self.held.ends_with(&stop[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_sequences_cut_the_text_and_their_prefixes_wait() {
        let stops = vec!["\nUser:".to_owned()];
        let mut s = StopFilter::new(&stops);
        assert_eq!(s.push("Hello"), ("Hello".into(), false));
        assert_eq!(s.push(" world\nUs"), (" world".into(), false));
        assert_eq!(s.push("er: hi"), ("".into(), true));
        let mut s = StopFilter::new(&stops);
        assert_eq!(s.push("a\nU"), ("a".into(), false));
        assert_eq!(s.flush(), "\nU");
        // A held prefix that turns out not to be a stop is sent with what follows.
        let mut s = StopFilter::new(&stops);
        assert_eq!(s.push("a\nU"), ("a".into(), false));
        assert_eq!(s.push("p"), ("\nUp".into(), false));
        // The earliest of several stops wins; empty stops never match.
        let stops = vec![String::new(), "c".into(), "b".into()];
        let mut s = StopFilter::new(&stops);
        assert_eq!(s.push("abc"), ("a".into(), true));
    }

    /// A byte-level tokenizer whose tokens are single characters of the byte-level
    /// alphabet: `Ã` and `©` are the two bytes of `é`, `Ċ` is a newline.
    fn tokenizer() -> Tokenizer {
        let vocab = serde_json::json!({"c": 0, "a": 1, "f": 2, "Ã": 3, "©": 4, "Ċ": 5, "U": 6});
        let byte_level = serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
            "use_regex": true,
        });
        serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
            "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": []},
        })
        .to_string()
        .parse()
        .unwrap()
    }

    #[test]
    fn text_waits_for_whole_characters_and_stops_across_tokens() {
        let tokenizer = tokenizer();
        let stops = vec!["\nU".to_owned()];
        let mut s = TextStream::new(&tokenizer, &stops);
        let mut step = |id| s.step(id).unwrap();
        assert_eq!(step(0), ("c".into(), false));
        assert_eq!(step(1), ("a".into(), false));
        assert_eq!(step(2), ("f".into(), false));
        assert_eq!(step(3), ("".into(), false), "half of é");
        assert_eq!(step(4), ("é".into(), false));
        assert_eq!(step(5), ("".into(), false), "a newline may begin the stop");
        assert_eq!(step(6), ("".into(), true));
        let mut s = TextStream::new(&tokenizer, &stops);
        assert_eq!(s.step(1).unwrap(), ("a".into(), false));
        assert_eq!(s.step(5).unwrap(), ("".into(), false));
        assert_eq!(s.flush(), "\n");
    }
}
