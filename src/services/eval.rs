//! Retrieval quality on an operator's own golden set: questions, each with the document
//! (by id or title) or the chunk that answers it. Every question is searched in each
//! mode, and the ranks of the answers become hit@1, hit@10, MRR@10 and nDCG@10, beside
//! the latency of the searches, so a change of chunking, mode, fusion or model can be
//! measured on the tenant's own data.
//!
//! A result list is the top 10 chunks. With a document as the answer, the list is read
//! as documents in order of their first chunk, and the answer's rank is its place among
//! them; with a chunk, its place among the chunks. One answer per question, so nDCG@10
//! is `1 / log2(1 + rank)`.

use std::collections::HashSet;
use std::time::Instant;

use super::search::{self, Mode, Query};
use super::{Knowledge, ServiceError};
use crate::domain::TenantId;
use crate::store::chunks::ChunkHit;
use crate::store::documents;

/// The most questions one evaluation takes.
pub const MAX_CASES: usize = 1000;

/// How deep the ranking is read.
pub const DEPTH: usize = 10;

/// A question and what answers it.
#[derive(Debug, Clone)]
pub struct Case {
    /// The question, as a user would search it.
    pub question: String,
    /// The answering document: its id or its title.
    pub document: String,
    /// The answering chunk of that document, when one chunk is the answer.
    pub chunk_index: Option<u32>,
}

/// The figures of one mode.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeReport {
    /// The search mode.
    pub mode: Mode,
    /// Share of questions answered first.
    pub hit_at_1: f64,
    /// Share answered in the top 10.
    pub hit_at_10: f64,
    /// Mean reciprocal rank of the answer (0 past 10).
    pub mrr_at_10: f64,
    /// Mean nDCG@10.
    pub ndcg_at_10: f64,
    /// Search latency (query embedding included), milliseconds: median.
    pub latency_p50_ms: f64,
    /// 95th percentile.
    pub latency_p95_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
}

/// An evaluation.
#[derive(Debug, Clone)]
pub struct Report {
    /// Questions asked.
    pub cases: usize,
    /// One row per mode, in the order asked.
    pub modes: Vec<ModeReport>,
}

/// The rank (from 1) of the answer to `case` in `results`, within the first [`DEPTH`].
pub fn rank_of(case: &Case, results: &[ChunkHit]) -> Option<usize> {
    let answers = |c: &ChunkHit| c.document_id == case.document || c.title == case.document;
    let top = &results[..results.len().min(DEPTH)];
    match case.chunk_index {
        Some(index) => top
            .iter()
            .position(|c| answers(c) && c.chunk_index == index)
            .map(|p| p + 1),
        None => {
            let mut seen: Vec<&str> = Vec::new();
            for c in top {
                if answers(c) {
                    return Some(seen.len() + 1);
                }
                if !seen.contains(&c.document_id.as_str()) {
                    seen.push(&c.document_id);
                }
            }
            None
        }
    }
}

/// The figures of one mode from each question's rank and search time.
pub fn summarise(mode: Mode, ranks: &[Option<usize>], millis: &[f64]) -> ModeReport {
    let n = ranks.len().max(1) as f64;
    let share = |f: &dyn Fn(usize) -> f64| ranks.iter().flatten().map(|&r| f(r)).sum::<f64>() / n;
    let mut sorted = millis.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        if sorted.is_empty() {
            return 0.0;
        }
        let at = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[at.min(sorted.len() - 1)]
    };
    ModeReport {
        mode,
        hit_at_1: share(&|r| f64::from(u8::from(r == 1))),
        hit_at_10: share(&|_| 1.0),
        mrr_at_10: share(&|r| 1.0 / r as f64),
        ndcg_at_10: share(&|r| 1.0 / (1.0 + r as f64).log2()),
        latency_p50_ms: pct(0.5),
        latency_p95_ms: pct(0.95),
        latency_p99_ms: pct(0.99),
    }
}

