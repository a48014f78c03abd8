//! The HNSW graph of a tenant: building it, inserting into it off the global rayon
//! pool, and its snapshot under `<data_dir>/tenants/<id>/hnsw/`, reloaded at start
//! when its fingerprint matches the vectors in sled.

use std::path::{Path, PathBuf};

use hnsw_rs::prelude::{AnnT, DistCosine, Hnsw, HnswIo};

use super::VectorError;
use crate::config::IndexConfig;
use crate::domain::TenantId;

/// A tenant's graph; its data ids are chunk ids.
pub(super) type Graph = Hnsw<'static, f32, DistCosine>;

/// Inserts into a graph on a rayon pool of its own. On the global pool a long build
/// would hold every worker until it ends, and the embedder and the generator (which use
/// that pool) would wait behind it; on its own pool it shares the cores with them.
pub(super) fn insert(graph: &Graph, batch: &Vec<(&[f32], usize)>) {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("ragbox-hnsw-{i}"))
            .build()
            .ok()
    });
    match pool {
        Some(pool) => pool.install(|| graph.parallel_insert_slice(batch)),
        None => graph.parallel_insert_slice(batch),
    }
}

/// A new graph sized for `capacity` vectors, holding `items`.
pub(super) fn build(config: &IndexConfig, capacity: usize, items: &Vec<(&[f32], usize)>) -> Graph {
    let graph = Hnsw::new(
        config.hnsw_m,
        capacity.max(1024),
        16,
        config.hnsw_ef_construction,
        DistCosine {},
    );
    insert(&graph, items);
    graph
}

/// Where a tenant's snapshot lives.
pub(super) fn snapshot_dir(data_dir: &Path, tenant: &TenantId) -> PathBuf {
    data_dir.join("tenants").join(tenant.as_str()).join("hnsw")
}

/// The graph in `dir`, when it is there, readable, and was written for the vectors
/// `fingerprint` identifies.
pub(super) fn load_snapshot(dir: &Path, tenant: &TenantId, fingerprint: &str) -> Option<Graph> {
    let meta = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&meta).ok()?;
    if meta["fingerprint"].as_str() != Some(fingerprint) {
        tracing::info!(tenant = %tenant, "HNSW snapshot is stale; rebuilding");
        return None;
    }
    // The loaded graph borrows its loader for its whole life; tenants are loaded
    // once per process, so the loader is kept for good.
    let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(dir, "graph")));
    match loader.load_hnsw::<f32, DistCosine>() {
        Ok(graph) => Some(graph),
        Err(e) => {
            tracing::warn!(tenant = %tenant, error = %e, "HNSW snapshot unreadable; rebuilding");
            None
        }
    }
}

/// Writes `graph` and its vectors' fingerprint to `dir`, replacing what was there
/// only once the whole snapshot is written.
pub(super) fn write_snapshot(
    dir: &Path,
    graph: &Graph,
    fingerprint: &str,
) -> Result<(), VectorError> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| VectorError::Storage(e.to_string()))?;
    graph
        .file_dump(&tmp, "graph")
        .map_err(|e| VectorError::Storage(format!("dumping HNSW: {e}")))?;
    let meta = serde_json::json!({ "fingerprint": fingerprint });
    std::fs::write(tmp.join("meta.json"), meta.to_string())
        .map_err(|e| VectorError::Storage(e.to_string()))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| VectorError::Storage(e.to_string()))?;
    Ok(())
}
