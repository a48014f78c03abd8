//! Vectors: the [`VectorStore`] seam every backend fills; the embedded backend,
//! [`LocalVectorStore`] (sled for the vectors, a per-tenant exact/HNSW index in
//! memory); and the scale-out one, [`QdrantVectorStore`]. What only a local index can do
//! (rebuild it, wait for its builds) is the separate [`IndexMaintenance`], reached
//! through [`VectorStore::maintenance`].

mod flat;
mod graph;
mod hnsw;
mod index;
mod keys;
mod local;
mod prefetch;
mod qdrant;
mod release;
mod schedule;

use std::collections::HashSet;

use crate::domain::TenantId;

pub use flat::{FlatVectors, Precision, dot};
pub use hnsw::{Hnsw, Params as HnswParams};
pub use local::LocalVectorStore;
pub use qdrant::QdrantVectorStore;

/// Which backend holds the vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// sled + HNSW in the data dir.
    Local,
    /// A Qdrant collection.
    Qdrant,
}

impl Backend {
    /// `local` or `qdrant`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Qdrant => "qdrant",
        }
    }
}

/// A vector with its id (the chunk id) and its document.
#[derive(Debug, Clone)]
pub struct VectorItem {
    /// Chunk id.
    pub id: u64,
    /// The embedding (L2-normalised).
    pub vector: Vec<f32>,
}

/// A search hit: chunk id and cosine similarity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Chunk id.
    pub id: u64,
    /// Cosine similarity, higher is closer.
    pub score: f32,
}

/// Why a vector operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VectorError {
    /// The store on disk failed.
    #[error("vector store: {0}")]
    Storage(String),
    /// The store does not answer (a remote backend down, slow or failing); a retry
    /// may succeed.
    #[error("vector store unavailable: {0}")]
    Unavailable(String),
    /// Another process holds the store (sled allows one).
    #[error("vector store in use by another process: {0}")]
    InUse(String),
    /// A vector of the wrong width.
    #[error("vector has {got} dimensions, expected {want}")]
    Dimension {
        /// Given.
        got: usize,
        /// Expected.
        want: usize,
    },
}

impl From<sled::Error> for VectorError {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e.to_string())
    }
}

/// Refuses a vector that is not `dim` wide (every backend checks before it stores or
/// searches).
pub(crate) fn check_dim(dim: usize, v: &[f32]) -> Result<(), VectorError> {
    if v.len() != dim {
        return Err(VectorError::Dimension {
            got: v.len(),
            want: dim,
        });
    }
    Ok(())
}

/// Where a tenant's vectors live: what any backend (the local one, Qdrant) can do.
/// Calls block: run them on a blocking thread.
pub trait VectorStore: Send + Sync + 'static {
    /// Replaces all vectors of a document with `items`.
    fn replace_document(
        &self,
        tenant: &TenantId,
        document: &str,
        items: Vec<VectorItem>,
    ) -> Result<(), VectorError>;
    /// Removes all vectors of a document.
    fn delete_document(&self, tenant: &TenantId, document: &str) -> Result<(), VectorError>;
    /// The `k` nearest vectors, optionally only of the given documents.
    fn search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        k: usize,
        documents: Option<&HashSet<String>>,
    ) -> Result<Vec<Hit>, VectorError>;
    /// Removes every vector of a tenant.
    fn drop_tenant(&self, tenant: &TenantId) -> Result<(), VectorError>;
    /// How many live vectors a tenant has.
    fn count(&self, tenant: &TenantId) -> Result<usize, VectorError>;
    /// Writes what is held in memory to disk (at shutdown); nothing for a backend that
    /// keeps nothing in memory.
    fn persist(&self) -> Result<(), VectorError> {
        Ok(())
    }
    /// A cheap round trip to the storage, for health checks.
    fn check(&self) -> Result<String, VectorError>;
    /// Tenants that have vectors.
    fn tenants(&self) -> Vec<TenantId>;
    /// The documents a tenant has vectors of (for the start-up sweep of leftovers).
    fn documents(&self, tenant: &TenantId) -> Result<HashSet<String>, VectorError>;
    /// Every vector of a tenant with its document, to copy the tenant into another
    /// store (`ragbox migrate-vectors`). Holds one tenant's vectors in memory.
    fn export(&self, tenant: &TenantId) -> Result<Vec<(String, VectorItem)>, VectorError>;
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// The upkeep of a local index, when this backend keeps one; `None` for a backend
    /// that indexes by itself.
    fn maintenance(&self) -> Option<&dyn IndexMaintenance> {
        None
    }
}

/// Upkeep of an index kept in this process: only the local backend has one.
pub trait IndexMaintenance: Send + Sync {
    /// Rebuilds a tenant's index from the stored vectors; answers its live vectors.
    fn rebuild(&self, tenant: &TenantId) -> Result<usize, VectorError>;
    /// Blocks until background index builds are done (tests, benchmarks, `reindex`).
    fn settle(&self);
}