/// Asks each question of `cases` in each of `modes` and reports the figures.
pub async fn evaluate(
    k: &Knowledge,
    tenant: &TenantId,
    cases: Vec<Case>,
    modes: &[Mode],
) -> Result<Report, ServiceError> {
    if cases.is_empty() {
        return Err(ServiceError::Invalid(
            "the golden set has no questions".into(),
        ));
    }
    if cases.len() > MAX_CASES {
        return Err(ServiceError::TooLarge(format!(
            "the golden set has {} questions; at most {MAX_CASES}",
            cases.len()
        )));
    }
    if modes.is_empty() {
        return Err(ServiceError::Invalid("no search mode to evaluate".into()));
    }
    for (i, c) in cases.iter().enumerate() {
        if c.question.trim().is_empty() || c.document.trim().is_empty() {
            return Err(ServiceError::Invalid(format!(
                "question {}: `question` and `document` must not be blank",
                i + 1
            )));
        }
    }
    // An answer the tenant does not have would only ever count as a miss: refuse it.
    let t = tenant.clone();
    let known = k.core.db.call(move |c| documents::titles(c, &t)).await?;
    let known: HashSet<&str> = known
        .iter()
        .flat_map(|(id, title)| [id.as_str(), title.as_str()])
        .collect();
    let unknown: Vec<&str> = cases
        .iter()
        .map(|c| c.document.as_str())
        .filter(|d| !known.contains(d))
        .collect();
    if let Some(first) = unknown.first() {
        return Err(ServiceError::NotFound(format!(
            "{} answers name no document of this tenant (by id or title), e.g. `{first}`",
            unknown.len()
        )));
    }
    let mut rows = Vec::with_capacity(modes.len());
    for &mode in modes {
        let mut ranks = Vec::with_capacity(cases.len());
        let mut millis = Vec::with_capacity(cases.len());
        for case in &cases {
            let query = Query {
                text: case.question.clone(),
                top_k: DEPTH,
                mode,
                document_ids: None,
                min_score: None,
            };
            let started = Instant::now();
            let found = search::search(k, tenant, query).await?;
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
            let chunks: Vec<ChunkHit> = found.into_iter().map(|f| f.chunk).collect();
            ranks.push(rank_of(case, &chunks));
        }
        rows.push(summarise(mode, &ranks, &millis));
    }
    Ok(Report {
        cases: cases.len(),
        modes: rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(doc: &str, index: u32) -> ChunkHit {
        ChunkHit {
            id: u64::from(index),
            document_id: doc.into(),
            title: format!("{doc}.md"),
            chunk_index: index,
            text: String::new(),
            start: 0,
            end: 0,
        }
    }

    fn case(document: &str, chunk_index: Option<u32>) -> Case {
        Case {
            question: "q".into(),
            document: document.into(),
            chunk_index,
        }
    }

    #[test]
    fn a_document_ranks_among_documents_and_a_chunk_among_chunks() {
        let results = [chunk("a", 0), chunk("a", 1), chunk("b", 4), chunk("c", 2)];
        // By id or by title; `a` twice counts once.
        assert_eq!(rank_of(&case("b", None), &results), Some(2));
        assert_eq!(rank_of(&case("c.md", None), &results), Some(3));
        assert_eq!(rank_of(&case("a", None), &results), Some(1));
        assert_eq!(rank_of(&case("b", Some(4)), &results), Some(3));
        assert_eq!(rank_of(&case("b", Some(5)), &results), None);
        assert_eq!(rank_of(&case("z", None), &results), None);
        // Past the tenth chunk nothing counts.
        let mut long: Vec<ChunkHit> = (0..10).map(|i| chunk("x", i)).collect();
        long.push(chunk("late", 0));
        assert_eq!(rank_of(&case("late", None), &long), None);
    }

    #[test]
    fn figures_follow_from_the_ranks() {
        let ranks = [Some(1), Some(2), None, Some(4)];
        let r = summarise(Mode::Hybrid, &ranks, &[1.0, 2.0, 3.0, 4.0]);
        assert_eq!(r.hit_at_1, 0.25);
        assert_eq!(r.hit_at_10, 0.75);
        assert!((r.mrr_at_10 - (1.0 + 0.5 + 0.25) / 4.0).abs() < 1e-12);
        let ndcg = (1.0 + 1.0 / 3f64.log2() + 1.0 / 5f64.log2()) / 4.0;
        assert!((r.ndcg_at_10 - ndcg).abs() < 1e-12);
        assert_eq!(r.latency_p50_ms, 3.0);
        assert_eq!(r.latency_p99_ms, 4.0);
    }
}
