//! A tenant's HNSW graph in the store: building it, inserting into it off the global
//! rayon pool, and its snapshot under `<data_dir>/tenants/<id>/hnsw/`, reloaded at start
//! when its fingerprint matches the vectors in sled.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::VectorError;
use super::flat::FlatVectors;
use super::hnsw::{Hnsw, Params};
use super::keys::{decode, encode};
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

/// A graph read back from its snapshot.
pub(super) struct Snapshot {
    pub(super) graph: Graph,
    /// The chunk id of each node, in node order.
    pub(super) order: Vec<u64>,
    /// The vectors of the nodes that were tombstones when it was saved: their chunks
    /// are gone from sled, but searches still walk through them until the next rebuild.
    pub(super) deleted: HashMap<u64, Vec<f32>>,
}

/// The graph in `dir`, with the chunk id of each node and the vectors of its
/// tombstones, when it is there, readable, and was written for the live vectors
/// `fingerprint` identifies.
pub(super) fn load_snapshot(
    dir: &Path,
    tenant: &TenantId,
    fingerprint: &str,
    dim: usize,
) -> Option<Snapshot> {
    let meta = std::fs::read_to_string(dir.join("meta.json")).ok()?;
    let meta: serde_json::Value = serde_json::from_str(&meta).ok()?;
    if meta["fingerprint"].as_str() != Some(fingerprint) {
        tracing::info!(tenant = %tenant, "HNSW snapshot is stale; rebuilding");
        return None;
    }
    let read = || -> Result<Snapshot, String> {
        let (graph, order) = Hnsw::read(&dir.join("graph.bin")).map_err(|e| e.to_string())?;
        // Snapshots saved without tombstones have no such file.
        let deleted = match std::fs::read(dir.join(DELETED_FILE)) {
            Ok(bytes) => read_deleted(&bytes, dim)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(e.to_string()),
        };
        Ok(Snapshot {
            graph,
            order,
            deleted,
        })
    };
    match read() {
        Ok(found) => Some(found),
        Err(e) => {
            tracing::warn!(tenant = %tenant, error = %e, "HNSW snapshot unreadable; rebuilding");
            None
        }
    }
}

/// The file beside the graph with its tombstones' vectors.
const DELETED_FILE: &str = "deleted.bin";

/// Tombstones' vectors as [`write_deleted`] lays them out: the width and the count
/// (u32 each), then each chunk id (u64) with its floats, all little-endian. Every size
/// is checked against the file's own.
fn read_deleted(bytes: &[u8], dim: usize) -> Result<HashMap<u64, Vec<f32>>, String> {
    let word = |at: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
    };
    let (Some(width), Some(count)) = (word(0), word(4)) else {
        return Err("tombstones file too short".into());
    };
    if width as usize != dim {
        return Err(format!("tombstones are {width} wide, the store {dim}"));
    }
    let record = 8 + 4 * dim;
    if (bytes.len() - 8) != record * count as usize {
        return Err("tombstones file has the wrong size".into());
    }
    let mut deleted = HashMap::with_capacity(count as usize);
    for rec in bytes[8..].chunks_exact(record) {
        let (id, floats) = rec.split_at(8);
        let id = u64::from_le_bytes(id.try_into().map_err(|_| "short id")?);
        let mut v = Vec::with_capacity(dim);
        decode(floats, &mut v);
        if deleted.insert(id, v).is_some() {
            return Err("a tombstone is listed twice".into());
        }
    }
    Ok(deleted)
}

/// Lays out tombstones' vectors (all of one width) for [`read_deleted`].
fn write_deleted(path: &Path, deleted: &[(u64, Vec<f32>)]) -> std::io::Result<()> {
    let dim = deleted.first().map_or(0, |(_, v)| v.len());
    let mut out = Vec::with_capacity(8 + deleted.len() * (8 + 4 * dim));
    out.extend_from_slice(&(dim as u32).to_le_bytes());
    out.extend_from_slice(&(deleted.len() as u32).to_le_bytes());
    for (id, v) in deleted {
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&encode(v));
    }
    std::fs::write(path, out)
}

/// Writes `graph` (with `ids`, the chunk id of each node), the vectors of its
/// tombstones (`deleted`) and its live vectors' fingerprint to `dir`,
/// replacing what was there only once the whole snapshot is written.
pub(super) fn write_snapshot(
    dir: &Path,
    graph: &Graph,
    ids: &[u64],
    fingerprint: &str,
    deleted: &[(u64, Vec<f32>)],
) -> Result<(), VectorError> {
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(|e| VectorError::Storage(e.to_string()))?;
    graph
        .write(&tmp.join("graph.bin"), ids)
        .map_err(|e| VectorError::Storage(e.to_string()))?;
    if !deleted.is_empty() {
        write_deleted(&tmp.join(DELETED_FILE), deleted)
            .map_err(|e| VectorError::Storage(e.to_string()))?;
    }
    let meta = serde_json::json!({ "fingerprint": fingerprint });
    std::fs::write(tmp.join("meta.json"), meta.to_string())
        .map_err(|e| VectorError::Storage(e.to_string()))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(|e| VectorError::Storage(e.to_string()))?;
    Ok(())
}
