//! One tenant's keyword index in memory: an inverted index of its chunks' words with
//! BM25 ranking (k1 1.2, b 0.75, the always-positive idf of Lucene).
//!
//! Each chunk has a slot; each word a posting list of (slot, times it occurs). A query
//! adds every posting of its words into one score per slot and keeps the best, so its
//! cost grows with the postings of its own words, not with the tenant's size. A
//! removed document's slots are marked dead and skipped; once a quarter of the slots
//! are dead, the index is compacted. Until then the dead slots still count in the
//! statistics (document frequency, average length), which moves scores a little and
//! never what is returned.

use std::collections::{HashMap, HashSet};

use super::words::each_word;

const K1: f32 = 1.2;
const B: f32 = 0.75;

/// A word's postings: slots in increasing order, with how often the word occurs in
/// each (at most 255).
#[derive(Default)]
struct Postings {
    slots: Vec<u32>,
    counts: Vec<u8>,
}

/// A chunk in the index.
struct Slot {
    /// The chunk's id in the database.
    chunk: u64,
    /// Its length in words.
    words: u32,
    /// Whether its document is still indexed.
    alive: bool,
}

/// A tenant's chunks by their words.
#[derive(Default)]
pub struct Index {
    vocabulary: HashMap<Box<str>, u32>,
    postings: Vec<Postings>,
    slots: Vec<Slot>,
    /// Each document's slots.
    documents: HashMap<Box<str>, Vec<u32>>,
    /// Words in all slots, dead ones included.
    total_words: u64,
    dead: usize,
}

impl Index {
    /// Chunks indexed (not counting removed ones).
    pub fn len(&self) -> usize {
        self.slots.len() - self.dead
    }

    /// Whether no chunk is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Indexes a document's chunks (id, text), replacing what it had. The title's words
    /// count as words of every chunk, so a query naming the document finds its chunks.
    pub fn set_document<'a>(
        &mut self,
        document: &str,
        title: &str,
        chunks: impl IntoIterator<Item = (u64, &'a str)>,
    ) {
        self.remove_document(document);
        let mut mine = Vec::new();
        let mut counts: HashMap<String, u32> = HashMap::new();
        for (chunk, text) in chunks {
            counts.clear();
            let mut words = 0u32;
            let mut count = |w: &str| {
                words = words.saturating_add(1);
                match counts.get_mut(w) {
                    Some(n) => *n += 1,
                    None => {
                        counts.insert(w.to_owned(), 1);
                    }
                }
            };
            each_word(title, &mut count);
            each_word(text, &mut count);
            let Ok(slot) = u32::try_from(self.slots.len()) else {
                // Four billion chunks: beyond what one tenant can store.
                break;
            };
            self.slots.push(Slot {
                chunk,
                words,
                alive: true,
            });
            self.total_words += u64::from(words);
            for (word, n) in counts.drain() {
                let id = match self.vocabulary.get(word.as_str()) {
                    Some(&id) => id,
                    None => {
                        let id = self.postings.len() as u32;
                        self.vocabulary.insert(word.into_boxed_str(), id);
                        self.postings.push(Postings::default());
                        id
                    }
                };
                let list = &mut self.postings[id as usize];
                list.slots.push(slot);
                list.counts.push(n.min(255) as u8);
            }
            mine.push(slot);
        }
        if !mine.is_empty() {
            self.documents.insert(document.into(), mine);
        }
    }

    /// Takes a document's chunks out.
    pub fn remove_document(&mut self, document: &str) {
        let Some(slots) = self.documents.remove(document) else {
            return;
        };
        for s in slots {
            let slot = &mut self.slots[s as usize];
            if slot.alive {
                slot.alive = false;
                self.dead += 1;
            }
        }
        if self.dead > 0 && self.dead * 4 >= self.slots.len() {
            self.compact();
        }
    }

