//! `ragbox bench ann`: HNSW build time, queries per second and recall@k for several
//! `ef`, on vectors and true neighbours read from `.npy` files.

use std::path::Path;
use std::time::Instant;

use hnsw_rs::prelude::{DistCosine, Hnsw};

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

pub(super) fn run(
    base: &Path,
    queries: &Path,
    truth: &Path,
    efs: &[usize],
    k: usize,
    m: usize,
    ef_c: usize,
) -> anyhow::Result<()> {
    let base = read_npy(base)?;
    let queries = read_npy(queries)?;
    let truth = read_npy(truth)?;
    anyhow::ensure!(
        base.cols == queries.cols,
        "base and queries differ in width"
    );
    anyhow::ensure!(
        truth.rows == queries.rows && truth.cols >= k,
        "truth must be [queries, >= k]"
    );
    let dim = base.cols;
    let started = Instant::now();
    let graph: Hnsw<f32, DistCosine> = Hnsw::new(m, base.rows, 16, ef_c, DistCosine {});
    let items: Vec<(&[f32], usize)> = (0..base.rows)
        .map(|i| (&base.floats[i * dim..(i + 1) * dim], i))
        .collect();
    graph.parallel_insert_slice(&items);
    println!(
        "ann build: {} x {dim} vectors, M {m}, ef_construction {ef_c}: {:.2} s",
        base.rows,
        started.elapsed().as_secs_f64()
    );
    for &ef in efs {
        let started = Instant::now();
        let mut hits = 0usize;
        for q in 0..queries.rows {
            let found = graph.search(&queries.floats[q * dim..(q + 1) * dim], k, ef.max(k));
            let want = &truth.ints[q * truth.cols..q * truth.cols + k];
            hits += found
                .iter()
                .filter(|n| want.contains(&(n.d_id as i64)))
                .count();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "ef {ef:>4}: {:>8.0} QPS (one thread), recall@{k} {:.4}",
            queries.rows as f64 / secs,
            hits as f64 / (queries.rows * k) as f64
        );
    }
    Ok(())
}
