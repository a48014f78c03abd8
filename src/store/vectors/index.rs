//! One tenant's index in memory: a flat copy of its vectors for exact search, the
//! tombstones of deleted ones, and its HNSW graph once it has one.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::graph::{self, Graph};
use super::keys::decode;
use super::{Hit, VectorError};
use crate::config::IndexConfig;

pub(super) struct TenantIndex {
    /// Live and deleted vectors, flat, `dim` floats each.
    pub(super) data: Vec<f32>,
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
    pub(super) fn empty() -> Self {
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
    pub(super) fn live_copy(&self, dim: usize) -> TenantIndex {
        let mut fresh = TenantIndex::empty();
        for (slot, &id) in self.ids.iter().enumerate() {
            if !self.deleted.contains(&id) {
                let v = &self.data[slot * dim..(slot + 1) * dim];
                fresh.push_vector(id, self.docs[slot].clone(), v);
            }
        }
        fresh
    }

    /// A new graph of the live vectors.
    pub(super) fn build_graph(&self, dim: usize, config: &IndexConfig) -> Graph {
        let items: Vec<(&[f32], usize)> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !self.deleted.contains(id))
            .map(|(slot, &id)| (&self.data[slot * dim..(slot + 1) * dim], id as usize))
            .collect();
        graph::build(config, self.ids.len(), &items)
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
    pub(super) fn adopt(&mut self, mut fresh: TenantIndex, dim: usize) {
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
            graph::insert(graph, &batch);
        }
        fresh.dirty = fresh.graph.is_some();
        *self = fresh;
    }

    /// Appends a vector read from sled.
    pub(super) fn push(&mut self, id: u64, doc: Arc<str>, bytes: &[u8]) {
        self.slot.insert(id, self.ids.len());
        self.ids.push(id);
        self.docs.push(doc);
        decode(bytes, &mut self.data);
    }

    /// Marks vectors deleted; they are filtered at search until the next rebuild.
    pub(super) fn tombstone(&mut self, ids: &[u64]) {
        for id in ids {
            if self.slot.contains_key(id) {
                self.deleted.insert(*id);
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
    pub(super) fn compact(&mut self, dim: usize) {
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

    /// The `k` live vectors closest to `query` among the slots `allow` lets through,
    /// by a scan of the flat copy.
    pub(super) fn exact(
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
