//! Vectors: sled holds every tenant's vectors (the source of truth, one tree per
//! tenant); in memory each tenant has a flat copy for exact search and, past
//! `index.exact_threshold` vectors, an HNSW graph built from it. Deleted vectors are
//! tombstones filtered at search until the graph is rebuilt. Graphs are built on their
//! own thread from a copy of the live vectors, never under the tenant's lock: searches
//! and writes go on meanwhile (against the old graph, or by exact scan), and what changed
//! during the build is merged in when the new graph is swapped in. The graph is dumped
//! under `<data_dir>/tenants/<id>/hnsw/` and reloaded at start when it matches sled.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use hnsw_rs::prelude::{AnnT, DistCosine, Hnsw, HnswIo};

use crate::config::IndexConfig;
use crate::domain::TenantId;

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

/// Where a tenant's vectors live; a Qdrant backend can replace the local one.
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
    /// Rebuilds a tenant's index from the stored vectors.
    fn rebuild(&self, tenant: &TenantId) -> Result<usize, VectorError>;
    /// How many live vectors a tenant has.
    fn count(&self, tenant: &TenantId) -> Result<usize, VectorError>;
    /// Writes index snapshots to disk (at shutdown).
    fn persist(&self) -> Result<(), VectorError>;
    /// A cheap round trip to the storage, for health checks.
    fn check(&self) -> Result<String, VectorError>;
    /// Tenants that have vectors.
    fn tenants(&self) -> Vec<TenantId>;
    /// The documents a tenant has vectors of (for the start-up sweep of leftovers).
    fn documents(&self, tenant: &TenantId) -> Result<HashSet<String>, VectorError>;
    /// Blocks until background index builds are done (tests, benchmarks, `reindex`).
    fn settle(&self) {}
}

/// The embedded store: sled + per-tenant exact/HNSW index.
pub struct LocalVectorStore {
    db: sled::Db,
    dim: usize,
    config: IndexConfig,
    data_dir: PathBuf,
    tenants: Mutex<HashMap<String, Arc<RwLock<TenantIndex>>>>,
    builds: Arc<Builds>,
    /// Declared after `db`, so it is dropped after it.
    _released: LockRelease,
}

/// How long dropping the store waits for sled to let go of its lock file.
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits, when the store is dropped, until sled's background threads have let go of
/// the database's lock file. They hold it a little past the `Db` itself (longer on a
/// busy machine), and until then this process cannot open the store again.
struct LockRelease(PathBuf);

