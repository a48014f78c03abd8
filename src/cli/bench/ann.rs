//! `ragbox bench ann`: HNSW build time, memory, queries per second and recall@k for
//! several `ef` and each vector precision, on vectors and true neighbours read from
//! `.npy` files.

use std::path::Path;
use std::time::Instant;

use rayon::prelude::*;

use crate::store::vectors::{FlatVectors, Hnsw, HnswParams, Precision, dot};

/// A 2-D array read from a `.npy` file, as f32 (floats) or i64 (integers).
struct Npy {
    rows: usize,
    cols: usize,
    floats: Vec<f32>,
    ints: Vec<i64>,
}

fn read_npy(path: &Path) -> anyhow::Result<Npy> {
    let bytes = std::fs::read(path)?;
    anyhow::ensure!(
        bytes.starts_with(b"\x93NUMPY"),
        "{} is not a .npy file",
        path.display()
    );
    let major = bytes[6];
    let (header_len, start) = if major == 1 {
        (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10)
    } else {
        (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        )
    };
    let header = std::str::from_utf8(&bytes[start..start + header_len])?;
    anyhow::ensure!(
        header.contains("'fortran_order': False"),
        "{}: Fortran order is not supported",
        path.display()
    );
    let descr = header
        .split("'descr':")
        .nth(1)
        .and_then(|s| s.split('\'').nth(1))
        .ok_or_else(|| anyhow::anyhow!("{}: no dtype", path.display()))?;
    let shape: Vec<usize> = header
        .split("'shape':")
        .nth(1)
        .and_then(|s| s.split(['(', ')']).nth(1))
        .ok_or_else(|| anyhow::anyhow!("{}: no shape", path.display()))?
        .split(',')
        .filter_map(|x| x.trim().parse().ok())
        .collect();
    anyhow::ensure!(shape.len() == 2, "{}: expected a 2-D array", path.display());
    let data = &bytes[start + header_len..];
    let mut out = Npy {
        rows: shape[0],
        cols: shape[1],
        floats: Vec::new(),
        ints: Vec::new(),
    };
    match descr {
        "<f4" => {
            out.floats = data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
        "<i4" => {
            out.ints = data
                .chunks_exact(4)
                .map(|c| i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect()
        }
        "<i8" => {
            out.ints = data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect()
        }
        other => anyhow::bail!(
            "{}: dtype {other} is not supported (use <f4, <i4 or <i8)",
            path.display()
        ),
    }
    Ok(out)
}

/// What `ragbox bench ann` is asked to measure.
pub(super) struct AnnRun<'a> {
    pub base: &'a Path,
    pub queries: &'a Path,
    pub truth: &'a Path,
    pub efs: &'a [usize],
    pub k: usize,
    pub m: usize,
    pub ef_construction: usize,
    pub threads: usize,
    pub precisions: &'a [Precision],
}

pub(super) fn run(a: AnnRun<'_>) -> anyhow::Result<()> {
    let base = read_npy(a.base)?;
    let queries = read_npy(a.queries)?;
    let truth = read_npy(a.truth)?;
    let k = a.k;
    anyhow::ensure!(
        base.cols == queries.cols,
        "base and queries differ in width"
    );
    anyhow::ensure!(
        truth.rows == queries.rows && truth.cols >= k,
        "truth must be [queries, >= k]"
    );
    let dim = base.cols;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(a.threads.max(1))
        .build()?;
    for &precision in a.precisions {
        let rss_before = super::rss_mb();
        let started = Instant::now();
        let mut flat = FlatVectors::new(dim, precision);
        flat.reserve(base.rows);
        for v in base.floats.chunks_exact(dim) {
            flat.push(v);
        }
        let params = HnswParams {
            m: a.m,
            ef_construction: a.ef_construction,
        };
        let mut graph = Hnsw::new(params, base.rows);
        graph.grow(base.rows);
        pool.install(|| {
            (0..base.rows as u32)
                .into_par_iter()
                .with_min_len(64)
                .for_each(|n| graph.insert(&flat, n))
        });
        let built = started.elapsed().as_secs_f64();
        let held = (flat.bytes() + graph.bytes()) as f64 / (1 << 20) as f64;
        println!(
            "ann build ({}): {} x {dim} vectors, M {}, ef_construction {}, {} threads: {built:.2} s; \
             index {held:.1} MiB ({:.1} MiB per 100k vectors), RSS +{:.1} MiB",
            precision.as_str(),
            base.rows,
            a.m,
            a.ef_construction,
            a.threads,
            held * 100_000.0 / base.rows as f64,
            super::rss_mb() - rss_before
        );
        // Quantized scores are re-scored exactly, as the store does against sled.
        let rescored = precision.candidates(k);
        for &ef in a.efs {
            let started = Instant::now();
            let mut hits = 0usize;
            for q in 0..queries.rows {
                let query = &queries.floats[q * dim..(q + 1) * dim];
                let mut found: Vec<(f32, usize)> = graph
                    .search(&flat, query, rescored, ef.max(rescored), None)
                    .into_iter()
                    .take(rescored)
                    .map(|n| (1.0 - n.dist, n.node as usize))
                    .collect();
                if precision.is_quantized() {
                    for (score, node) in &mut found {
                        *score = dot(&base.floats[*node * dim..(*node + 1) * dim], query);
                    }
                    found.sort_by(|x, y| y.0.total_cmp(&x.0));
                }
                let want = &truth.ints[q * truth.cols..q * truth.cols + k];
                hits += found
                    .iter()
                    .take(k)
                    .filter(|(_, n)| want.contains(&(*n as i64)))
                    .count();
            }
            let secs = started.elapsed().as_secs_f64();
            println!(
                "  {} ef {ef:>4}: {:>8.0} QPS (one thread), recall@{k} {:.4}",
                precision.as_str(),
                queries.rows as f64 / secs,
                hits as f64 / (queries.rows * k) as f64
            );
        }
    }
    Ok(())
}
