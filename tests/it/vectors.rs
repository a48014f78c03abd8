//! The local vector store: exact search for small tenants, filters, snapshots (the
//! recall of its HNSW graph on 20,000 vectors is a long test, in `tests/long`).

use std::collections::HashSet;

use ragbox::config::IndexConfig;
use ragbox::domain::TenantId;
use ragbox::store::vectors::{
    IndexMaintenance, LocalVectorStore, Precision, VectorItem, VectorStore,
};

use crate::helpers::vectors::{
    DIM, config, dataset, exact_top, items, numbered, recall_at_10, store_documents, top_ids,
};

#[test]
fn small_tenants_are_searched_exactly_and_filters_apply() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalVectorStore::open(dir.path(), DIM, config(10_000)).unwrap();
    let tenant = TenantId::generate();
    let other = TenantId::generate();
    let data = numbered(500, 3);
    store_documents(&store, &tenant, &data, 50, "d");
    let q = &data[123].1;
    let got: Vec<u64> = store
        .search(&tenant, q, 10, None)
        .unwrap()
        .iter()
        .map(|h| h.id)
        .collect();
    assert_eq!(got, exact_top(&data, q, 10));
    assert!(
        store.search(&other, q, 10, None).unwrap().is_empty(),
        "tenants are separate"
    );
    let only: std::collections::HashSet<String> = ["d3".to_owned()].into();
    let hits = store.search(&tenant, q, 10, Some(&only)).unwrap();
    assert!(hits.iter().all(|h| (151..=200).contains(&h.id)), "{hits:?}");
    // Replacing a document drops its old vectors.
    store
        .replace_document(
            &tenant,
            "d0",
            vec![VectorItem {
                id: 9_999,
                vector: data[0].1.clone(),
            }],
        )
        .unwrap();
    assert_eq!(store.count(&tenant).unwrap(), 500 - 50 + 1);
    let hits = store.search(&tenant, &data[0].1, 3, None).unwrap();
    assert_eq!(hits[0].id, 9_999);
    assert!(hits.iter().all(|h| h.id > 50 || h.id == 9_999));
    assert!(
        store.search(&tenant, &[0.0; 3], 1, None).is_err(),
        "wrong dimension"
    );
}

#[test]
fn snapshots_are_reloaded_and_stale_ones_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let data = numbered(3_000, 11);
    let queries = dataset(20, 12);
    let before: Vec<Vec<u64>> = {
        let store = LocalVectorStore::open(dir.path(), DIM, config(1000)).unwrap();
        store
            .replace_document(&tenant, "all", items(&data))
            .unwrap();
        // The graph is built in the background (persist waits only 30 s for it, and
        // the other tests share rayon's threads): wait for it here.
        store.settle();
        store.persist().unwrap();
        top_ids(&store, &tenant, &queries)
    };
    let snapshot = dir
        .path()
        .join("tenants")
        .join(tenant.as_str())
        .join("hnsw");
    assert!(snapshot.join("meta.json").is_file(), "snapshot written");
    {
        // Reopened: the snapshot matches sled and is loaded as is.
        let store = LocalVectorStore::open(dir.path(), DIM, config(1000)).unwrap();
        let after = top_ids(&store, &tenant, &queries);
        assert_eq!(before, after, "the reloaded graph answers as the saved one");
        store.persist().unwrap();
    }
    // Make the snapshot stale behind the store's back: it is rebuilt, not trusted.
    std::fs::write(snapshot.join("meta.json"), r#"{"fingerprint": "0:0"}"#).unwrap();
    let store = LocalVectorStore::open(dir.path(), DIM, config(1000)).unwrap();
    assert_eq!(store.count(&tenant).unwrap(), 3_000);
    store.settle();
    let recall = recall_at_10(&store, &tenant, &data, &queries);
    assert!(recall >= 0.95, "recall@10 = {recall}");
    // The rebuilt graph replaces the stale snapshot.
    store.persist().unwrap();
    let meta = std::fs::read_to_string(snapshot.join("meta.json")).unwrap();
    assert!(meta.contains("\"3000:"), "fresh snapshot written: {meta}");
}

