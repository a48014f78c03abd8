//! Rebuilding a tenant's vector index from its stored vectors: what `POST
//! /api/v1/admin/tenants/{tenant}/reindex` and `ragbox reindex` do.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::instrument;

use super::{Knowledge, ServiceError, blocking, tenants};
use crate::domain::{TenantId, TenantRef};
use crate::store::vectors::VectorStore;

/// A rebuilt index.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reindexed {
    /// Live vectors in the rebuilt index.
    pub vectors: usize,
    /// Time the rebuild took.
    pub took: Duration,
}

/// Why there is nothing to rebuild with a backend that indexes by itself.
const NO_LOCAL_INDEX: &str =
    "the vector store keeps no local index to rebuild; its backend indexes by itself";

/// Rebuilds the index of a tenant, named by id or slug.
pub async fn reindex_tenant(k: &Knowledge, tenant: &TenantRef) -> Result<Reindexed, ServiceError> {
    let tenant = tenants::get(&k.core, tenant).await?;
    reindex(k.vectors.clone(), &tenant.id).await
}

/// Rebuilds a tenant's index in `vectors` and times it. Searches go on meanwhile.
/// Conflict when the store keeps no local index (a remote backend).
#[instrument(skip_all, fields(tenant = %tenant))]
pub async fn reindex(
    vectors: Arc<dyn VectorStore>,
    tenant: &TenantId,
) -> Result<Reindexed, ServiceError> {
    let started = Instant::now();
    let id = tenant.clone();
    let rebuilt = blocking(move || vectors.maintenance().map(|m| m.rebuild(&id))).await?;
    let count = rebuilt.ok_or_else(|| ServiceError::Conflict(NO_LOCAL_INDEX.into()))??;
    Ok(Reindexed {
        vectors: count,
        took: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::store::vectors::{Backend, Hit, IndexMaintenance, VectorError, VectorItem};

    /// A store that holds nothing; with `local`, it has an index of 7 vectors.
    struct Fake {
        local: bool,
    }

    impl VectorStore for Fake {
        fn replace_document(
            &self,
            _: &TenantId,
            _: &str,
            _: Vec<VectorItem>,
        ) -> Result<(), VectorError> {
            Ok(())
        }
        fn delete_document(&self, _: &TenantId, _: &str) -> Result<(), VectorError> {
            Ok(())
        }
        fn search(
            &self,
            _: &TenantId,
            _: &[f32],
            _: usize,
            _: Option<&HashSet<String>>,
        ) -> Result<Vec<Hit>, VectorError> {
            Ok(Vec::new())
        }
        fn drop_tenant(&self, _: &TenantId) -> Result<(), VectorError> {
            Ok(())
        }
        fn count(&self, _: &TenantId) -> Result<usize, VectorError> {
            Ok(0)
        }
        fn check(&self) -> Result<String, VectorError> {
            Ok("fake".into())
        }
        fn tenants(&self) -> Vec<TenantId> {
            Vec::new()
        }
        fn documents(&self, _: &TenantId) -> Result<HashSet<String>, VectorError> {
            Ok(HashSet::new())
        }
        fn export(&self, _: &TenantId) -> Result<Vec<(String, VectorItem)>, VectorError> {
            Ok(Vec::new())
        }
        fn backend(&self) -> Backend {
            if self.local {
                Backend::Local
            } else {
                Backend::Qdrant
            }
        }
        fn maintenance(&self) -> Option<&dyn IndexMaintenance> {
            self.local.then_some(self as &dyn IndexMaintenance)
        }
    }

    impl IndexMaintenance for Fake {
        fn rebuild(&self, _: &TenantId) -> Result<usize, VectorError> {
            Ok(7)
        }
        fn settle(&self) {}
    }

    #[tokio::test]
    async fn a_store_without_a_local_index_is_a_conflict() {
        let store: Arc<dyn VectorStore> = Arc::new(Fake { local: false });
        let err = reindex(store, &TenantId::generate()).await.unwrap_err();
        assert!(matches!(err, ServiceError::Conflict(_)), "{err:?}");
    }

    #[tokio::test]
    async fn a_local_index_is_rebuilt_and_counted() {
        let store: Arc<dyn VectorStore> = Arc::new(Fake { local: true });
        let done = reindex(store, &TenantId::generate()).await.unwrap();
        assert_eq!(done.vectors, 7);
    }
}
