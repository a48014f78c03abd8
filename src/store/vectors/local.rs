//! The embedded backend: sled holds every tenant's vectors (the source of truth, one
//! tree per tenant); in memory each tenant has a flat copy for exact search and, past
//! `index.exact_threshold` vectors, an HNSW graph built from it. Deleted vectors are
//! tombstones filtered at search until the graph is rebuilt. Graphs are built in the
//! background (see `schedule`): searches and writes go on meanwhile, against the old
//! graph or by exact scan. The graph is dumped at shutdown and reloaded at start when
//! it matches sled.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use super::flat::dot;
use super::graph;
use super::index::{TenantIndex, read_lock, write_lock};
use super::keys::{decode, encode, key, split_key, stage_removal, tree_name};
use super::release::LockRelease;
use super::schedule::Builds;
use super::{Backend, Hit, IndexMaintenance, VectorError, VectorItem, VectorStore};
use crate::config::IndexConfig;
use crate::domain::TenantId;

/// How long `persist` waits for running graph builds.
const PERSIST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// The tenants whose index is in memory, by id.
type Loaded = HashMap<String, Arc<RwLock<TenantIndex>>>;

/// The embedded store: sled + per-tenant exact/HNSW index.
pub struct LocalVectorStore {
    db: sled::Db,
    dim: usize,
    config: IndexConfig,
    data_dir: PathBuf,
    tenants: Mutex<Loaded>,
    builds: Arc<Builds>,
    /// Declared after `db`, so it is dropped after it.
    _released: LockRelease,
}

impl LocalVectorStore {
    /// Opens (creating) the sled database under `<data_dir>/vectors`.
    pub fn open(data_dir: &Path, dim: usize, config: IndexConfig) -> Result<Self, VectorError> {
        let path = data_dir.join("vectors");
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(64 << 20)
            .open()
            .map_err(|e| match e {
                sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => {
                    VectorError::InUse(io.to_string())
                }
                other => other.into(),
            })?;
        Ok(Self {
            db,
            dim,
            builds: Arc::new(Builds::new(config.clone())),
            config,
            data_dir: data_dir.to_path_buf(),
            tenants: Mutex::new(HashMap::new()),
            // sled's lock file.
            _released: LockRelease(path.join("db")),
        })
    }

    fn snapshot_dir(&self, tenant: &TenantId) -> PathBuf {
        graph::snapshot_dir(&self.data_dir, tenant)
    }

    /// The tenants in memory, locked.
    fn loaded(&self) -> Result<MutexGuard<'_, Loaded>, VectorError> {
        self.tenants
            .lock()
            .map_err(|_| VectorError::Storage("index lock poisoned".into()))
    }

    /// A tenant's index, loaded on first use.
    fn index(&self, tenant: &TenantId) -> Result<Arc<RwLock<TenantIndex>>, VectorError> {
        let mut tenants = self.loaded()?;
        if let Some(ix) = tenants.get(tenant.as_str()) {
            return Ok(ix.clone());
        }
        let ix = Arc::new(RwLock::new(self.load(tenant)?));
        tenants.insert(tenant.as_str().to_owned(), ix.clone());
        {
            let mut guard = write_lock(&ix)?;
            if guard.graph.is_none() && guard.live() >= self.config.exact_threshold {
                self.builds.schedule(&ix, &mut guard);
            }
        }
        Ok(ix)
    }

    /// Reads a tenant's vectors from sled and its graph from the snapshot when it
    /// matches, else builds the graph (when the tenant is large enough).
    fn load(&self, tenant: &TenantId) -> Result<TenantIndex, VectorError> {
        let tree = self.db.open_tree(tree_name(tenant))?;
        let mut ix = TenantIndex::empty(self.dim, self.config.precision);
        let mut docs: HashMap<String, Arc<str>> = HashMap::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            let Some((doc, id)) = split_key(&k) else {
                continue;
            };
            let doc = docs
                .entry(doc.to_owned())
                .or_insert_with(|| Arc::from(doc))
                .clone();
            ix.push(id, doc, &v);
        }
        if ix.ids.len() >= self.config.exact_threshold {
            // Without a matching snapshot, index() starts a build; exact scans answer
            // until it is done.
            let dir = self.snapshot_dir(tenant);
            let fingerprint = ix.fingerprint();
            if let Some(snap) = graph::load_snapshot(&dir, tenant, &fingerprint, self.dim) {
                match ix.reordered(&snap.order, &snap.deleted) {
                    Some(mut ordered) if snap.graph.len() == ordered.ids.len() => {
                        ordered.graph = Some(snap.graph);
                        return Ok(ordered);
                    }
                    _ => tracing::warn!(tenant = %tenant, "HNSW snapshot does not fit; rebuilding"),
                }
            }
        }
        Ok(ix)
    }

    fn write_snapshot(&self, tenant: &str, ix: &TenantIndex) -> Result<(), VectorError> {
        let Some(graph) = &ix.graph else {
            return Ok(());
        };
        let id = TenantId::parse(tenant).map_err(|e| VectorError::Storage(e.0))?;
        let deleted = ix.tombstones();
        graph::write_snapshot(
            &self.snapshot_dir(&id),
            graph,
            &ix.ids,
            &ix.fingerprint(),
            &deleted,
        )
    }

    /// The `k` best of `hits` (closest first, scored on quantized vectors) by their
    /// exact scores against the f32 vectors in sled; unchanged at f32 precision.
    fn rescore(
        &self,
        tenant: &TenantId,
        ix: &TenantIndex,
        query: &[f32],
        mut hits: Vec<Hit>,
        k: usize,
    ) -> Result<Vec<Hit>, VectorError> {
        if self.config.precision.is_quantized() {
            let tree = self.db.open_tree(tree_name(tenant))?;
            let mut exact = Vec::with_capacity(self.dim);
            for hit in &mut hits {
                let Some(&slot) = ix.slot.get(&hit.id) else {
                    continue;
                };
                if let Some(bytes) = tree.get(key(&ix.docs[slot], hit.id))? {
                    exact.clear();
                    decode(&bytes, &mut exact);
                    if exact.len() == self.dim {
                        hit.score = dot(&exact, query);
                    }
                }
            }
            hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        }
        hits.truncate(k);
        Ok(hits)
    }
}