impl Drop for LockRelease {
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + RELEASE_WAIT;
        loop {
            let Ok(file) = std::fs::File::open(&self.0) else {
                return;
            };
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) => {}
                // Taken (and let go with `file`), or locks do not work here at all.
                _ => return,
            }
            if std::time::Instant::now() >= deadline {
                tracing::warn!(path = %self.0.display(), "the vector store's lock is still held");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// Graph builds running in the background.
#[derive(Default)]
struct Builds {
    running: Mutex<usize>,
    done: Condvar,
}

impl Builds {
    fn start(&self) {
        if let Ok(mut n) = self.running.lock() {
            *n += 1;
        }
    }

    fn finish(&self) {
        if let Ok(mut n) = self.running.lock() {
            *n = n.saturating_sub(1);
        }
        self.done.notify_all();
    }
}

/// How long `persist` waits for running graph builds.
const PERSIST_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

type Graph = Hnsw<'static, f32, DistCosine>;

/// Inserts into a graph on a rayon pool of its own. On the global pool a long build
/// would hold every worker until it ends, and the embedder and the generator (which use
/// that pool) would wait behind it; on its own pool it shares the cores with them.
fn insert(graph: &Graph, batch: &Vec<(&[f32], usize)>) {
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

struct TenantIndex {
    /// Live and deleted vectors, flat, `dim` floats each.
    data: Vec<f32>,
    ids: Vec<u64>,
    docs: Vec<Arc<str>>,
    slot: HashMap<u64, usize>,
    deleted: HashSet<u64>,
    graph: Option<Graph>,
    /// Vectors inserted into the graph since it was built or loaded.
    dirty: bool,
    /// A new graph is being built in the background.
    building: bool,
}

/// sled key: document id, then chunk id; value: little-endian f32s.
fn key(document: &str, id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(document.len() + 9);
    k.extend_from_slice(document.as_bytes());
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

fn doc_prefix(document: &str) -> Vec<u8> {
    let mut k = document.as_bytes().to_vec();
    k.push(0);
    k
}

fn split_key(k: &[u8]) -> Option<(&str, u64)> {
    if k.len() < 9 {
        return None;
    }
    let (doc, rest) = k.split_at(k.len() - 9);
    let id = u64::from_be_bytes(rest[1..].try_into().ok()?);
    Some((std::str::from_utf8(doc).ok()?, id))
}

/// Stages the removal of every stored vector of a document (also those left by an
/// interrupted run) and returns their ids.
fn stage_removal(
    tree: &sled::Tree,
    document: &str,
    batch: &mut sled::Batch,
) -> Result<Vec<u64>, VectorError> {
    let mut ids = Vec::new();
    for k in tree.scan_prefix(doc_prefix(document)).keys() {
        let k = k?;
        if let Some((_, id)) = split_key(&k) {
            ids.push(id);
        }
        batch.remove(k);
    }
    Ok(ids)
}

fn encode(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(bytes: &[u8], out: &mut Vec<f32>) {
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
}

fn tree_name(tenant: &TenantId) -> String {
    format!("vectors/{tenant}")
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
            config,
            data_dir: data_dir.to_path_buf(),
            tenants: Mutex::new(HashMap::new()),
            builds: Arc::default(),
            // sled's lock file.
            _released: LockRelease(path.join("db")),
        })
    }

    fn snapshot_dir(&self, tenant: &TenantId) -> PathBuf {
        self.data_dir
            .join("tenants")
            .join(tenant.as_str())
            .join("hnsw")
    }

    fn index(&self, tenant: &TenantId) -> Result<Arc<RwLock<TenantIndex>>, VectorError> {
        let mut tenants = self
            .tenants
            .lock()
            .map_err(|_| VectorError::Storage("index lock poisoned".into()))?;
        if let Some(ix) = tenants.get(tenant.as_str()) {
            return Ok(ix.clone());
        }
        let ix = Arc::new(RwLock::new(self.load(tenant)?));
        tenants.insert(tenant.as_str().to_owned(), ix.clone());
        {
            let mut guard = write_lock(&ix)?;
            if guard.graph.is_none() && guard.live() >= self.config.exact_threshold {
                self.schedule_build(&ix, &mut guard);
            }
        }
        Ok(ix)
    }

    /// Waits until no graph build runs, or `limit` has passed; true when none runs.
    fn settle_builds(&self, limit: Option<std::time::Duration>) -> bool {
        let deadline = limit.map(|l| std::time::Instant::now() + l);
        let Ok(mut running) = self.builds.running.lock() else {
            return false;
        };
        while *running > 0 {
            let wait = match deadline {
                None => self.builds.done.wait(running).ok(),
                Some(d) => {
                    let left = d.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.builds
                        .done
                        .wait_timeout(running, left)
                        .ok()
                        .map(|(r, _)| r)
                }
            };
            match wait {
                Some(r) => running = r,
                None => return false,
            }
        }
        true
    }

    /// Starts building a new graph from a copy of the tenant's live vectors on a
    /// thread of its own; the result replaces the graph when it is done.
    fn schedule_build(&self, handle: &Arc<RwLock<TenantIndex>>, ix: &mut TenantIndex) {
        if ix.building {
            return;
        }
        ix.building = true;
        let copy = ix.live_copy(self.dim);
        let handle = handle.clone();
        let builds = self.builds.clone();
        let (dim, config) = (self.dim, self.config.clone());
        builds.start();
        let job = move || {
            let mut fresh = copy;
            if fresh.live() >= config.exact_threshold {
                fresh.graph = Some(build_graph(dim, &config, &fresh));
            }
            match handle.write() {
                Ok(mut ix) => ix.adopt(fresh, dim),
                Err(_) => tracing::error!("index lock poisoned; new HNSW graph dropped"),
            }
            builds.finish();
        };
        if let Err(e) = std::thread::Builder::new()
            .name("ragbox-hnsw".into())
            .spawn(job)
        {
            tracing::error!(error = %e, "cannot start an HNSW build thread");
            ix.building = false;
            self.builds.finish();
        }
    }

    /// Reads a tenant's vectors from sled and its graph from the snapshot when it
    /// matches, else builds the graph (when the tenant is large enough).
    fn load(&self, tenant: &TenantId) -> Result<TenantIndex, VectorError> {
        let tree = self.db.open_tree(tree_name(tenant))?;
        let mut ix = TenantIndex::empty();
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
            ix.graph = self.load_snapshot(tenant, &ix);
        }
        Ok(ix)
    }

    fn load_snapshot(&self, tenant: &TenantId, ix: &TenantIndex) -> Option<Graph> {
        let dir = self.snapshot_dir(tenant);
        let meta = std::fs::read_to_string(dir.join("meta.json")).ok()?;
        let meta: serde_json::Value = serde_json::from_str(&meta).ok()?;
        let fingerprint = ix.fingerprint();
        if meta["fingerprint"].as_str() != Some(fingerprint.as_str()) {
            tracing::info!(tenant = %tenant, "HNSW snapshot is stale; rebuilding");
            return None;
        }
        // The loaded graph borrows its loader for its whole life; tenants are loaded
        // once per process, so the loader is kept for good.
        let loader: &'static mut HnswIo = Box::leak(Box::new(HnswIo::new(&dir, "graph")));
        match loader.load_hnsw::<f32, DistCosine>() {
            Ok(graph) => Some(graph),
            Err(e) => {
                tracing::warn!(tenant = %tenant, error = %e, "HNSW snapshot unreadable; rebuilding");
                None
            }
        }
    }

    fn write_snapshot(&self, tenant: &str, ix: &TenantIndex) -> Result<(), VectorError> {
        let Some(graph) = &ix.graph else {
            return Ok(());
        };
        let id = TenantId::parse(tenant).map_err(|e| VectorError::Storage(e.0))?;
        let dir = self.snapshot_dir(&id);
        let tmp = dir.with_extension("tmp");
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| VectorError::Storage(e.to_string()))?;
        graph
            .file_dump(&tmp, "graph")
            .map_err(|e| VectorError::Storage(format!("dumping HNSW: {e}")))?;
        let meta = serde_json::json!({ "fingerprint": ix.fingerprint() });
        std::fs::write(tmp.join("meta.json"), meta.to_string())
            .map_err(|e| VectorError::Storage(e.to_string()))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&tmp, &dir).map_err(|e| VectorError::Storage(e.to_string()))?;
        Ok(())
    }

    fn check_dim(&self, v: &[f32]) -> Result<(), VectorError> {
        if v.len() != self.dim {
            return Err(VectorError::Dimension {
                got: v.len(),
                want: self.dim,
            });
        }
        Ok(())
    }

    /// Schedules a graph (re)build when the tenant crossed the exact-search threshold
    /// or too many of its graph's vectors are tombstones.
    fn after_change(&self, handle: &Arc<RwLock<TenantIndex>>, ix: &mut TenantIndex) {
        let too_many_deleted =
            (ix.deleted.len() as f64) > self.config.rebuild_deleted_fraction * ix.ids.len() as f64;
        match &ix.graph {
            None if ix.live() >= self.config.exact_threshold => self.schedule_build(handle, ix),
            // Exact search only: dropping tombstones is a copy, done in place.
            None if too_many_deleted && !ix.building => ix.compact(self.dim),
            Some(_) if too_many_deleted => self.schedule_build(handle, ix),
            _ => {}
        }
    }
}

