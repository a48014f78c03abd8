//! Vectors for the vector store's tests: clustered like embeddings of related texts,
//! and the exact nearest neighbours to measure recall against.

use ragbox::config::IndexConfig;
use ragbox::domain::TenantId;
use ragbox::store::vectors::{VectorItem, VectorStore};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Width of the test vectors (the embedding model's).
pub const DIM: usize = 384;

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= n);
    v
}

/// Clustered data, like embeddings of related texts: 300 topics with points around
/// them (cosine within a topic about 0.6). Base and queries share the topics
/// (`topics` seed) and differ in their points (`seed`).
pub fn dataset(n: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut topics = StdRng::seed_from_u64(2026);
    let centers: Vec<Vec<f32>> = (0..300)
        .map(|_| normalised((0..DIM).map(|_| topics.random::<f32>() - 0.5).collect()))
        .collect();
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let c = &centers[rng.random_range(0..centers.len())];
            normalised(
                c.iter()
                    .map(|x| x + 0.15 * (rng.random::<f32>() - 0.5))
                    .collect(),
            )
        })
        .collect()
}

/// The ids of the `k` vectors nearest to `q`, by exhaustive search.
pub fn exact_top(data: &[(u64, Vec<f32>)], q: &[f32], k: usize) -> Vec<u64> {
    let mut scored: Vec<(u64, f32)> = data
        .iter()
        .map(|(id, v)| (*id, v.iter().zip(q).map(|(a, b)| a * b).sum()))
        .collect();
    scored.sort_by(|a, b| b.1.total_cmp(&a.1));
    scored.into_iter().take(k).map(|(id, _)| id).collect()
}

/// The index settings, with exact search below `threshold` vectors per tenant.
pub fn config(threshold: usize) -> IndexConfig {
    IndexConfig {
        exact_threshold: threshold,
        ..IndexConfig::default()
    }
}

/// `n` vectors of [`dataset`], numbered from 1 as stored chunks are.
pub fn numbered(n: usize, seed: u64) -> Vec<(u64, Vec<f32>)> {
    dataset(n, seed)
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i as u64 + 1, v))
        .collect()
}

/// The vectors as a document's items.
pub fn items(part: &[(u64, Vec<f32>)]) -> Vec<VectorItem> {
    part.iter()
        .map(|(id, v)| VectorItem {
            id: *id,
            vector: v.clone(),
        })
        .collect()
}

/// Stores `data` for `tenant` as documents `{prefix}{n}` of `per_document` vectors.
pub fn store_documents(
    store: &dyn VectorStore,
    tenant: &TenantId,
    data: &[(u64, Vec<f32>)],
    per_document: usize,
    prefix: &str,
) {
    for (doc, part) in data.chunks(per_document).enumerate() {
        store
            .replace_document(tenant, &format!("{prefix}{doc}"), items(part))
            .unwrap();
    }
}

/// The ids of the 10 hits `store` answers for each query, best first.
pub fn top_ids(store: &dyn VectorStore, tenant: &TenantId, queries: &[Vec<f32>]) -> Vec<Vec<u64>> {
    queries
        .iter()
        .map(|q| {
            let hits = store.search(tenant, q, 10, None).unwrap();
            hits.iter().map(|h| h.id).collect()
        })
        .collect()
}

/// The share of the exact 10 nearest neighbours of each query that `store` finds.
pub fn recall_at_10(
    store: &dyn VectorStore,
    tenant: &TenantId,
    data: &[(u64, Vec<f32>)],
    queries: &[Vec<f32>],
) -> f64 {
    let found: usize = queries
        .iter()
        .zip(top_ids(store, tenant, queries))
        .map(|(q, got)| {
            let truth = exact_top(data, q, 10);
            truth.iter().filter(|id| got.contains(id)).count()
        })
        .sum();
    found as f64 / (queries.len() * 10) as f64
}