#[test]
fn a_graph_with_tombstones_is_saved_with_them_and_reloads_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let data = numbered(3_000, 41);
    let queries = dataset(30, 42);
    // A narrow search: the graph's answers then differ from exact ones, so an index
    // rebuilt or scanned after the reload would not answer as the saved graph did.
    let config = IndexConfig {
        hnsw_ef_search: 10,
        ..config(1000)
    };
    let before = {
        let store = LocalVectorStore::open(dir.path(), DIM, config.clone()).unwrap();
        store_documents(&store, &tenant, &data, 100, "doc-");
        store.settle();
        // A tenth deleted: below the rebuild fraction, they stay tombstones in the graph.
        for doc in 0..3 {
            store
                .delete_document(&tenant, &format!("doc-{doc}"))
                .unwrap();
        }
        store.settle();
        let before = top_ids(&store, &tenant, &queries);
        store.persist().unwrap();
        before
    };
    assert!(before.iter().flatten().all(|&id| id > 300), "{before:?}");
    let left: Vec<(u64, Vec<f32>)> = data.into_iter().filter(|(id, _)| *id > 300).collect();
    let exact: Vec<Vec<u64>> = queries.iter().map(|q| exact_top(&left, q, 10)).collect();
    assert_ne!(before, exact, "the narrow graph search is not an exact one");
    let snapshot = dir
        .path()
        .join("tenants")
        .join(tenant.as_str())
        .join("hnsw");
    assert!(snapshot.join("deleted.bin").is_file(), "tombstones saved");
    {
        let store = LocalVectorStore::open(dir.path(), DIM, config.clone()).unwrap();
        assert_eq!(store.count(&tenant).unwrap(), 2_700);
        assert_eq!(
            top_ids(&store, &tenant, &queries),
            before,
            "the reloaded graph answers as the saved one"
        );
    }
    // A damaged tombstones file is refused: the graph is rebuilt without them.
    let file = snapshot.join("deleted.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
    let store = LocalVectorStore::open(dir.path(), DIM, config).unwrap();
    assert_eq!(store.count(&tenant).unwrap(), 2_700);
    store.settle();
    for hits in top_ids(&store, &tenant, &queries) {
        assert_eq!(hits.len(), 10);
        assert!(hits.iter().all(|&id| id > 300), "{hits:?}");
    }
    store.persist().unwrap();
    assert!(snapshot.join("graph.bin").is_file(), "rebuilt graph saved");
    assert!(!file.exists(), "the rebuilt graph has no tombstones");
}

#[test]
fn a_dropped_store_opens_again_at_once_in_the_same_process() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let data = dataset(800, 13);
    for round in 0..100 {
        let store = LocalVectorStore::open(dir.path(), DIM, config(1000))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_eq!(store.count(&tenant).unwrap(), round * 8, "round {round}");
        let items = data[round * 8..round * 8 + 8]
            .iter()
            .enumerate()
            .map(|(i, v)| VectorItem {
                id: (round * 8 + i) as u64 + 1,
                vector: v.clone(),
            })
            .collect();
        // Fresh writes leave sled's background threads busy as the store is dropped.
        store
            .replace_document(&tenant, &format!("doc-{round}"), items)
            .unwrap();
    }
}

#[test]
fn quantized_vectors_keep_recall_within_half_a_point_of_f32() {
    let tenant = TenantId::generate();
    let data = numbered(4_000, 21);
    let queries = dataset(100, 22);
    let recall = |precision: Precision| {
        let dir = tempfile::tempdir().unwrap();
        // A wide search, so that the comparison measures the precision rather than the
        // chance shape of each graph (built in parallel, it differs from run to run).
        let config = IndexConfig {
            precision,
            hnsw_ef_search: 128,
            ..config(1000)
        };
        let store = LocalVectorStore::open(dir.path(), DIM, config).unwrap();
        store_documents(&store, &tenant, &data, 100, "doc-");
        store.settle();
        // Scores are the exact cosines, re-scored against the stored f32 vectors.
        let q = &queries[0];
        for hit in store.search(&tenant, q, 5, None).unwrap() {
            let v = &data[hit.id as usize - 1].1;
            let exact: f32 = v.iter().zip(q).map(|(a, b)| a * b).sum();
            assert!((hit.score - exact).abs() < 1e-5, "{precision:?}");
        }
        // A document filter scans the quantized vectors, then re-scores too.
        let only: HashSet<String> = ["doc-3".to_owned()].into();
        let hits = store.search(&tenant, q, 5, Some(&only)).unwrap();
        assert!(hits.iter().all(|h| (301..=400).contains(&h.id)));
        recall_at_10(&store, &tenant, &data, &queries)
    };
    let full = recall(Precision::F32);
    assert!(full >= 0.95, "f32 recall@10 = {full}");
    for precision in [Precision::F16, Precision::Int8] {
        let r = recall(precision);
        assert!(
            r >= full - 0.005,
            "{precision:?} recall@10 = {r}, f32 = {full}"
        );
    }
}

#[test]
fn a_damaged_graph_file_is_rebuilt_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::generate();
    let data = numbered(2_000, 31);
    let queries = dataset(20, 32);
    {
        let store = LocalVectorStore::open(dir.path(), DIM, config(1000)).unwrap();
        store
            .replace_document(&tenant, "all", items(&data))
            .unwrap();
        store.settle();
        store.persist().unwrap();
    }
    let graph = dir
        .path()
        .join("tenants")
        .join(tenant.as_str())
        .join("hnsw")
        .join("graph.bin");
    let mut bytes = std::fs::read(&graph).unwrap();
    // Links pointing far past the last node.
    let n = bytes.len();
    bytes[n / 2..n / 2 + 64].fill(0xff);
    std::fs::write(&graph, &bytes).unwrap();
    let store = LocalVectorStore::open(dir.path(), DIM, config(1000)).unwrap();
    assert_eq!(store.count(&tenant).unwrap(), 2_000);
    store.settle();
    let recall = recall_at_10(&store, &tenant, &data, &queries);
    assert!(recall >= 0.95, "recall@10 = {recall}");
}
