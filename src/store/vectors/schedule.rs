//! Background graph builds: when a tenant's index needs a new graph, one is built on a
//! thread of its own from a copy of the live vectors, never under the tenant's lock,
//! and merged in when done. Waiting for them to settle is for shutdown, tests and
//! `reindex`.

use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use super::index::TenantIndex;
use crate::config::IndexConfig;

/// The graph builds of one store: how to build them, and how many run.
pub(super) struct Builds {
    config: IndexConfig,
    running: Mutex<usize>,
    done: Condvar,
}

impl Builds {
    /// No build running yet.
    pub(super) fn new(config: IndexConfig) -> Self {
        Self {
            config,
            running: Mutex::new(0),
            done: Condvar::new(),
        }
    }

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

    /// Waits until no graph build runs, or `limit` has passed; true when none runs.
    pub(super) fn settle(&self, limit: Option<Duration>) -> bool {
        let deadline = limit.map(|l| Instant::now() + l);
        let Ok(mut running) = self.running.lock() else {
            return false;
        };
        while *running > 0 {
            let wait = match deadline {
                None => self.done.wait(running).ok(),
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.done.wait_timeout(running, left).ok().map(|(r, _)| r)
                }
            };
            match wait {
                Some(r) => running = r,
                None => return false,
            }
        }
        true
    }

    /// Schedules a graph (re)build when the tenant crossed the exact-search threshold
    /// or too many of its graph's vectors are tombstones.
    pub(super) fn after_change(
        self: &Arc<Self>,
        handle: &Arc<RwLock<TenantIndex>>,
        ix: &mut TenantIndex,
    ) {
        let too_many_deleted =
            (ix.deleted.len() as f64) > self.config.rebuild_deleted_fraction * ix.ids.len() as f64;
        match &ix.graph {
            None if ix.live() >= self.config.exact_threshold => self.schedule(handle, ix),
            // Exact search only: dropping tombstones is a copy, done in place.
            None if too_many_deleted && !ix.building => ix.compact(),
            Some(_) if too_many_deleted => self.schedule(handle, ix),
            _ => {}
        }
    }

    /// Starts building a new graph from a copy of the tenant's live vectors on a
    /// thread of its own; the result replaces the graph when it is done.
    pub(super) fn schedule(
        self: &Arc<Self>,
        handle: &Arc<RwLock<TenantIndex>>,
        ix: &mut TenantIndex,
    ) {
        if ix.building {
            return;
        }
        ix.building = true;
        let copy = ix.live_copy();
        let handle = handle.clone();
        let builds = self.clone();
        builds.start();
        let job = move || {
            let mut fresh = copy;
            if fresh.live() >= builds.config.exact_threshold {
                fresh.graph = Some(fresh.build_graph(&builds.config));
            }
            match handle.write() {
                Ok(mut ix) => ix.adopt(fresh),
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
            self.finish();
        }
    }
}
