//! Which spans of an answer rest on which sources. A sentence that cites `[n]` (or
//! `[n, m]`, `[n][m]`) is attributed to those sources; a sentence that cites none is
//! attributed to the source that holds most of its words, when that source holds most
//! of them (small models quote without citing). Spans are in characters (Unicode scalar
//! values) of the answer, end exclusive, as OpenAI's `start_index`/`end_index` are.

use std::collections::HashSet;

use super::Source;

/// One cited span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citation {
    /// Index into the sources given to the model (`n - 1`).
    pub source: usize,
    /// First character of the span in the answer.
    pub start: usize,
    /// One past its last character.
    pub end: usize,
    /// Whether the answer named the source itself (`[n]`), rather than by its words.
    pub explicit: bool,
}

/// Content words a sentence must share with a source to be attributed to it uncited.
const MIN_SHARED_WORDS: usize = 3;

/// The cited spans of `answer`, in order.
pub fn cite(answer: &str, sources: &[Source]) -> Vec<Citation> {
    if sources.is_empty() {
        return Vec::new();
    }
    let source_words: Vec<HashSet<String>> = sources.iter().map(|s| words(&s.text)).collect();
    let chars: Vec<char> = answer.chars().collect();
    let mut out = Vec::new();
    for (start, end) in sentences(&chars) {
        let text: String = chars[start..end].iter().collect();
        let named: Vec<usize> = markers(&text)
            .into_iter()
            .filter(|n| (1..=sources.len()).contains(n))
            .collect();
        if !named.is_empty() {
            for n in dedup(named) {
                out.push(Citation {
                    source: n - 1,
                    start,
                    end,
                    explicit: true,
                });
            }
            continue;
        }
        let own = words(&text);
        if own.len() < MIN_SHARED_WORDS {
            continue;
        }
        let best = source_words
            .iter()
            .enumerate()
            .map(|(i, w)| (i, own.intersection(w).count()))
            .max_by_key(|&(i, shared)| (shared, std::cmp::Reverse(i)));
        if let Some((i, shared)) = best
            && shared >= MIN_SHARED_WORDS
            && shared * 2 >= own.len()
        {
            out.push(Citation {
                source: i,
                start,
                end,
                explicit: false,
            });
        }
    }
    out
}

fn dedup(mut v: Vec<usize>) -> Vec<usize> {
    let mut seen = HashSet::new();
    v.retain(|n| seen.insert(*n));
    v
}

/// Sentence spans (character indices, trimmed of surrounding white space). A sentence
/// ends after `.`, `!` or `?` followed by white space, or at a line break; citation
/// markers right after the end (`… days. [1]`) stay with the sentence they follow.
fn sentences(chars: &[char]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let ends = c == '\n'
            || (matches!(c, '.' | '!' | '?') && chars.get(i + 1).is_none_or(|n| n.is_whitespace()));
        if ends {
            let mut end = i + 1;
            // Markers after the full stop belong to this sentence.
            let mut j = end;
            while j < chars.len() && chars[j] == ' ' {
                j += 1;
            }
            while let Some(len) = marker_at(&chars[j..]) {
                end = j + len;
                j = end;
                while j < chars.len() && chars[j] == ' ' {
                    j += 1;
                }
            }
            push_trimmed(chars, start, end, &mut out);
            start = end;
            i = end;
            continue;
        }
        i += 1;
    }
    push_trimmed(chars, start, chars.len(), &mut out);
    out
}

fn push_trimmed(chars: &[char], mut start: usize, mut end: usize, out: &mut Vec<(usize, usize)>) {
    while start < end && chars[start].is_whitespace() {
        start += 1;
    }
    while end > start && chars[end - 1].is_whitespace() {
        end -= 1;
    }
    if start < end {
        out.push((start, end));
    }
}