impl VectorStore for LocalVectorStore {
    fn replace_document(
        &self,
        tenant: &TenantId,
        document: &str,
        items: Vec<VectorItem>,
    ) -> Result<(), VectorError> {
        for item in &items {
            super::check_dim(self.dim, &item.vector)?;
        }
        let tree = self.db.open_tree(tree_name(tenant))?;
        let handle = self.index(tenant)?;
        let mut ix = write_lock(&handle)?;
        let mut batch = sled::Batch::default();
        let old = stage_removal(&tree, document, &mut batch)?;
        for item in &items {
            batch.insert(key(document, item.id), encode(&item.vector));
        }
        tree.apply_batch(batch)?;
        tree.flush()?;
        ix.tombstone(&old);
        let doc: Arc<str> = Arc::from(document);
        let first_new = ix.ids.len();
        for item in &items {
            if let Some(&slot) = ix.slot.get(&item.id) {
                // Same id again (a re-run): overwrite in place and revive it.
                ix.data.set(slot, &item.vector);
                ix.deleted.remove(&item.id);
            } else {
                ix.push_vector(item.id, doc.clone(), &item.vector);
            }
        }
        if ix.link_from(first_new) {
            ix.dirty = true;
        }
        self.builds.after_change(&handle, &mut ix);
        Ok(())
    }

    fn documents(&self, tenant: &TenantId) -> Result<HashSet<String>, VectorError> {
        let tree = self.db.open_tree(tree_name(tenant))?;
        let mut found = HashSet::new();
        let mut from = Vec::new();
        // One key per document: after each, skip past all of its keys (`doc\0…` sorts
        // before `doc\x01`).
        while let Some(entry) = tree.range(from.clone()..).keys().next() {
            let k = entry?;
            let Some((doc, _)) = split_key(&k) else {
                break;
            };
            from = doc.as_bytes().to_vec();
            from.push(1);
            found.insert(doc.to_owned());
        }
        Ok(found)
    }

    fn delete_document(&self, tenant: &TenantId, document: &str) -> Result<(), VectorError> {
        let tree = self.db.open_tree(tree_name(tenant))?;
        let handle = self.index(tenant)?;
        let mut ix = write_lock(&handle)?;
        let mut batch = sled::Batch::default();
        let old = stage_removal(&tree, document, &mut batch)?;
        tree.apply_batch(batch)?;
        tree.flush()?;
        ix.tombstone(&old);
        self.builds.after_change(&handle, &mut ix);
        Ok(())
    }

