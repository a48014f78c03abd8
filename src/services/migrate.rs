//! Copying every tenant's vectors from one store into another: what `ragbox
//! migrate-vectors` does before an installation switches between its local store and
//! Qdrant. The target ends up holding, for each tenant, exactly the source's vectors.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::instrument;

use super::{Core, ServiceError, blocking};
use crate::domain::TenantId;
use crate::store::vectors::{VectorError, VectorItem, VectorStore};

/// One tenant's vectors, copied.
#[derive(Debug, Clone, PartialEq)]
pub struct Copied {
    /// The tenant.
    pub tenant: TenantId,
    /// Vectors now in the target (as many as in the source).
    pub vectors: usize,
}

/// A finished copy.
#[derive(Debug, Clone)]
pub struct Migration {
    /// Every tenant of the installation, by id.
    pub tenants: Vec<Copied>,
    /// Vectors copied in all.
    pub vectors: usize,
    /// Time the copy took.
    pub took: Duration,
}

/// Copies the vectors of every tenant in the database from `from` into `to`, tenant by
/// tenant: the target's vectors of the tenant are dropped, the source's are written
/// document by document, and the target's count must then equal the source's. Vectors
/// of tenants no longer in the database are not copied. Writes to `from` while this
/// runs may be missed: run it while no documents are being ingested.
#[instrument(skip_all, fields(from = from.backend().as_str(), to = to.backend().as_str()))]
pub async fn copy_vectors(
    core: &Core,
    from: Arc<dyn VectorStore>,
    to: Arc<dyn VectorStore>,
) -> Result<Migration, ServiceError> {
    let started = Instant::now();
    let known = core.db.call(|c| crate::store::tenants::ids(c)).await?;
    let mut tenants: Vec<TenantId> = known
        .iter()
        .filter_map(|id| TenantId::parse(id).ok())
        .collect();
    tenants.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let source = from.clone();
    let in_source: HashSet<TenantId> = blocking(move || source.tenants())
        .await?
        .into_iter()
        .collect();
    let mut copied = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let (f, t, id) = (from.clone(), to.clone(), tenant.clone());
        let has_vectors = in_source.contains(&tenant);
        let vectors =
            blocking(move || copy_tenant(f.as_ref(), t.as_ref(), &id, has_vectors)).await??;
        tracing::info!(tenant = %tenant, vectors, "copied a tenant's vectors");
        copied.push(Copied { tenant, vectors });
    }
    let target = to.clone();
    blocking(move || target.persist()).await??;
    Ok(Migration {
        vectors: copied.iter().map(|c| c.vectors).sum(),
        tenants: copied,
        took: started.elapsed(),
    })
}

/// Makes `to` hold exactly `from`'s vectors of one tenant; answers how many.
fn copy_tenant(
    from: &dyn VectorStore,
    to: &dyn VectorStore,
    tenant: &TenantId,
    has_vectors: bool,
) -> Result<usize, VectorError> {
    let items = if has_vectors {
        from.export(tenant)?
    } else {
        Vec::new()
    };
    let total = items.len();
    let mut documents: BTreeMap<String, Vec<VectorItem>> = BTreeMap::new();
    for (document, item) in items {
        documents.entry(document).or_default().push(item);
    }
    to.drop_tenant(tenant)?;
    for (document, items) in documents {
        to.replace_document(tenant, &document, items)?;
    }
    let counted = to.count(tenant)?;
    if counted != total {
        return Err(VectorError::Storage(format!(
            "tenant {tenant}: copied {total} vectors, but the target counts {counted}"
        )));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::IndexConfig;
    use crate::store::vectors::LocalVectorStore;

    const DIM: usize = 4;

    fn store(dir: &std::path::Path) -> LocalVectorStore {
        LocalVectorStore::open(dir, DIM, IndexConfig::default()).unwrap()
    }

    fn item(id: u64) -> VectorItem {
        let mut vector = vec![0.0; DIM];
        vector[id as usize % DIM] = 1.0;
        VectorItem { id, vector }
    }

    #[test]
    fn a_tenant_is_copied_exactly_and_stale_vectors_go() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (store(a.path()), store(b.path()));
        let tenant = TenantId::generate();
        from.replace_document(&tenant, "d1", vec![item(1), item(2)])
            .unwrap();
        from.replace_document(&tenant, "d2", vec![item(3)]).unwrap();
        // Left in the target by an earlier copy of a document deleted since.
        to.replace_document(&tenant, "gone", vec![item(9)]).unwrap();

        assert_eq!(copy_tenant(&from, &to, &tenant, true).unwrap(), 3);
        assert_eq!(to.count(&tenant).unwrap(), 3);
        let docs = to.documents(&tenant).unwrap();
        assert_eq!(docs, HashSet::from(["d1".to_owned(), "d2".to_owned()]));
        let mut exported: Vec<(String, u64, Vec<f32>)> = to
            .export(&tenant)
            .unwrap()
            .into_iter()
            .map(|(d, i)| (d, i.id, i.vector))
            .collect();
        exported.sort_by_key(|e| e.1);
        assert_eq!(
            exported,
            vec![
                ("d1".to_owned(), 1, item(1).vector),
                ("d1".to_owned(), 2, item(2).vector),
                ("d2".to_owned(), 3, item(3).vector),
            ]
        );
    }

    #[test]
    fn a_tenant_without_vectors_is_emptied_in_the_target() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (from, to) = (store(a.path()), store(b.path()));
        let tenant = TenantId::generate();
        to.replace_document(&tenant, "old", vec![item(1)]).unwrap();
        assert_eq!(copy_tenant(&from, &to, &tenant, false).unwrap(), 0);
        assert_eq!(to.count(&tenant).unwrap(), 0);
    }
}