fn build_graph(dim: usize, config: &IndexConfig, ix: &TenantIndex) -> Graph {
    let n = ix.ids.len();
    let graph = Hnsw::new(
        config.hnsw_m,
        n.max(1024),
        16,
        config.hnsw_ef_construction,
        DistCosine {},
    );
    let items: Vec<(&[f32], usize)> = ix
        .ids
        .iter()
        .enumerate()
        .filter(|(_, id)| !ix.deleted.contains(id))
        .map(|(slot, &id)| (&ix.data[slot * dim..(slot + 1) * dim], id as usize))
        .collect();
    insert(&graph, &items);
    graph
}

fn write_lock(
    ix: &RwLock<TenantIndex>,
) -> Result<std::sync::RwLockWriteGuard<'_, TenantIndex>, VectorError> {
    ix.write()
        .map_err(|_| VectorError::Storage("index lock poisoned".into()))
}

impl TenantIndex {
    fn empty() -> Self {
        Self {
            data: Vec::new(),
            ids: Vec::new(),
            docs: Vec::new(),
            slot: HashMap::new(),
            deleted: HashSet::new(),
            graph: None,
            dirty: false,
            building: false,
        }
    }

    /// The live vectors, without graph or tombstones.
    fn live_copy(&self, dim: usize) -> TenantIndex {
        let mut fresh = TenantIndex::empty();
        for (slot, &id) in self.ids.iter().enumerate() {
            if !self.deleted.contains(&id) {
                let v = &self.data[slot * dim..(slot + 1) * dim];
                fresh.push_vector(id, self.docs[slot].clone(), v);
            }
        }
        fresh
    }

    fn push_vector(&mut self, id: u64, doc: Arc<str>, v: &[f32]) {
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.docs.push(doc);
        self.data.extend_from_slice(v);
    }

