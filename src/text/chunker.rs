//! Tokenizer-aware chunking: windows of at most `max_tokens` model tokens with
//! `overlap` tokens shared between neighbours, ending at a paragraph break, else a
//! sentence end, else a word boundary, whichever comes last in the window's second half.
//! Each chunk records its character offsets in the original text for citations.

use tokenizers::Tokenizer;

/// One chunk of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Position in the document, from 0.
    pub index: usize,
    /// The chunk's text: exactly `text[byte_start..byte_end]`.
    pub text: String,
    /// First character (Unicode scalar) of the chunk in the document.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Model tokens in the chunk (without special tokens).
    pub tokens: usize,
}

/// Why text could not be chunked.
#[derive(Debug, thiserror::Error)]
#[error("tokenizing failed: {0}")]
pub struct ChunkError(String);

/// Cuts `text` into chunks; an empty or blank text gives no chunks.
pub fn chunk(
    tokenizer: &Tokenizer,
    text: &str,
    max_tokens: usize,
    overlap: usize,
) -> Result<Vec<Chunk>, ChunkError> {
    let encoding = tokenizer
        .encode(text, false)
        .map_err(|e| ChunkError(e.to_string()))?;
    // Byte spans of the tokens, in order.
    let spans: Vec<(usize, usize)> = encoding.get_offsets().to_vec();
    let n = spans.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let max_tokens = max_tokens.max(2);
    let overlap = overlap.min(max_tokens / 2);

    // A token may start a chunk or end one only where a word starts (a gap before it).
    let word_start = |i: usize| i == 0 || i >= n || spans[i].0 > spans[i - 1].1;
    let gap = |i: usize| &text[spans[i - 1].1..spans[i].0];
    let score = |i: usize| -> u8 {
        if i >= n {
            return 4;
        }
        if !word_start(i) {
            return 0;
        }
        let between = gap(i);
        if between.contains("\n\n") || between.contains("\r\n\r\n") {
            3
        } else if text[..spans[i - 1].1].ends_with(['.', '!', '?', ':', ';'])
            || between.contains('\n')
        {
            2
        } else {
            1
        }
    };

    let mut windows: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    loop {
        let limit = (start + max_tokens).min(n);
        let mut end = limit;
        if limit < n {
            let floor = start + max_tokens / 2;
            let mut best = (0u8, limit);
            for i in (floor.max(start + 1)..=limit).rev() {
                let s = score(i);
                if s > best.0 {
                    best = (s, i);
                }
                if s == 3 {
                    break;
                }
            }
            if best.0 > 0 {
                end = best.1;
            }
        }
        windows.push((start, end));
        if end >= n {
            break;
        }
        let mut next = end.saturating_sub(overlap).max(start + 1);
        while next < end && !word_start(next) {
            next += 1;
        }
        start = next;
    }

    let char_at = CharIndex::new(text);
    let last = windows.len() - 1;
    Ok(windows
        .into_iter()
        .enumerate()
        .map(|(index, (s, e))| {
            // The first chunk starts at the text's start and the last ends at its end,
            // so that leading and trailing text belongs to a chunk too.
            let byte_start = if index == 0 { 0 } else { spans[s].0 };
            let byte_end = if index == last {
                text.len()
            } else {
                spans[e - 1].1
            };
            Chunk {
                index,
                text: text[byte_start..byte_end].to_owned(),
                start: char_at.of(byte_start),
                end: char_at.of(byte_end),
                tokens: e - s,
            }
        })
        .collect())
}

/// Maps byte offsets to character offsets.
struct CharIndex {
    boundaries: Vec<usize>,
}

impl CharIndex {
    fn new(text: &str) -> Self {
        Self {
            boundaries: text.char_indices().map(|(b, _)| b).collect(),
        }
    }

    fn of(&self, byte: usize) -> usize {
        self.boundaries.partition_point(|&b| b < byte)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn tokenizer() -> &'static Tokenizer {
        static T: OnceLock<Tokenizer> = OnceLock::new();
        T.get_or_init(|| {
            let dir =
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/all-MiniLM-L6-v2");
            crate::ml::embedder::load_tokenizer(&dir)
                .expect("tokenizer: run ./install.sh --models-only first")
        })
    }

    fn count(text: &str) -> usize {
        tokenizer().encode(text, false).unwrap().get_ids().len()
    }

    fn check(text: &str, max: usize, overlap: usize) -> Vec<Chunk> {
        let chunks = chunk(tokenizer(), text, max, overlap).unwrap();
        let chars: Vec<char> = text.chars().collect();
        let mut covered = vec![false; chars.len()];
        for (i, c) in chunks.iter().enumerate() {
            assert_eq!(c.index, i);
            assert!(c.tokens <= max, "chunk {i} has {} tokens", c.tokens);
            assert!(
                count(&c.text) <= max,
                "chunk {i} re-tokenizes to {} tokens",
                count(&c.text)
            );
            let slice: String = chars[c.start..c.end].iter().collect();
            assert_eq!(slice, c.text, "offsets of chunk {i}");
            covered[c.start..c.end].iter_mut().for_each(|x| *x = true);
        }
        for (i, ch) in chars.iter().enumerate() {
            assert!(
                covered[i] || ch.is_whitespace(),
                "char {i} {ch:?} not covered"
            );
        }
        chunks
    }

    #[test]
    fn short_text_is_one_chunk() {
        let chunks = check("Hello world. This is short.", 200, 40);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].text, "Hello world. This is short.");
        assert!(check("   \n ", 200, 40).is_empty());
    }

    #[test]
    fn prefers_paragraph_and_sentence_ends() {
        let para = "The quick brown fox jumps over the lazy dog. ".repeat(6);
        let text = format!("{}\n\n{}\n\n{}", para.trim(), para.trim(), para.trim());
        let chunks = check(&text, 120, 20);
        assert!(chunks.len() >= 2);
        // Every chunk but the last ends at a sentence end.
        for c in &chunks[..chunks.len() - 1] {
            assert!(c.text.trim_end().ends_with('.'), "{:?}", c.text);
        }
    }

    #[test]
    fn neighbours_overlap() {
        let text = (0..400)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = check(&text, 50, 10);
        for pair in chunks.windows(2) {
            assert!(pair[1].start < pair[0].end, "chunks overlap");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn chunks_cover_the_text_within_the_limit_deterministically(
            words in proptest::collection::vec("[a-zA-Z0-9éü]{1,12}|[.,;!?]|\n\n|\n|ünïcødé|日本語", 0..600),
            max in 16usize..120,
            overlap_pct in 0usize..50,
        ) {
            let text = words.join(" ");
            let overlap = max * overlap_pct / 100;
            let first = check(&text, max, overlap);
            let second = chunk(tokenizer(), &text, max, overlap).unwrap();
            prop_assert_eq!(first, second);
        }
    }
}
