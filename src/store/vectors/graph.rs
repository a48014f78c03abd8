//! A tenant's HNSW graph in the store: building it, inserting into it off the global
//! rayon pool, and its snapshot under `<data_dir>/tenants/<id>/hnsw/`, reloaded at start
//! when its fingerprint matches the vectors in sled.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::VectorError;
use super::flat::FlatVectors;
use super::hnsw::{Hnsw, Params};
use crate::config::IndexConfig;
use crate::domain::TenantId;

/// A tenant's graph; its nodes are the slots of the tenant's flat vectors.
pub(super) type Graph = Hnsw;

/// Links `nodes` (slots of `vectors`) into `graph`, in parallel on a rayon pool of its
/// own. On the global pool a long build would hold every worker until it ends, and the
/// embedder and the generator (which use that pool) would wait behind it; on its own
/// pool it shares the cores with them.
pub(super) fn insert(graph: &Graph, vectors: &FlatVectors, nodes: &[u32]) {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("ragbox-hnsw-{i}"))
            .build()
            .ok()
    });
    let run = || {
        nodes
            .par_iter()
            .with_min_len(64)
            .for_each(|&n| graph.insert(vectors, n))
    };
    match pool {
        Some(pool) => pool.install(run),
        None => run(),
    }
}

/// The graph's shape from the configuration.
pub(super) fn params(config: &IndexConfig) -> Params {
    Params {
        m: config.hnsw_m,
        ef_construction: config.hnsw_ef_construction,
    }
}

/// A new graph over every slot of `vectors`, with the slots `live` lets through linked.
pub(super) fn build(
    config: &IndexConfig,
    vectors: &FlatVectors,
    live: impl Fn(usize) -> bool,
) -> Graph {
    let mut graph = Hnsw::new(params(config), vectors.len());
    graph.grow(vectors.len());
    let nodes: Vec<u32> = (0..vectors.len())
        .filter(|&s| live(s))
        .map(|s| s as u32)
        .collect();
    insert(&graph, vectors, &nodes);
    graph
}

/// Where a tenant's snapshot lives.
pub(super) fn snapshot_dir(data_dir: &Path, tenant: &TenantId) -> PathBuf {
    data_dir.join("tenants").join(tenant.as_str()).join("hnsw")
}

/// The graph in `dir` and the chunk id of each of its nodes, when it is there,
/// readable, and was written for the vectors `fingerprint` identifies.
pub(super) fn load_snapshot(
    dir: &Path,
    tenant: &TenantId,
    fingerprint: &str,
) -> Option<(Graph, Vec<u64>)> {
    let meta = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&meta).ok()?;
    if meta["fingerprint"].as_str() != Some(fingerprint) {
        tracing::info!(tenant = %tenant, "HNSW snapshot is stale; rebuilding");
        return None;
    }
    match Hnsw::read(&dir.join("graph.bin")) {
        Ok(found) => Some(found),
        Err(e) => {
            tracing::warn!(tenant = %tenant, error = %e, "HNSW snapshot unreadable; rebuilding");
            None
        }
    }
}

/// Writes `graph` (with `ids`, the chunk id of each node) and its vectors' fingerprint
/// to `dir`, replacing what was there only once the whole snapshot is written.
pub(super) fn write_snapshot(
    dir: &Path,
    graph: &Graph,
    ids: &[u64],
    fingerprint: &str,
) -> Result<(), VectorError> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| VectorError::Storage(e.to_string()))?;
    graph
        .write(&tmp.join("graph.bin"), ids)
        .map_err(|e| VectorError::Storage(e.to_string()))?;
    let meta = serde_json::json!({ "fingerprint": fingerprint });
    std::fs::write(tmp.join("meta.json"), meta.to_string())
        .map_err(|e| VectorError::Storage(e.to_string()))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| VectorError::Storage(e.to_string()))?;
    Ok(())
}