    /// Takes over an index built from an earlier copy of this one, bringing it up to
    /// date with what changed since the copy: new vectors are added (and inserted into
    /// its graph), removed ones become tombstones.
    fn adopt(&mut self, mut fresh: TenantIndex, dim: usize) {
        let mut added = Vec::new();
        for (slot, &id) in self.ids.iter().enumerate() {
            let v = &self.data[slot * dim..(slot + 1) * dim];
            if self.deleted.contains(&id) {
                continue;
            }
            match fresh.slot.get(&id) {
                Some(&at) => fresh.data[at * dim..(at + 1) * dim].copy_from_slice(v),
                None => {
                    fresh.push_vector(id, self.docs[slot].clone(), v);
                    added.push(id);
                }
            }
        }
        let gone: Vec<u64> = fresh
            .ids
            .iter()
            .copied()
            .filter(|id| self.deleted.contains(id) || !self.slot.contains_key(id))
            .collect();
        fresh.tombstone(&gone);
        if let Some(graph) = &fresh.graph {
            let batch: Vec<(&[f32], usize)> = added
                .iter()
                .filter_map(|id| fresh.slot.get(id))
                .map(|&at| {
                    (
                        &fresh.data[at * dim..(at + 1) * dim],
                        fresh.ids[at] as usize,
                    )
                })
                .collect();
            insert(graph, &batch);
        }
        fresh.dirty = fresh.graph.is_some();
        *self = fresh;
    }

    fn push(&mut self, id: u64, doc: Arc<str>, bytes: &[u8]) {
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.docs.push(doc);
        decode(bytes, &mut self.data);
    }

    /// Marks vectors deleted; they are filtered at search until the next rebuild.
    fn tombstone(&mut self, ids: &[u64]) {
        for id in ids {
            if self.slot.contains_key(id) {
                self.deleted.insert(*id);
            }
        }
    }

    fn live(&self) -> usize {
        self.ids.len() - self.deleted.len()
    }

