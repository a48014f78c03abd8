//! ragbox's own HNSW graph (hierarchical navigable small world, Malkov & Yashunin),
//! over the slots of a [`FlatVectors`]: nodes are slot numbers, the vectors stay where
//! they are, and every comparison is a dot product (stored vectors are unit length).
//!
//! The links live in flat arrays of atomics with a count in front of each list, so a
//! search reads them without locks while inserts go on; writers to one node's list
//! take that node's mutex. Inserts run in parallel; searches never allocate per node.

mod search;
mod snapshot;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, RwLock};

use super::flat::FlatVectors;

#[cfg(test)]
use snapshot::SnapshotError;

/// A node and its distance to the point in question (`1 - cosine`: lower is closer).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    pub dist: f32,
    pub node: u32,
}

impl Eq for Near {}

impl PartialOrd for Near {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Near {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.dist
            .total_cmp(&other.dist)
            .then(self.node.cmp(&other.node))
    }
}

/// The graph's shape: links per node, and the candidate list of inserts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Params {
    /// Links per node above layer 0 (twice as many at layer 0).
    pub m: usize,
    /// Candidates kept while inserting.
    pub ef_construction: usize,
}

/// The top of the graph: where every search starts.
#[derive(Debug, Clone, Copy)]
struct Entry {
    node: u32,
    level: usize,
}

/// An HNSW graph over slots `0..len()` of a tenant's vectors.
pub struct Hnsw {
    params: Params,
    /// Links a node may hold at layer 0.
    m0: usize,
    /// The layer each node reaches.
    levels: Vec<u8>,
    /// Layer 0: for each node, a count and then `m0` link slots.
    base: Vec<AtomicU32>,
    /// Layers above 0, for nodes that reach them: a count and `m` slots per layer.
    upper: Vec<Box<[AtomicU32]>>,
    /// Serialises writers to one node's lists.
    locks: Vec<Mutex<()>>,
    entry: RwLock<Option<Entry>>,
}

/// The highest layer a node may reach (levels are drawn with mean `1 / ln M`).
const MAX_LEVEL: usize = 16;

