//! Search over a tenant's ready documents: by meaning (vectors), by words (BM25),
//! or both fused as `[search]` says (by default a weighted sum of scaled scores).

use std::collections::{HashMap, HashSet};

use tracing::instrument;

use super::{Knowledge, ServiceError, blocking};
use crate::config::{Fusion, SearchConfig};
use crate::domain::TenantId;
use crate::store::chunks::{self, ChunkHit};

/// How to search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Vectors and keywords, fused (score: the fusion's, 0-1 by default).
    Hybrid,
    /// Vectors only (score: cosine similarity).
    Vector,
    /// Keywords only (score: BM25, higher is better).
    Keyword,
}

impl Mode {
    /// `hybrid`, `vector` or `keyword`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hybrid => "hybrid",
            Self::Vector => "vector",
            Self::Keyword => "keyword",
        }
    }

    /// The mode named `name`, as [`Mode::as_str`] writes it.
    pub fn parse(name: &str) -> Result<Self, ServiceError> {
        match name {
            "hybrid" => Ok(Self::Hybrid),
            "vector" => Ok(Self::Vector),
            "keyword" => Ok(Self::Keyword),
            other => Err(ServiceError::Invalid(format!(
                "unknown mode `{other}`: use hybrid, vector or keyword"
            ))),
        }
    }
}

/// A search.
#[derive(Debug, Clone)]
pub struct Query {
    /// The text to look for.
    pub text: String,
    /// How many results, 1-100.
    pub top_k: usize,
    /// Mode.
    pub mode: Mode,
    /// Only these documents.
    pub document_ids: Option<Vec<String>>,
    /// Drop results scoring below this (in the mode's own score).
    pub min_score: Option<f32>,
}

/// One result.
#[derive(Debug, Clone)]
pub struct Found {
    /// The chunk.
    pub chunk: ChunkHit,
    /// Score in the mode's scale.
    pub score: f32,
}

/// The longest query, in characters.
pub const MAX_QUERY_CHARS: usize = 4000;

/// Searches a tenant's knowledge.
#[instrument(skip_all, fields(tenant = %tenant, mode = ?q.mode, top_k = q.top_k))]
pub async fn search(
    k: &Knowledge,
    tenant: &TenantId,
    q: Query,
) -> Result<Vec<Found>, ServiceError> {
    super::check_document_ids("document_ids", q.document_ids.as_deref())?;
    if q.text.is_empty() {
        return Err(ServiceError::Invalid("query must not be empty".into()));
    }
    if q.text.chars().count() > MAX_QUERY_CHARS {
        return Err(ServiceError::Invalid(format!(
            "query must be at most {MAX_QUERY_CHARS} characters"
        )));
    }
    let text = q.text.trim().to_owned();
    if text.is_empty() {
        // Blank: nothing to look for, and nothing found.
        return Ok(Vec::new());
    }
    if !(1..=100).contains(&q.top_k) {
        return Err(ServiceError::Invalid(
            "top_k must be between 1 and 100".into(),
        ));
    }
    let candidates = (q.top_k * 4).max(40);

    // Hybrid runs both at once: the keyword index answers while the query is embedded.
    let vector = async {
        if q.mode == Mode::Keyword {
            return Ok::<_, ServiceError>(Vec::new());
        }
        let query = k
            .embedder
            .embed(vec![text.clone()])
            .await?
            .pop()
            .unwrap_or_default();
        let filter: Option<HashSet<String>> =
            q.document_ids.clone().map(|d| d.into_iter().collect());
        let (store, t) = (k.vectors.clone(), tenant.clone());
        Ok(
            blocking(move || store.search(&t, &query, candidates, filter.as_ref()))
                .await??
                .into_iter()
                .map(|h| (h.id, h.score))
                .collect(),
        )
    };
    let keyword = async {
        if q.mode == Mode::Vector {
            return Ok::<_, ServiceError>(Vec::new());
        }
        let (db, t, docs, query) = (
            k.core.db.clone(),
            tenant.clone(),
            q.document_ids.clone(),
            text.clone(),
        );
        Ok(k.core
            .db
            .call(move |c| {
                chunks::keyword_search(c, db.keywords(), &t, &query, candidates, docs.as_deref())
            })
            .await?)
    };
    let (vector_ranked, keyword_ranked) = tokio::try_join!(vector, keyword)?;

    let ranked: Vec<(u64, f32)> = match q.mode {
        Mode::Vector => vector_ranked,
        Mode::Keyword => keyword_ranked,
        Mode::Hybrid => fuse(&k.core.config.search, &vector_ranked, &keyword_ranked),
    };
    let ids: Vec<u64> = ranked.iter().map(|(id, _)| *id).collect();
    let t = tenant.clone();
    let rows = k
        .core
        .db
        .call(move |c| chunks::chunks_by_ids(c, &t, &ids))
        .await?;
    let mut by_id: HashMap<u64, ChunkHit> = rows.into_iter().map(|r| (r.id, r)).collect();
    let allowed: Option<HashSet<&String>> = q.document_ids.as_ref().map(|d| d.iter().collect());
    Ok(ranked
        .into_iter()
        .filter(|(_, score)| q.min_score.is_none_or(|m| *score >= m))
        .filter_map(|(id, score)| by_id.remove(&id).map(|chunk| Found { chunk, score }))
        .filter(|f| {
            allowed
                .as_ref()
                .is_none_or(|a| a.contains(&f.chunk.document_id))
        })
        .take(q.top_k)
        .collect())
}