    /// Identifies the set of live vectors, so that a snapshot can be matched to sled.
    fn fingerprint(&self) -> String {
        let mut live: Vec<u64> = self
            .ids
            .iter()
            .copied()
            .filter(|id| !self.deleted.contains(id))
            .collect();
        live.sort_unstable();
        let mut h: u64 = 0xcbf29ce484222325;
        for id in &live {
            for b in id.to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x100000001b3);
            }
        }
        format!("{}:{h:016x}", live.len())
    }

    /// Drops deleted vectors from the flat copy, and the graph that still holds them;
    /// the caller builds a new graph.
    fn compact(&mut self, dim: usize) {
        self.graph = None;
        if self.deleted.is_empty() {
            return;
        }
        let mut fresh = TenantIndex::empty();
        for (slot, &id) in self.ids.iter().enumerate() {
            if self.deleted.contains(&id) {
                continue;
            }
            fresh.slot.insert(id, fresh.ids.len());
            fresh.ids.push(id);
            fresh.docs.push(self.docs[slot].clone());
            fresh
                .data
                .extend_from_slice(&self.data[slot * dim..(slot + 1) * dim]);
        }
        *self = fresh;
    }

    fn exact(
        &self,
        dim: usize,
        query: &[f32],
        k: usize,
        allow: &dyn Fn(usize) -> bool,
    ) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(slot, id)| !self.deleted.contains(id) && allow(*slot))
            .map(|(slot, &id)| {
                let v = &self.data[slot * dim..(slot + 1) * dim];
                let score = v.iter().zip(query).map(|(a, b)| a * b).sum::<f32>();
                Hit { id, score }
            })
            .collect();
        let k = k.min(hits.len());
        if k == 0 {
            return Vec::new();
        }
        hits.select_nth_unstable_by(k - 1, |a, b| b.score.total_cmp(&a.score));
        hits.truncate(k);
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits
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
            self.check_dim(&item.vector)?;
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
        for item in &items {
            if let Some(&slot) = ix.slot.get(&item.id) {
                // Same id again (a re-run): overwrite in place and revive it.
                ix.data[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&item.vector);
                ix.deleted.remove(&item.id);
            } else {
                ix.push(item.id, doc.clone(), &encode(&item.vector));
            }
        }
        if let Some(graph) = &ix.graph {
            let batch: Vec<(&[f32], usize)> = items
                .iter()
                .map(|i| (i.vector.as_slice(), i.id as usize))
                .collect();
            insert(graph, &batch);
            ix.dirty = true;
        }
        self.after_change(&handle, &mut ix);
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
        self.after_change(&handle, &mut ix);
        Ok(())
    }

    fn search(
        &self,
        tenant: &TenantId,
        query: &[f32],
        k: usize,
        documents: Option<&HashSet<String>>,
    ) -> Result<Vec<Hit>, VectorError> {
        self.check_dim(query)?;
        let ix = self.index(tenant)?;
        let ix = ix
            .read()
            .map_err(|_| VectorError::Storage("index lock poisoned".into()))?;
        let allow_slot = |slot: usize| documents.is_none_or(|d| d.contains(ix.docs[slot].as_ref()));
        let Some(graph) = &ix.graph else {
            return Ok(ix.exact(self.dim, query, k, &allow_slot));
        };
        if documents.is_some() {
            // A document filter is selective: an exact scan of the flat copy is both
            // exact and fast enough.
            return Ok(ix.exact(self.dim, query, k, &allow_slot));
        }
        let ef = self.config.hnsw_ef_search.max(k);
        let allow = |id: &usize| !ix.deleted.contains(&(*id as u64));
        let found = if ix.deleted.is_empty() {
            graph.search(query, k, ef)
        } else {
            graph.search_filter(query, k, ef, Some(&allow))
        };
        let mut seen = HashSet::new();
        Ok(found
            .into_iter()
            .filter(|n| seen.insert(n.d_id))
            .map(|n| Hit {
                id: n.d_id as u64,
                score: 1.0 - n.distance,
            })
            .collect())
    }

    fn drop_tenant(&self, tenant: &TenantId) -> Result<(), VectorError> {
        if let Ok(mut tenants) = self.tenants.lock() {
            tenants.remove(tenant.as_str());
        }
        self.db.drop_tree(tree_name(tenant))?;
        let _ = std::fs::remove_dir_all(self.snapshot_dir(tenant));
        Ok(())
    }

    fn rebuild(&self, tenant: &TenantId) -> Result<usize, VectorError> {
        let _ = std::fs::remove_dir_all(self.snapshot_dir(tenant));
        let loaded = self
            .tenants
            .lock()
            .map_err(|_| VectorError::Storage("index lock poisoned".into()))?
            .contains_key(tenant.as_str());
        if !loaded {
            // Loading it finds no snapshot and builds the graph from sled.
            let handle = self.index(tenant)?;
            self.settle_builds(None);
            let ix = handle
                .read()
                .map_err(|_| VectorError::Storage("index lock poisoned".into()))?;
            return Ok(ix.live());
        }
        // From sled, off the lock; then merged with anything written meanwhile.
        let mut fresh = self.load(tenant)?;
        if fresh.live() >= self.config.exact_threshold {
            fresh.graph = Some(build_graph(self.dim, &self.config, &fresh));
        }
        let handle = self.index(tenant)?;
        let mut ix = write_lock(&handle)?;
        let building = ix.building;
        ix.adopt(fresh, self.dim);
        ix.dirty = true;
        ix.building = building;
        Ok(ix.live())
    }

    fn count(&self, tenant: &TenantId) -> Result<usize, VectorError> {
        let ix = self.index(tenant)?;
        let ix = ix
            .read()
            .map_err(|_| VectorError::Storage("index lock poisoned".into()))?;
        Ok(ix.live())
    }

    fn persist(&self) -> Result<(), VectorError> {
        // A graph still being built is worth a short wait: without it the next start
        // builds again. Past the wait, the build is dropped and redone at the next start.
        if !self.settle_builds(Some(PERSIST_WAIT)) {
            tracing::warn!("an HNSW build is still running; it is redone at the next start");
        }
        let tenants: Vec<(String, Arc<RwLock<TenantIndex>>)> = self
            .tenants
            .lock()
            .map_err(|_| VectorError::Storage("index lock poisoned".into()))?
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (tenant, ix) in tenants {
            let mut ix = write_lock(&ix)?;
            // A graph with tombstones is not written: it is rebuilt at the next start.
            if ix.dirty && ix.graph.is_some() && ix.deleted.is_empty() {
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

    fn settle(&self) {
        self.settle_builds(None);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_waits_until_the_lock_file_is_let_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        // Another holder of the lock, as sled's background threads are after `Db` is
        // dropped: it lets go a little later, on a thread of its own.
        let holder = std::fs::File::create(&path).unwrap();
        holder.lock().unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            drop(holder);
        });
        drop(LockRelease(path.clone()));
        // The lock is free as soon as the drop returns.
        let file = std::fs::File::open(&path).unwrap();
        assert!(
            file.try_lock().is_ok(),
            "drop returned while the lock was held"
        );
        releaser.join().unwrap();
    }
}