/// The layer slot `node` reaches, drawn from a hash of its number, so that a graph
/// built twice from the same vectors has the same shape.
fn draw_level(node: usize, m: usize) -> u8 {
    let mut x = (node as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    // Uniform in (0, 1].
    let u = ((x >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
    let level = (-u.ln() / (m.max(2) as f64).ln()).floor() as usize;
    level.min(MAX_LEVEL) as u8
}

impl Hnsw {
    /// An empty graph with room for `capacity` nodes (it grows past that).
    pub fn new(params: Params, capacity: usize) -> Self {
        let params = Params {
            m: params.m.clamp(2, 256),
            ef_construction: params.ef_construction.max(1),
        };
        let mut graph = Self {
            m0: params.m * 2,
            params,
            levels: Vec::new(),
            base: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            entry: RwLock::new(None),
        };
        graph.levels.reserve(capacity);
        graph.base.reserve(capacity * (graph.m0 + 1));
        graph
    }

    /// Its shape.
    pub fn params(&self) -> Params {
        self.params
    }

    /// How many nodes it has room for (inserted or not).
    pub fn len(&self) -> usize {
        self.levels.len()
    }

    /// Whether it has no nodes.
    pub fn is_empty(&self) -> bool {
        self.levels.is_empty()
    }

    /// Makes room for nodes up to `n` (slots of the vectors), not yet linked.
    pub fn grow(&mut self, n: usize) {
        let m = self.params.m;
        for node in self.levels.len()..n {
            let level = draw_level(node, m);
            self.levels.push(level);
            self.base
                .extend(std::iter::repeat_with(|| AtomicU32::new(0)).take(self.m0 + 1));
            let above = usize::from(level) * (m + 1);
            self.upper.push(
                std::iter::repeat_with(|| AtomicU32::new(0))
                    .take(above)
                    .collect(),
            );
            self.locks.push(Mutex::new(()));
        }
    }

    /// Bytes held for links and levels.
    pub fn bytes(&self) -> usize {
        let upper: usize = self.upper.iter().map(|u| u.len() * 4 + 16).sum();
        self.base.capacity() * 4 + self.levels.capacity() + upper + self.locks.capacity() * 8
    }

    /// The link list of `node` at `layer`: its count and its slots.
    fn list(&self, node: u32, layer: usize) -> &[AtomicU32] {
        let node = node as usize;
        if layer == 0 {
            let start = node * (self.m0 + 1);
            &self.base[start..start + self.m0 + 1]
        } else {
            let size = self.params.m + 1;
            let start = (layer - 1) * size;
            &self.upper[node][start..start + size]
        }
    }

    /// Calls `f` for each neighbour of `node` at `layer`. A list being rewritten by an
    /// insert may be read half old, half new; every id in it is a node either way.
    #[inline]
    fn for_each_link(&self, node: u32, layer: usize, mut f: impl FnMut(u32)) {
        let list = self.list(node, layer);
        let count = (list[0].load(Ordering::Acquire) as usize).min(list.len() - 1);
        for link in &list[1..=count] {
            f(link.load(Ordering::Relaxed));
        }
    }

    /// The neighbours of `node` at `layer`, copied.
    #[cfg(test)]
    pub(crate) fn links(&self, node: u32, layer: usize) -> Vec<u32> {
        let mut out = Vec::new();
        self.for_each_link(node, layer, |n| out.push(n));
        out
    }

    fn set_links(&self, node: u32, layer: usize, links: &[u32]) {
        let list = self.list(node, layer);
        let n = links.len().min(list.len() - 1);
        for (slot, &l) in list[1..=n].iter().zip(links) {
            slot.store(l, Ordering::Relaxed);
        }
        list[0].store(n as u32, Ordering::Release);
    }

    fn lock(&self, node: u32) -> std::sync::MutexGuard<'_, ()> {
        self.locks[node as usize]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Links `node` (its vector is slot `node` of `vectors`) into the graph. Safe to
    /// call from several threads at once for different nodes.
    pub fn insert(&self, vectors: &FlatVectors, node: u32) {
        if node as usize >= self.len() {
            return;
        }
        search::with_scratch(vectors.dim(), |scratch| {
            vectors.decode(node as usize, &mut scratch.query);
            self.insert_decoded(vectors, node, scratch);
        });
    }

    fn insert_decoded(&self, vectors: &FlatVectors, node: u32, scratch: &mut search::Scratch) {
        let level = usize::from(self.levels[node as usize]);
        let top = {
            let entry = self.entry.read().unwrap_or_else(|p| p.into_inner());
            *entry
        };
        let Some(top) = top else {
            let mut entry = self.entry.write().unwrap_or_else(|p| p.into_inner());
            if entry.is_none() {
                *entry = Some(Entry { node, level });
                return;
            }
            drop(entry);
            return self.insert_decoded(vectors, node, scratch);
        };
        let query = std::mem::take(&mut scratch.query);
        let mut cur = Near {
            dist: 1.0 - vectors.score(top.node as usize, &query),
            node: top.node,
        };
        for layer in (level + 1..=top.level).rev() {
            cur = self.greedy(vectors, &query, cur, layer);
        }
        for layer in (0..=level.min(top.level)).rev() {
            let found = self.search_layer(
                vectors,
                &query,
                &[cur],
                self.params.ef_construction,
                layer,
                None,
                scratch,
            );
            let chosen = self.select(vectors, &found, self.params.m, scratch);
            {
                let _guard = self.lock(node);
                let ids: Vec<u32> = chosen.iter().map(|n| n.node).collect();
                self.set_links(node, layer, &ids);
            }
            for near in &chosen {
                self.link_back(vectors, near.node, node, near.dist, layer, scratch);
            }
            if let Some(best) = found.first() {
                cur = *best;
            }
        }
        scratch.query = query;
        if level > top.level {
            let mut entry = self.entry.write().unwrap_or_else(|p| p.into_inner());
            if entry.is_none_or(|e| level > e.level) {
                *entry = Some(Entry { node, level });
            }
        }
    }

    /// Adds `new` to `node`'s list at `layer`; when the list is full, keeps the best
    /// spread of the old links and `new` by the same rule as for a new node.
    fn link_back(
        &self,
        vectors: &FlatVectors,
        node: u32,
        new: u32,
        dist: f32,
        layer: usize,
        scratch: &mut search::Scratch,
    ) {
        let cap = if layer == 0 { self.m0 } else { self.params.m };
        let _guard = self.lock(node);
        let list = self.list(node, layer);
        let count = (list[0].load(Ordering::Acquire) as usize).min(cap);
        if list[1..=count]
            .iter()
            .any(|l| l.load(Ordering::Relaxed) == new)
        {
            return;
        }
        if count < cap {
            list[1 + count].store(new, Ordering::Relaxed);
            list[0].store(count as u32 + 1, Ordering::Release);
            return;
        }
        let mut own = std::mem::take(&mut scratch.other);
        own.resize(vectors.dim(), 0.0);
        vectors.decode(node as usize, &mut own);
        let mut candidates: Vec<Near> = list[1..=count]
            .iter()
            .map(|l| {
                let n = l.load(Ordering::Relaxed);
                Near {
                    dist: 1.0 - vectors.score(n as usize, &own),
                    node: n,
                }
            })
            .collect();
        candidates.push(Near { dist, node: new });
        candidates.sort_unstable();
        scratch.other = own;
        let kept = self.select(vectors, &candidates, cap, scratch);
        let ids: Vec<u32> = kept.iter().map(|n| n.node).collect();
        self.set_links(node, layer, &ids);
    }

    /// Of `candidates` (closest first), up to `m` that are each closer to the point
    /// than to any already kept: links that spread in different directions.
    fn select(
        &self,
        vectors: &FlatVectors,
        candidates: &[Near],
        m: usize,
        scratch: &mut search::Scratch,
    ) -> Vec<Near> {
        if candidates.len() <= m {
            return candidates.to_vec();
        }
        let mut kept: Vec<Near> = Vec::with_capacity(m);
        let mut v = std::mem::take(&mut scratch.pair);
        v.resize(vectors.dim(), 0.0);
        for c in candidates {
            if kept.len() >= m {
                break;
            }
            vectors.decode(c.node as usize, &mut v);
            let diverse = kept
                .iter()
                .all(|k| 1.0 - vectors.score(k.node as usize, &v) > c.dist);
            if diverse {
                kept.push(*c);
            }
        }
        scratch.pair = v;
        kept
    }
}

#[cfg(test)]
mod tests;
