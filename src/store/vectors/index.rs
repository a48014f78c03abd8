//! One tenant's index in memory: its vectors, flat, at the configured precision (for
//! exact search and as the graph's nodes), the tombstones of deleted ones, and its HNSW
//! graph once it has one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::flat::{FlatVectors, Precision};
use super::graph::{self, Graph};
use super::keys::decode;
use super::{Hit, VectorError};
use crate::config::IndexConfig;

pub(super) struct TenantIndex {
    /// Live and deleted vectors; slot `i` is chunk `ids[i]` and graph node `i`.
    pub(super) data: FlatVectors,
    pub(super) ids: Vec<u64>,
    pub(super) docs: Vec<Arc<str>>,
    pub(super) slot: HashMap<u64, usize>,
    pub(super) deleted: HashSet<u64>,
    pub(super) graph: Option<Graph>,
    /// Vectors inserted into the graph since it was built or loaded.
    pub(super) dirty: bool,
    /// A new graph is being built in the background.
    pub(super) building: bool,
}

/// A tenant's index, locked for writing.
pub(super) fn write_lock(
    ix: &RwLock<TenantIndex>,
) -> Result<RwLockWriteGuard<'_, TenantIndex>, VectorError> {
    ix.write()
        .map_err(|_| VectorError::Storage("index lock poisoned".into()))
}

/// A tenant's index, locked for reading.
pub(super) fn read_lock(
    ix: &RwLock<TenantIndex>,
) -> Result<RwLockReadGuard<'_, TenantIndex>, VectorError> {
    ix.read()
        .map_err(|_| VectorError::Storage("index lock poisoned".into()))
}

impl TenantIndex {
    pub(super) fn empty(dim: usize, precision: Precision) -> Self {
        Self {
            data: FlatVectors::new(dim, precision),
            ids: Vec::new(),
            docs: Vec::new(),
            slot: HashMap::new(),
            deleted: HashSet::new(),
            graph: None,
            dirty: false,
            building: false,
        }
    }

    fn fresh(&self) -> TenantIndex {
        TenantIndex::empty(self.data.dim(), self.data.precision())
    }

    /// Appends the vector in `from`'s `slot`.
    fn push_from(&mut self, from: &TenantIndex, slot: usize) {
        let id = from.ids[slot];
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.docs.push(from.docs[slot].clone());
        self.data.push_from(&from.data, slot);
    }

    /// The live vectors, without graph or tombstones.
    pub(super) fn live_copy(&self) -> TenantIndex {
        let mut fresh = self.fresh();
        fresh.data.reserve(self.live());
        for (slot, id) in self.ids.iter().enumerate() {
            if !self.deleted.contains(id) {
                fresh.push_from(self, slot);
            }
        }
        fresh
    }

    /// The same vectors with slot `i` holding chunk `order[i]`, so that a graph saved
    /// in that order fits them; the chunks in `deleted` (gone from sled, tombstones in
    /// the saved graph) come back as tombstones with their saved vectors. `None` unless
    /// `order` names each vector and each of `deleted` once.
    pub(super) fn reordered(
        &self,
        order: &[u64],
        deleted: &HashMap<u64, Vec<f32>>,
    ) -> Option<TenantIndex> {
        if order.len() != self.ids.len() + deleted.len() {
            return None;
        }
        let mut fresh = self.fresh();
        fresh.data.reserve(order.len());
        fresh.deleted = self.deleted.clone();
        let gone: Arc<str> = Arc::from("");
        for id in order {
            if fresh.slot.contains_key(id) {
                return None;
            }
            match (self.slot.get(id), deleted.get(id)) {
                (Some(&slot), None) => fresh.push_from(self, slot),
                (None, Some(v)) if v.len() == self.data.dim() => {
                    fresh.push_vector(*id, gone.clone(), v);
                    fresh.deleted.insert(*id);
                }
                _ => return None,
            }
        }
        Some(fresh)
    }

    /// The chunk id and vector (as kept in memory) of each tombstone, for a snapshot.
    pub(super) fn tombstones(&self) -> Vec<(u64, Vec<f32>)> {
        let mut out = Vec::with_capacity(self.deleted.len());
        for (slot, id) in self.ids.iter().enumerate() {
            if self.deleted.contains(id) {
                let mut v = vec![0.0; self.data.dim()];
                self.data.decode(slot, &mut v);
                out.push((*id, v));
            }
        }
        out
    }

