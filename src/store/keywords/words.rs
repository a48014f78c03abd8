//! Words as keyword search sees them: runs of letters and digits, lower-cased, with
//! accents folded away (`Café` and `cafe` are one word), at most [`MAX_WORD_BYTES`]
//! long. Documents and queries are cut the same way.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Longer runs are not words anyone searches for (hashes, base64); they are skipped so
/// that no text can make the vocabulary's keys large.
pub const MAX_WORD_BYTES: usize = 64;

/// Query words kept at most; the rest of a longer query is ignored.
pub const MAX_QUERY_WORDS: usize = 64;

/// Calls `each` with every word of `text`, in order.
pub fn each_word(text: &str, mut each: impl FnMut(&str)) {
    let mut folded = String::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        if raw.is_empty() || raw.len() > MAX_WORD_BYTES * 4 {
            continue;
        }
        folded.clear();
        if raw.is_ascii() {
            folded.extend(raw.chars().map(|c| c.to_ascii_lowercase()));
        } else {
            folded.extend(
                raw.nfd()
                    .filter(|c| !is_combining_mark(*c))
                    .flat_map(char::to_lowercase),
            );
        }
        if !folded.is_empty() && folded.len() <= MAX_WORD_BYTES {
            each(&folded);
        }
    }
}

/// Words too common to say anything about relevance (English).
const STOPWORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from", "how",
    "i", "in", "is", "it", "its", "me", "my", "of", "on", "or", "our", "so", "that", "the",
    "their", "them", "there", "these", "this", "to", "was", "we", "what", "when", "where", "which",
    "who", "why", "will", "with", "you", "your",
];

/// The distinct words a query looks for: stopwords are left out unless the query has
/// nothing else; at most [`MAX_QUERY_WORDS`].
pub fn query_words(query: &str) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    each_word(query, |w| {
        if !all.iter().any(|x| x == w) {
            all.push(w.to_owned());
        }
    });
    let content: Vec<String> = all
        .iter()
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .cloned()
        .collect();
    let mut chosen = if content.is_empty() { all } else { content };
    chosen.truncate(MAX_QUERY_WORDS);
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<String> {
        let mut out = Vec::new();
        each_word(text, |w| out.push(w.to_owned()));
        out
    }

    #[test]
    fn words_are_folded_and_split_on_everything_else() {
        assert_eq!(
            words("Café déjà-vu, NAÏVE x86_64 über"),
            ["cafe", "deja", "vu", "naive", "x86", "64", "uber"]
        );
        assert_eq!(words("  ...  "), Vec::<String>::new());
        assert_eq!(words("Straße ΣΊΣΥΦΟΣ"), ["straße", "σισυφοσ"]);
    }

    #[test]
    fn overlong_runs_are_skipped() {
        let long = "a".repeat(MAX_WORD_BYTES + 1);
        assert_eq!(words(&format!("short {long} tail")), ["short", "tail"]);
        assert_eq!(words(&"b".repeat(MAX_WORD_BYTES)).len(), 1);
    }

    #[test]
    fn query_words_drop_stopwords_and_repeats() {
        assert_eq!(
            query_words("How do I borrow the borrowed Borrow?"),
            ["borrow", "borrowed"]
        );
        // Nothing but stopwords: they are all there is to look for.
        assert_eq!(query_words("to be or to be"), ["to", "be", "or"]);
        assert_eq!(query_words("to be or not to be"), ["not"]);
        let many: String = (0..100).map(|i| format!("w{i} ")).collect();
        assert_eq!(query_words(&many).len(), MAX_QUERY_WORDS);
    }
}