/// The length of a `[n]` or `[n, m, …]` marker at the start of `chars`.
fn marker_at(chars: &[char]) -> Option<usize> {
    if chars.first() != Some(&'[') {
        return None;
    }
    let close = chars.iter().take(32).position(|&c| c == ']')?;
    let inner = &chars[1..close];
    let valid = inner.iter().any(|c| c.is_ascii_digit())
        && inner
            .iter()
            .all(|c| c.is_ascii_digit() || *c == ',' || *c == ' ');
    valid.then_some(close + 1)
}

/// The source numbers a text names as `[n]`, `[n, m]`.
fn markers(text: &str) -> Vec<usize> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if let Some(len) = marker_at(&chars[i..]) {
            let inner: String = chars[i + 1..i + len - 1].iter().collect();
            out.extend(
                inner
                    .split(',')
                    .filter_map(|n| n.trim().parse::<usize>().ok()),
            );
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

/// Words that carry no content of their own.
const STOP_WORDS: &[&str] = &[
    "the", "and", "for", "are", "was", "were", "with", "that", "this", "from", "have", "has",
    "had", "not", "but", "you", "your", "they", "their", "its", "can", "will", "would", "into",
    "than", "then", "them", "there", "these", "those", "which", "what", "when", "who", "how",
    "all", "any", "our", "out", "also", "been", "being", "does", "did", "may", "more", "most",
    "such", "only", "other", "over", "some", "each", "per",
];

/// Lower-cased words of three or more letters or digits, stop words left out.
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 3)
        .map(str::to_lowercase)
        .filter(|w| !STOP_WORDS.contains(&w.as_str()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(n: usize, text: &str) -> Source {
        Source {
            n,
            document_id: format!("d{n}"),
            title: format!("T{n}"),
            chunk_index: 0,
            score: 1.0,
            text: text.into(),
        }
    }

    fn span(answer: &str, c: &Citation) -> String {
        answer.chars().skip(c.start).take(c.end - c.start).collect()
    }

    #[test]
    fn named_sources_cite_their_sentence_with_the_marker() {
        let sources = [
            source(1, "Refunds are paid within 14 days."),
            source(2, "Shipping takes 3 days."),
        ];
        let answer = "Refunds take 14 days [1]. Parcels arrive in three days. [2][7] Thanks!";
        let c = cite(answer, &sources);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!((c[0].source, c[0].explicit), (0, true));
        assert_eq!(span(answer, &c[0]), "Refunds take 14 days [1].");
        assert_eq!(c[1].source, 1, "[7] names no source and is left out");
        assert_eq!(span(answer, &c[1]), "Parcels arrive in three days. [2][7]");
    }

    #[test]
    fn an_uncited_sentence_goes_to_the_source_holding_most_of_its_words() {
        let sources = [
            source(1, "The quarterly report covers revenue and churn."),
            source(2, "The zebra migration crosses the Mara river every July."),
        ];
        let answer = "Sure.\nZebras cross the Mara river in July every year.";
        let c = cite(answer, &sources);
        assert_eq!(c.len(), 1, "{c:?}");
        assert_eq!((c[0].source, c[0].explicit), (1, false));
        assert_eq!(
            span(answer, &c[0]),
            "Zebras cross the Mara river in July every year."
        );
        // A sentence that shares too little is cited to nothing.
        assert!(cite("I could not find that in the sources.", &sources).is_empty());
    }

    #[test]
    fn spans_count_characters_not_bytes() {
        let sources = [source(1, "Crème brûlée needs custard")];
        let answer = "Déjà vu. Crème brûlée needs a custard [1].";
        let c = cite(answer, &sources);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].start, 9);
        assert_eq!(span(answer, &c[0]), "Crème brûlée needs a custard [1].");
        assert_eq!(c[0].end, answer.chars().count());
    }

    #[test]
    fn markers_parse_lists_and_ignore_other_brackets() {
        assert_eq!(markers("a [1, 3] b [2] [x] [] [4"), vec![1, 3, 2]);
        assert!(cite("anything [1]", &[]).is_empty());
    }
}