    /// A new graph of the live vectors.
    pub(super) fn build_graph(&self, config: &IndexConfig) -> Graph {
        graph::build(config, &self.data, |slot| {
            !self.deleted.contains(&self.ids[slot])
        })
    }

    /// Takes over an index built from an earlier copy of this one, bringing it up to
    /// date with what changed since the copy: new vectors are added (and inserted into
    /// its graph), removed ones become tombstones.
    pub(super) fn adopt(&mut self, mut fresh: TenantIndex) {
        let first_new = fresh.ids.len();
        for (slot, id) in self.ids.iter().enumerate() {
            if self.deleted.contains(id) {
                continue;
            }
            match fresh.slot.get(id) {
                // Possibly rewritten since the copy (a re-run with the same ids).
                Some(&at) => fresh.data.copy_from(at, &self.data, slot),
                None => fresh.push_from(self, slot),
            }
        }
        let gone: Vec<u64> = fresh
            .ids
            .iter()
            .copied()
            .filter(|id| self.deleted.contains(id) || !self.slot.contains_key(id))
            .collect();
        fresh.tombstone(&gone);
        fresh.link_from(first_new);
        fresh.dirty = fresh.graph.is_some();
        *self = fresh;
    }

    /// Links the slots from `first` on into the graph, when there is one; true if so.
    pub(super) fn link_from(&mut self, first: usize) -> bool {
        let Some(graph) = &mut self.graph else {
            return false;
        };
        graph.grow(self.data.len());
        let added: Vec<u32> = (first..self.data.len()).map(|s| s as u32).collect();
        graph::insert(graph, &self.data, &added);
        true
    }

    /// Appends a vector read from sled.
    pub(super) fn push(&mut self, id: u64, doc: Arc<str>, bytes: &[u8]) {
        let mut v = Vec::with_capacity(self.data.dim());
        decode(bytes, &mut v);
        self.push_vector(id, doc, &v);
    }

    /// Appends a vector (as the last slot; the caller links it into the graph).
    pub(super) fn push_vector(&mut self, id: u64, doc: Arc<str>, v: &[f32]) {
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.docs.push(doc);
        self.data.push(v);
    }

    /// Marks vectors deleted; they are filtered at search until the next rebuild. The
    /// saved graph no longer fits the live vectors: it is written again at shutdown.
    pub(super) fn tombstone(&mut self, ids: &[u64]) {
        for id in ids {
            if self.slot.contains_key(id) && self.deleted.insert(*id) {
                self.dirty = true;
            }
        }
    }

    /// How many vectors are not deleted.
    pub(super) fn live(&self) -> usize {
        self.ids.len() - self.deleted.len()
    }

    /// Identifies the set of live vectors, so that a snapshot can be matched to sled.
    pub(super) fn fingerprint(&self) -> String {
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
    pub(super) fn compact(&mut self) {
        self.graph = None;
        if !self.deleted.is_empty() {
            *self = self.live_copy();
        }
    }

    /// The `k` live vectors closest to `query` among the slots `allow` lets through,
    /// by a scan of the flat copy, closest first.
    pub(super) fn exact(&self, query: &[f32], k: usize, allow: &dyn Fn(usize) -> bool) -> Vec<Hit> {
        let mut hits: Vec<Hit> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(slot, id)| !self.deleted.contains(id) && allow(*slot))
            .map(|(slot, &id)| Hit {
                id,
                score: self.data.score(slot, query),
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

    /// The graph's `ef` (at least `k`) nearest live vectors to `query`, closest first.
    pub(super) fn graph_search(
        &self,
        graph: &Graph,
        query: &[f32],
        k: usize,
        ef: usize,
    ) -> Vec<Hit> {
        let allow = |node: u32| {
            self.ids
                .get(node as usize)
                .is_some_and(|id| !self.deleted.contains(id))
        };
        let allow: Option<&dyn Fn(u32) -> bool> = if self.deleted.is_empty() {
            None
        } else {
            Some(&allow)
        };
        graph
            .search(&self.data, query, k, ef, allow)
            .into_iter()
            .filter_map(|n| {
                Some(Hit {
                    id: *self.ids.get(n.node as usize)?,
                    score: 1.0 - n.dist,
                })
            })
            .collect()
    }
}