/// The vector and keyword rankings (best first, each with its own scores) fused into
/// one, best first, as `config` says (see [`Fusion`]).
pub fn fuse(
    config: &SearchConfig,
    vector: &[(u64, f32)],
    keyword: &[(u64, f32)],
) -> Vec<(u64, f32)> {
    let mut scores: HashMap<u64, f32> = HashMap::new();
    let mut add = |list: &[(u64, f32)], weight: f32| {
        let (lo, hi) = list
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), x| {
                (lo.min(x.1), hi.max(x.1))
            });
        for (rank, &(id, score)) in list.iter().enumerate() {
            let part = match config.fusion {
                // Twice the weight: at 0.5 each, the classic sum of 1 / (k + rank).
                Fusion::Rrf => 2.0 / (config.rrf_k + rank as f32 + 1.0),
                Fusion::Convex if hi > lo => (score - lo) / (hi - lo),
                Fusion::Convex => 1.0,
            };
            *scores.entry(id).or_default() += weight * part;
        }
    };
    add(vector, config.vector_weight);
    add(keyword, 1.0 - config.vector_weight);
    let mut fused: Vec<(u64, f32)> = scores.into_iter().collect();
    fused.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    fused
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fusion_rewards_agreement() {
        let vector = [(1, 0.9), (2, 0.8), (3, 0.7)];
        let keyword = [(3, 9.0), (4, 5.0)];
        let rrf = SearchConfig {
            fusion: Fusion::Rrf,
            ..SearchConfig::default()
        };
        let fused = fuse(&rrf, &vector, &keyword);
        assert_eq!(fused[0].0, 3, "in both lists: first");
        assert_eq!(fused.len(), 4);
        assert!(fused.windows(2).all(|w| w[0].1 >= w[1].1));
        // With equal weights, reciprocal rank fusion is the classic sum of 1 / (60 + rank).
        assert!((fused[0].1 - (1.0 / 63.0 + 1.0 / 61.0)).abs() < 1e-7);
    }

    #[test]
    fn convex_fusion_weighs_scaled_scores() {
        let vector = [(1, 0.9), (2, 0.8), (3, 0.5)];
        let keyword = [(3, 12.0), (4, 4.0), (5, 2.0)];
        let config = |w| SearchConfig {
            fusion: Fusion::Convex,
            vector_weight: w,
            rrf_k: 60.0,
        };
        // Each list scaled to 0-1: chunk 3 is last by vector (0) and first by keyword (1).
        let even = fuse(&config(0.5), &vector, &keyword);
        let score = |list: &[(u64, f32)], id| list.iter().find(|x| x.0 == id).unwrap().1;
        assert!((score(&even, 1) - 0.5).abs() < 1e-6);
        assert!((score(&even, 2) - 0.375).abs() < 1e-6);
        assert!((score(&even, 3) - 0.5).abs() < 1e-6);
        assert!((score(&even, 4) - 0.1).abs() < 1e-6);
        // Leaning on vectors puts their best first; leaning on keywords, theirs.
        assert_eq!(fuse(&config(0.8), &vector, &keyword)[0].0, 1);
        assert_eq!(fuse(&config(0.2), &vector, &keyword)[0].0, 3);
        // Only one list: its order is kept.
        let alone = fuse(&config(0.5), &vector, &[]);
        let ids: Vec<u64> = alone.iter().map(|x| x.0).collect();
        assert_eq!(ids, [1, 2, 3]);
    }
}
