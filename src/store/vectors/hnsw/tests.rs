use super::*;
use crate::store::vectors::flat::{Precision, dot};

/// A generator of floats in [-0.5, 0.5).
fn floats(seed: u64) -> impl FnMut() -> f32 {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    }
}

/// `n` unit vectors of `dim` floats around `topics` centres, like sentence embeddings:
/// the centres are the same for every `seed` (so queries fall among the base vectors),
/// the points around them differ.
pub(crate) fn clustered(n: usize, dim: usize, topics: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut centre = floats(2026);
    let centres: Vec<Vec<f32>> = (0..topics)
        .map(|_| (0..dim).map(|_| centre()).collect())
        .collect();
    let mut next = floats(seed);
    (0..n)
        .map(|i| {
            let c = &centres[(i * 7919 + seed as usize) % topics];
            let mut v: Vec<f32> = c.iter().map(|x| x + 0.3 * next()).collect();
            let norm = dot(&v, &v).sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            v
        })
        .collect()
}

fn exact_top(vs: &[Vec<f32>], q: &[f32], k: usize, allow: impl Fn(usize) -> bool) -> Vec<u32> {
    let mut scored: Vec<(f32, u32)> = vs
        .iter()
        .enumerate()
        .filter(|(i, _)| allow(*i))
        .map(|(i, v)| (dot(v, q), i as u32))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    scored.into_iter().take(k).map(|(_, i)| i).collect()
}

fn build(vs: &[Vec<f32>], precision: Precision) -> (FlatVectors, Hnsw) {
    let mut flat = FlatVectors::new(vs[0].len(), precision);
    for v in vs {
        flat.push(v);
    }
    let mut graph = Hnsw::new(
        Params {
            m: 12,
            ef_construction: 64,
        },
        vs.len(),
    );
    graph.grow(vs.len());
    for n in 0..vs.len() as u32 {
        graph.insert(&flat, n);
    }
    (flat, graph)
}

fn recall(
    graph: &Hnsw,
    flat: &FlatVectors,
    vs: &[Vec<f32>],
    queries: &[Vec<f32>],
    allow: Option<&dyn Fn(u32) -> bool>,
) -> f64 {
    let k = 10;
    let mut hits = 0;
    for q in queries {
        let want = exact_top(vs, q, k, |i| allow.is_none_or(|a| a(i as u32)));
        let got = graph.search(flat, q, k, 48, allow);
        hits += got
            .iter()
            .take(k)
            .filter(|n| want.contains(&n.node))
            .count();
    }
    hits as f64 / (queries.len() * k) as f64
}

#[test]
fn finds_nearly_all_true_neighbours_and_answers_closest_first() {
    let vs = clustered(3000, 64, 40, 1);
    let queries = clustered(50, 64, 40, 2);
    let (flat, graph) = build(&vs, Precision::F32);
    let r = recall(&graph, &flat, &vs, &queries, None);
    assert!(r >= 0.95, "recall@10 {r}");
    let got = graph.search(&flat, &queries[0], 10, 48, None);
    assert_eq!(got.len(), 48);
    assert!(got.windows(2).all(|w| w[0].dist <= w[1].dist));
    // Each answer is a distinct node with its true distance.
    let mut nodes: Vec<u32> = got.iter().map(|n| n.node).collect();
    nodes.dedup();
    assert_eq!(nodes.len(), got.len());
    for n in &got {
        let d = 1.0 - dot(&vs[n.node as usize], &queries[0]);
        assert!((d - n.dist).abs() < 1e-5);
    }
}

#[test]
fn a_filter_keeps_rejected_nodes_out_of_the_answer_without_losing_recall() {
    let vs = clustered(3000, 64, 40, 3);
    let queries = clustered(40, 64, 40, 4);
    let (flat, graph) = build(&vs, Precision::F32);
    let odd_only = |n: u32| n % 2 == 1;
    let r = recall(&graph, &flat, &vs, &queries, Some(&odd_only));
    assert!(r >= 0.93, "recall@10 among allowed nodes {r}");
    for q in &queries {
        let got = graph.search(&flat, q, 10, 48, Some(&odd_only));
        assert!(got.iter().all(|n| n.node % 2 == 1));
    }
}