    /// Drops the dead slots and renumbers the rest.
    fn compact(&mut self) {
        let mut renumber = vec![u32::MAX; self.slots.len()];
        let mut slots = Vec::with_capacity(self.len());
        let mut total_words = 0u64;
        for (old, slot) in std::mem::take(&mut self.slots).into_iter().enumerate() {
            if slot.alive {
                renumber[old] = slots.len() as u32;
                total_words += u64::from(slot.words);
                slots.push(slot);
            }
        }
        let mut vocabulary = HashMap::with_capacity(self.vocabulary.len());
        let mut postings = Vec::with_capacity(self.postings.len());
        let mut lists = std::mem::take(&mut self.postings);
        for (word, id) in std::mem::take(&mut self.vocabulary) {
            let list = std::mem::take(&mut lists[id as usize]);
            let mut kept = Postings::default();
            for (s, n) in list.slots.into_iter().zip(list.counts) {
                let new = renumber[s as usize];
                if new != u32::MAX {
                    kept.slots.push(new);
                    kept.counts.push(n);
                }
            }
            if !kept.slots.is_empty() {
                kept.slots.shrink_to_fit();
                kept.counts.shrink_to_fit();
                vocabulary.insert(word, postings.len() as u32);
                postings.push(kept);
            }
        }
        for list in self.documents.values_mut() {
            list.iter_mut().for_each(|s| *s = renumber[*s as usize]);
        }
        self.vocabulary = vocabulary;
        self.postings = postings;
        self.slots = slots;
        self.total_words = total_words;
        self.dead = 0;
    }

    /// The best `limit` chunks for `words` by BM25, best first: (chunk id, score), only
    /// of `documents` when given.
    pub fn search(
        &self,
        words: &[String],
        limit: usize,
        documents: Option<&[String]>,
    ) -> Vec<(u64, f32)> {
        if limit == 0 || self.slots.is_empty() {
            return Vec::new();
        }
        let allowed: Option<HashSet<u32>> = documents.map(|ids| {
            ids.iter()
                .filter_map(|d| self.documents.get(d.as_str()))
                .flatten()
                .copied()
                .collect()
        });
        let n = self.slots.len() as f32;
        let average = (self.total_words as f32 / n).max(1.0);
        let mut scores = vec![0f32; self.slots.len()];
        let mut touched: Vec<u32> = Vec::new();
        for word in words {
            let Some(&id) = self.vocabulary.get(word.as_str()) else {
                continue;
            };
            let list = &self.postings[id as usize];
            let df = list.slots.len() as f32;
            let idf = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
            for (&s, &count) in list.slots.iter().zip(&list.counts) {
                let slot = &self.slots[s as usize];
                if !slot.alive || allowed.as_ref().is_some_and(|a| !a.contains(&s)) {
                    continue;
                }
                let tf = f32::from(count);
                let norm = K1 * (1.0 - B + B * slot.words as f32 / average);
                let score = &mut scores[s as usize];
                if *score == 0.0 {
                    touched.push(s);
                }
                *score += idf * tf * (K1 + 1.0) / (tf + norm);
            }
        }
        let better = |a: &u32, b: &u32| {
            scores[*b as usize]
                .total_cmp(&scores[*a as usize])
                .then(a.cmp(b))
        };
        if touched.len() > limit {
            touched.select_nth_unstable_by(limit - 1, better);
            touched.truncate(limit);
        }
        touched.sort_unstable_by(better);
        touched
            .into_iter()
            .map(|s| (self.slots[s as usize].chunk, scores[s as usize]))
            .collect()
    }

