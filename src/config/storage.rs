//! Where data lives: the data folder (SQLite file, admin token, tenants' files) and
//! the vector index's settings.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::store::vectors::Precision;

/// Storage settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory for the SQLite file, the admin token and tenants' files.
    pub data_dir: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
        }
    }
}

impl StorageConfig {
    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("ragbox.sqlite")
    }

    /// The file holding the generated operator token.
    pub fn admin_token_path(&self) -> PathBuf {
        self.data_dir.join("admin.token")
    }

    /// The folder of one tenant's files.
    pub fn tenant_dir(&self, tenant_id: &str) -> PathBuf {
        self.data_dir.join("tenants").join(tenant_id)
    }
}

/// Vector index settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Below this many vectors a tenant is searched exactly (no HNSW).
    pub exact_threshold: usize,
    /// HNSW links per node.
    pub hnsw_m: usize,
    /// HNSW candidate list while building.
    pub hnsw_ef_construction: usize,
    /// HNSW candidate list while searching (at least top_k).
    pub hnsw_ef_search: usize,
    /// Rebuild the HNSW graph once deleted vectors pass this fraction of it.
    pub rebuild_deleted_fraction: f64,
    /// How vectors are kept in memory: `f32`, `f16` or `int8` (the best candidates
    /// are re-scored against the exact f32 vectors on disk).
    pub precision: Precision,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            exact_threshold: 10_000,
            hnsw_m: 16,
            hnsw_ef_construction: 200,
            hnsw_ef_search: 64,
            rebuild_deleted_fraction: 0.2,
            precision: Precision::F32,
        }
    }
}