    fn search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        k: usize,
        documents: Option<&HashSet<String>>,
    ) -> Result<Vec<Hit>, VectorError> {
        super::check_dim(self.dim, query)?;
        let handle = self.index(tenant)?;
        let ix = read_lock(&handle)?;
        let allow_slot = |slot: usize| documents.is_none_or(|d| d.contains(ix.docs[slot].as_ref()));
        let wanted = self.config.precision.candidates(k);
        let hits = match &ix.graph {
            // A document filter is selective: an exact scan of the flat copy is both
            // exact and fast enough.
            Some(graph) if documents.is_none() => {
                let ef = self.config.hnsw_ef_search.max(wanted);
                let mut hits = ix.graph_search(graph, query, wanted, ef);
                hits.truncate(wanted);
                hits
            }
            _ => ix.exact(query, wanted, &allow_slot),
        };
        self.rescore(tenant, &ix, query, hits, k)
    }

    fn drop_tenant(&self, tenant: &TenantId) -> Result<(), VectorError> {
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.remove(tenant.as_str());
        }
        self.db.drop_tree(tree_name(tenant))?;
        let _ = std::fs::remove_dir_all(self.snapshot_dir(tenant));
        Ok(())
    }

    fn count(&self, tenant: &TenantId) -> Result<usize, VectorError> {
        let handle = self.index(tenant)?;
        let ix = read_lock(&handle)?;
        Ok(ix.live())
    }

    fn persist(&self) -> Result<(), VectorError> {
        // A graph still being built is worth a short wait: without it the next start
        // builds again. Past the wait, the build is dropped and redone at the next start.
        if !self.builds.settle(Some(PERSIST_WAIT)) {
            tracing::warn!("an HNSW build is still running; it is redone at the next start");
        }
        let tenants: Vec<(String, Arc<RwLock<TenantIndex>>)> = self
            .loaded()?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (tenant, ix) in tenants {
            let mut ix = write_lock(&ix)?;
            // Tombstones are saved with their vectors: the graph reloads as it was.
            if ix.dirty && ix.graph.is_some() {
                self.write_snapshot(&tenant, &ix)?;
                ix.dirty = false;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    fn check(&self) -> Result<String, VectorError> {
        let tree = self.db.open_tree("health")?;
        tree.insert("probe", &b"ok"[..])?;
        tree.flush()?;
        Ok(format!("{} tenants with vectors", self.tenants().len()))
    }

    fn tenants(&self) -> Vec<TenantId> {
        self.db
            .tree_names()
            .iter()
            .filter_map(|n| {
                std::str::from_utf8(n)
                    .ok()?
                    .strip_prefix("vectors/")
                    .map(str::to_owned)
            })
            .filter_map(|id| TenantId::parse(&id).ok())
            .collect()
    }

    fn export(&self, tenant: &TenantId) -> Result<Vec<(String, VectorItem)>, VectorError> {
        let tree = self.db.open_tree(tree_name(tenant))?;
        let mut all = Vec::with_capacity(tree.len());
        for kv in tree.iter() {
            let (k, v) = kv?;
            let Some((doc, id)) = split_key(&k) else {
                continue;
            };
            let mut vector = Vec::with_capacity(self.dim);
            decode(&v, &mut vector);
            all.push((doc.to_owned(), VectorItem { id, vector }));
        }
        Ok(all)
    }

    fn backend(&self) -> Backend {
        Backend::Local
    }

    fn maintenance(&self) -> Option<&dyn IndexMaintenance> {
        Some(self)
    }
}

impl IndexMaintenance for LocalVectorStore {
    fn rebuild(&self, tenant: &TenantId) -> Result<usize, VectorError> {
        let _ = std::fs::remove_dir_all(self.snapshot_dir(tenant));
        let loaded = self.loaded()?.contains_key(tenant.as_str());
        if !loaded {
            // Loading it finds no snapshot and builds the graph from sled.
            let handle = self.index(tenant)?;
            self.builds.settle(None);
            let ix = read_lock(&handle)?;
            return Ok(ix.live());
        }
        // From sled, off the lock; then merged with anything written meanwhile.
        let mut fresh = self.load(tenant)?;
        if fresh.live() >= self.config.exact_threshold {
            fresh.graph = Some(fresh.build_graph(&self.config));
        }
        let handle = self.index(tenant)?;
        let mut ix = write_lock(&handle)?;
        let building = ix.building;
        ix.adopt(fresh);
        ix.dirty = true;
        ix.building = building;
        Ok(ix.live())
    }

    fn settle(&self) {
        self.builds.settle(None);
    }
}