#[test]
fn every_node_is_reachable_and_links_stay_within_bounds() {
    let vs = clustered(1500, 32, 20, 5);
    let (flat, graph) = build(&vs, Precision::F32);
    let mut seen = vec![false; vs.len()];
    let mut stack = vec![graph.entry.read().unwrap().unwrap().node];
    while let Some(n) = stack.pop() {
        if std::mem::replace(&mut seen[n as usize], true) {
            continue;
        }
        let links = graph.links(n, 0);
        assert!(links.len() <= 24);
        assert!(!links.contains(&n), "node {n} links to itself");
        stack.extend(links);
    }
    let unreached = seen.iter().filter(|s| !**s).count();
    assert_eq!(
        unreached, 0,
        "{unreached} nodes cannot be reached from the entry"
    );
    // And each node finds itself.
    for probe in [0usize, 700, 1499] {
        let got = graph.search(&flat, &vs[probe], 1, 32, None);
        assert_eq!(got[0].node as usize, probe);
    }
}

#[test]
fn parallel_inserts_build_a_graph_as_good_as_serial_ones() {
    use rayon::prelude::*;
    let vs = clustered(3000, 64, 40, 6);
    let queries = clustered(50, 64, 40, 7);
    let mut flat = FlatVectors::new(64, Precision::F32);
    vs.iter().for_each(|v| flat.push(v));
    let mut graph = Hnsw::new(
        Params {
            m: 12,
            ef_construction: 64,
        },
        0,
    );
    graph.grow(vs.len());
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    pool.install(|| {
        (0..vs.len() as u32)
            .into_par_iter()
            .for_each(|n| graph.insert(&flat, n))
    });
    let r = recall(&graph, &flat, &vs, &queries, None);
    assert!(r >= 0.95, "recall@10 {r}");
}

#[test]
fn quantized_vectors_keep_recall_close_to_f32() {
    let vs = clustered(3000, 64, 40, 8);
    let queries = clustered(50, 64, 40, 9);
    let (flat, graph) = build(&vs, Precision::F32);
    let full = recall(&graph, &flat, &vs, &queries, None);
    for precision in [Precision::F16, Precision::Int8] {
        let (flat, graph) = build(&vs, precision);
        // As the store does: the best 26 by the compact scores, re-scored exactly.
        let mut hits = 0;
        for q in &queries {
            let want = exact_top(&vs, q, 10, |_| true);
            let mut got: Vec<(f32, u32)> = graph
                .search(&flat, q, 26, 48, None)
                .iter()
                .take(26)
                .map(|n| (dot(&vs[n.node as usize], q), n.node))
                .collect();
            got.sort_by(|a, b| b.0.total_cmp(&a.0));
            hits += got
                .iter()
                .take(10)
                .filter(|(_, n)| want.contains(n))
                .count();
        }
        let r = hits as f64 / (queries.len() * 10) as f64;
        assert!(r >= full - 0.005, "{precision:?}: {r} against f32 {full}");
    }
}

#[test]
fn a_snapshot_reads_back_the_same_graph_and_refuses_damage() {
    let vs = clustered(800, 32, 10, 10);
    let (flat, graph) = build(&vs, Precision::F32);
    let ids: Vec<u64> = (0..vs.len() as u64).map(|i| i * 3 + 1).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("graph.bin");
    graph.write(&path, &ids).unwrap();
    let (back, back_ids) = Hnsw::read(&path).unwrap();
    assert_eq!(back_ids, ids);
    assert_eq!(back.params(), graph.params());
    for q in vs.iter().step_by(97) {
        let a: Vec<u32> = graph
            .search(&flat, q, 10, 32, None)
            .iter()
            .map(|n| n.node)
            .collect();
        let b: Vec<u32> = back
            .search(&flat, q, 10, 32, None)
            .iter()
            .map(|n| n.node)
            .collect();
        assert_eq!(a, b);
    }
    // Truncated, a link pointed past the last node, or another file: refused.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    assert!(matches!(Hnsw::read(&path), Err(SnapshotError::Damaged(_))));
    let mut bad = bytes.clone();
    let first_link = 12 + 5 * 4 + vs.len() + 4;
    bad[first_link..first_link + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    assert!(matches!(Hnsw::read(&path), Err(SnapshotError::Damaged(_))));
    std::fs::write(&path, b"not a graph at all").unwrap();
    assert!(Hnsw::read(&path).is_err());
}

#[test]
fn an_empty_graph_answers_nothing() {
    let flat = FlatVectors::new(8, Precision::F32);
    let graph = Hnsw::new(
        Params {
            m: 8,
            ef_construction: 16,
        },
        0,
    );
    assert!(graph.search(&flat, &[0.0; 8], 5, 16, None).is_empty());
}
