//! Walking the graph: the greedy descent through the upper layers, the beam search
//! of one layer, and the query entry point. Each thread keeps its scratch (visited
//! marks, heaps, decoded vectors) between calls, so a search allocates only its answer.

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::{Hnsw, Near};
use crate::store::vectors::flat::FlatVectors;

/// Nodes seen in the current search: a mark per node, valid when it equals `epoch`,
/// so starting a search is one increment, not a clear.
#[derive(Default)]
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn start(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.iter_mut().for_each(|m| *m = 0);
            self.epoch = 1;
        }
    }

    /// True the first time `node` is seen in this search.
    #[inline]
    fn first(&mut self, node: u32) -> bool {
        match self.marks.get_mut(node as usize) {
            Some(m) if *m != self.epoch => {
                *m = self.epoch;
                true
            }
            _ => false,
        }
    }
}

/// What one thread reuses from search to search.
#[derive(Default)]
pub(super) struct Scratch {
    visited: Visited,
    frontier: BinaryHeap<Reverse<Near>>,
    best: BinaryHeap<Near>,
    /// The not yet seen neighbours of the node being expanded.
    unseen: Vec<u32>,
    /// The vector being inserted or searched for.
    pub(super) query: Vec<f32>,
    /// A node's own vector, while its links are pruned.
    pub(super) other: Vec<f32>,
    /// A candidate's vector, while links are chosen.
    pub(super) pair: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's scratch, its `query` `dim` wide.
pub(super) fn with_scratch<R>(dim: usize, f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            scratch.query.resize(dim, 0.0);
            f(&mut scratch)
        }
        // Only a re-entrant call finds it taken; it gets scratch of its own.
        Err(_) => {
            let mut scratch = Scratch {
                query: vec![0.0; dim],
                ..Scratch::default()
            };
            f(&mut scratch)
        }
    })
}

impl Hnsw {
    /// From `start`, moves to whichever neighbour at `layer` is closer to `query` until
    /// none is.
    pub(super) fn greedy(
        &self,
        vectors: &FlatVectors,
        query: &[f32],
        start: Near,
        layer: usize,
    ) -> Near {
        let mut cur = start;
        loop {
            let mut moved = false;
            let from = cur.node;
            self.for_each_link(from, layer, |n| {
                let dist = 1.0 - vectors.score(n as usize, query);
                if dist < cur.dist {
                    cur = Near { dist, node: n };
                    moved = true;
                }
            });
            if !moved {
                return cur;
            }
        }
    }

    /// The `ef` nodes at `layer` closest to `query` found from `entries`, closest first;
    /// with `allow`, only nodes it lets through are answered (the others are still
    /// walked through).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn search_layer(
        &self,
        vectors: &FlatVectors,
        query: &[f32],
        entries: &[Near],
        ef: usize,
        layer: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
        scratch: &mut Scratch,
    ) -> Vec<Near> {
        let Scratch {
            visited,
            frontier,
            best,
            unseen,
            ..
        } = scratch;
        visited.start(self.len());
        frontier.clear();
        best.clear();
        let allowed = |n: u32| allow.is_none_or(|a| a(n));
        for &e in entries {
            visited.first(e.node);
            frontier.push(Reverse(e));
            if allowed(e.node) {
                best.push(e);
            }
        }
        while let Some(Reverse(c)) = frontier.pop() {
            let worst = best.peek().map_or(f32::INFINITY, |w| w.dist);
            if c.dist > worst && best.len() >= ef {
                break;
            }
            // The neighbours' vectors are fetched from RAM together, ahead of scoring
            // them one by one.
            unseen.clear();
            self.for_each_link(c.node, layer, |n| {
                if visited.first(n) {
                    vectors.prefetch(n as usize);
                    unseen.push(n);
                }
            });
            for &n in unseen.iter() {
                let dist = 1.0 - vectors.score(n as usize, query);
                let worst = best.peek().map_or(f32::INFINITY, |w| w.dist);
                if best.len() < ef || dist < worst {
                    let near = Near { dist, node: n };
                    frontier.push(Reverse(near));
                    if allowed(n) {
                        best.push(near);
                        if best.len() > ef {
                            best.pop();
                        }
                    }
                }
            }
        }
        let mut out: Vec<Near> = best.drain().collect();
        out.sort_unstable();
        out
    }

    /// The `ef` (at least `k`) nodes closest to `query`, closest first, among those
    /// `allow` lets through.
    pub fn search(
        &self,
        vectors: &FlatVectors,
        query: &[f32],
        k: usize,
        ef: usize,
        allow: Option<&dyn Fn(u32) -> bool>,
    ) -> Vec<Near> {
        let top = *self.entry.read().unwrap_or_else(|p| p.into_inner());
        let Some(top) = top else {
            return Vec::new();
        };
        let mut cur = Near {
            dist: 1.0 - vectors.score(top.node as usize, query),
            node: top.node,
        };
        for layer in (1..=top.level).rev() {
            cur = self.greedy(vectors, query, cur, layer);
        }
        with_scratch(vectors.dim(), |scratch| {
            self.search_layer(vectors, query, &[cur], ef.max(k), 0, allow, scratch)
        })
    }
}