    /// Bytes the index holds, roughly (the vocabulary's keys and table, postings, slots,
    /// the documents' slot lists).
    pub fn memory_bytes(&self) -> usize {
        let words: usize = self.vocabulary.keys().map(|k| k.len() + 16 + 8).sum();
        let postings: usize = self
            .postings
            .iter()
            .map(|p| p.slots.capacity() * 4 + p.counts.capacity() + 48)
            .sum();
        let documents: usize = self
            .documents
            .iter()
            .map(|(k, v)| k.len() + 16 + v.capacity() * 4 + 24)
            .sum();
        words + postings + self.slots.capacity() * std::mem::size_of::<Slot>() + documents
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keywords::words::query_words;

    fn index(docs: &[(&str, &[(u64, &str)])]) -> Index {
        let mut ix = Index::default();
        for (doc, chunks) in docs {
            ix.set_document(doc, "", chunks.iter().map(|(id, t)| (*id, *t)));
        }
        ix
    }

    fn ids(hits: &[(u64, f32)]) -> Vec<u64> {
        hits.iter().map(|h| h.0).collect()
    }

    #[test]
    fn ranks_by_bm25() {
        let ix = index(&[
            ("a", &[(1, "the cat sat on the mat"), (2, "dogs and cats")]),
            (
                "b",
                &[(3, "cat cat cat, a cat's life"), (4, "nothing here")],
            ),
        ]);
        let hits = ix.search(&query_words("cat"), 10, None);
        assert_eq!(ids(&hits), [3, 1]);
        assert!(hits[0].1 > hits[1].1 && hits[1].1 > 0.0);
        // A rare word counts for more than a common one.
        let ix = index(&[(
            "a",
            &[
                (1, "apple common"),
                (2, "common common"),
                (3, "common banana"),
                (4, "common"),
            ],
        )]);
        let hits = ix.search(&query_words("banana common"), 10, None);
        assert_eq!(hits[0].0, 3);
        assert_eq!(hits.len(), 4);
        assert!(ix.search(&query_words("absent"), 10, None).is_empty());
    }

    #[test]
    fn limit_and_filter() {
        let ix = index(&[
            ("a", &[(1, "alpha beta"), (2, "alpha")]),
            ("b", &[(3, "alpha alpha beta")]),
        ]);
        let q = query_words("alpha beta");
        let all = ix.search(&q, 10, None);
        assert_eq!(all.len(), 3);
        assert_eq!(ix.search(&q, 1, None), all[..1]);
        assert_eq!(ids(&ix.search(&q, 10, Some(&["a".into()]))), [1, 2]);
        assert!(ix.search(&q, 10, Some(&["zzz".into()])).is_empty());
        assert!(ix.search(&q, 0, None).is_empty());
    }

    #[test]
    fn replaced_and_removed_documents_are_never_returned() {
        let mut ix = index(&[
            ("a", &[(1, "old words here")]),
            ("b", &[(2, "words of b")]),
            ("c", &[(3, "words of c")]),
            ("d", &[(4, "words of d")]),
            ("e", &[(5, "words of e")]),
        ]);
        ix.set_document("a", "", [(6, "new words here")]);
        assert!(ix.search(&query_words("old"), 10, None).is_empty());
        assert_eq!(ids(&ix.search(&query_words("new"), 10, None)), [6]);
        assert_eq!(ix.len(), 5);
        ix.remove_document("b");
        ix.remove_document("c");
        // Compacted by now (3 dead of 6): the same answers, renumbered.
        assert_eq!(ix.dead, 0);
        assert_eq!(ix.slots.len(), 3);
        let mut found = ids(&ix.search(&query_words("words"), 10, None));
        found.sort_unstable();
        assert_eq!(found, [4, 5, 6]);
        assert_eq!(
            ids(&ix.search(&query_words("here"), 10, Some(&["a".into()]))),
            [6]
        );
        ix.remove_document("missing");
        assert_eq!(ix.len(), 3);
    }

    #[test]
    fn title_words_count_in_every_chunk() {
        let mut ix = Index::default();
        ix.set_document(
            "a",
            "Refund policy",
            [(1, "money back"), (2, "within days")],
        );
        ix.set_document("b", "", [(3, "a refund of money")]);
        let mut found = ids(&ix.search(&query_words("refund"), 10, None));
        found.sort_unstable();
        assert_eq!(found, [1, 2, 3]);
        // A chunk matching in its title and text outranks one matching in the text alone.
        assert_eq!(
            ids(&ix.search(&query_words("money refund policy"), 1, None)),
            [1]
        );
        assert_eq!(ids(&ix.search(&query_words("policy"), 10, None)).len(), 2);
    }

    #[test]
    fn compaction_keeps_scores() {
        let docs: Vec<(String, String)> = (0..40)
            .map(|i| {
                (
                    format!("d{i}"),
                    format!("w{} shared w{} text {i}", i % 7, i % 3),
                )
            })
            .collect();
        let mut ix = Index::default();
        for (i, (d, t)) in docs.iter().enumerate() {
            ix.set_document(d, "", [(i as u64, t.as_str())]);
        }
        let mut fresh = Index::default();
        for (i, (d, t)) in docs.iter().enumerate().skip(10) {
            fresh.set_document(d, "", [(i as u64, t.as_str())]);
        }
        for (d, _) in docs.iter().take(10) {
            ix.remove_document(d);
        }
        assert_eq!(ix.dead, 0);
        let q = query_words("w1 w2 shared");
        assert_eq!(ix.search(&q, 40, None), fresh.search(&q, 40, None));
    }
}
