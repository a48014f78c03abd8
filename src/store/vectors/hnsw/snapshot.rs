//! The graph on disk: one file, little-endian, with the chunk id of each node, so that
//! the vectors read back from sled can be put in the graph's order. Reading checks
//! every count and link against the file's own sizes: a damaged file is refused (and
//! the graph rebuilt), never trusted.
//!
//! Layout: magic, `m`, `ef_construction`, node count, entry node and level; then one
//! level byte per node; the layer-0 lists; the upper lists of nodes that have them;
//! the chunk ids.

use std::io::Write;
use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::{Entry, Hnsw, MAX_LEVEL, Params};

const MAGIC: &[u8; 12] = b"RAGBOX-HNSW1";
const NO_ENTRY: u32 = u32::MAX;

/// Why a snapshot cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("HNSW snapshot: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not a graph this version wrote, or is damaged.
    #[error("HNSW snapshot is damaged: {0}")]
    Damaged(&'static str),
}

impl Hnsw {
    /// Writes the graph, with `ids[node]` the chunk id of each node, to `path`.
    pub fn write(&self, path: &Path, ids: &[u64]) -> Result<(), SnapshotError> {
        if ids.len() != self.len() {
            return Err(SnapshotError::Damaged("ids and nodes differ in number"));
        }
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        let entry = *self.entry.read().unwrap_or_else(|p| p.into_inner());
        out.write_all(MAGIC)?;
        for v in [
            self.params.m as u32,
            self.params.ef_construction as u32,
            self.len() as u32,
            entry.map_or(NO_ENTRY, |e| e.node),
            entry.map_or(0, |e| e.level as u32),
        ] {
            out.write_all(&v.to_le_bytes())?;
        }
        out.write_all(&self.levels)?;
        let words = self
            .base
            .iter()
            .chain(self.upper.iter().flat_map(|u| u.iter()));
        for w in words {
            out.write_all(&w.load(Ordering::Relaxed).to_le_bytes())?;
        }
        for id in ids {
            out.write_all(&id.to_le_bytes())?;
        }
        out.into_inner()
            .map_err(|e| SnapshotError::Io(e.into_error()))?
            .sync_all()?;
        Ok(())
    }

    /// Reads a graph written by [`Hnsw::write`], with the chunk id of each node.
    pub fn read(path: &Path) -> Result<(Hnsw, Vec<u64>), SnapshotError> {
        let bytes = std::fs::read(path)?;
        let mut r = Reader {
            bytes: &bytes,
            at: 0,
        };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(SnapshotError::Damaged("not an HNSW snapshot"));
        }
        let m = r.u32()? as usize;
        let ef_construction = r.u32()? as usize;
        let n = r.u32()? as usize;
        let entry_node = r.u32()?;
        let entry_level = r.u32()? as usize;
        if !(2..=256).contains(&m) {
            return Err(SnapshotError::Damaged("links per node out of range"));
        }
        let levels = r.take(n)?.to_vec();
        if levels.iter().any(|&l| usize::from(l) > MAX_LEVEL) {
            return Err(SnapshotError::Damaged("level out of range"));
        }
        let m0 = m * 2;
        let mut graph = Hnsw {
            params: Params { m, ef_construction },
            m0,
            levels,
            base: Vec::new(),
            upper: Vec::new(),
            locks: Vec::new(),
            entry: RwLock::new(None),
        };
        graph.base = r.lists(n, m0, n)?;
        for node in 0..n {
            let above = usize::from(graph.levels[node]);
            let mut lists = Vec::with_capacity(above * (m + 1));
            for _ in 0..above {
                lists.extend(r.lists(1, m, n)?);
            }
            graph.upper.push(lists.into_boxed_slice());
        }
        graph.locks = (0..n).map(|_| std::sync::Mutex::new(())).collect();
        let ids: Vec<u64> = (0..n).map(|_| r.u64()).collect::<Result<_, _>>()?;
        if r.at != bytes.len() {
            return Err(SnapshotError::Damaged("trailing bytes"));
        }
        if entry_node != NO_ENTRY {
            let Some(&level) = graph.levels.get(entry_node as usize) else {
                return Err(SnapshotError::Damaged("entry node out of range"));
            };
            if usize::from(level) != entry_level {
                return Err(SnapshotError::Damaged("entry level does not match"));
            }
            graph.entry = RwLock::new(Some(Entry {
                node: entry_node,
                level: entry_level,
            }));
        }
        Ok((graph, ids))
    }
}

/// Reads little-endian values off a byte slice, refusing to run past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(SnapshotError::Damaged("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, SnapshotError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        let lo = u64::from(self.u32()?);
        let hi = u64::from(self.u32()?);
        Ok(lo | (hi << 32))
    }

    /// `count` link lists of `cap` slots each, every count and link checked.
    fn lists(
        &mut self,
        count: usize,
        cap: usize,
        nodes: usize,
    ) -> Result<Vec<AtomicU32>, SnapshotError> {
        let mut out = Vec::with_capacity(count * (cap + 1));
        for _ in 0..count {
            let used = self.u32()? as usize;
            if used > cap {
                return Err(SnapshotError::Damaged("link count out of range"));
            }
            out.push(AtomicU32::new(used as u32));
            for i in 0..cap {
                let link = self.u32()?;
                if i < used && link as usize >= nodes {
                    return Err(SnapshotError::Damaged("link out of range"));
                }
                out.push(AtomicU32::new(link));
            }
        }
        Ok(out)
    }
}
