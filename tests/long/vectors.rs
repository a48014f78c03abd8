//! The local vector store's HNSW graph against exact search, at a size where the
//! graph is built in the background while vectors keep coming.

use ragbox::domain::TenantId;
use ragbox::store::vectors::{IndexMaintenance, LocalVectorStore, VectorStore};

use crate::helpers::vectors::{
    DIM, config, dataset, numbered, recall_at_10, store_documents, top_ids,
};
use crate::one_at_a_time;

#[test]
fn hnsw_recall_at_10_is_at_least_0_95_on_20k_vectors() {
    let _alone = one_at_a_time().blocking_lock();
    let dir = tempfile::tempdir().unwrap();
    let store = LocalVectorStore::open(dir.path(), DIM, config(1000)).unwrap();
    let tenant = TenantId::generate();
    let data = numbered(20_000, 7);
    // Many documents of 100 chunks each.
    store_documents(&store, &tenant, &data, 100, "doc-");
    // The first graph was started at 1,000 vectors, on its own thread, while the rest
    // kept coming: they must all have been merged into it.
    store.settle();
    assert_eq!(store.count(&tenant).unwrap(), 20_000);
    let queries = dataset(200, 99);
    let recall = recall_at_10(&store, &tenant, &data, &queries);
    assert!(recall >= 0.95, "recall@10 = {recall}");

    // Deleted documents never come back, before and after the rebuild they trigger.
    for doc in 0..50 {
        store
            .delete_document(&tenant, &format!("doc-{doc}"))
            .unwrap();
    }
    assert_eq!(store.count(&tenant).unwrap(), 15_000);
    let check = |when: &str| {
        for q in queries.iter().take(50) {
            let hits = store.search(&tenant, q, 10, None).unwrap();
            assert_eq!(hits.len(), 10, "{when}");
            assert!(
                hits.iter().all(|h| h.id > 5_000),
                "a deleted vector was returned {when}"
            );
        }
    };
    check("while the graph is rebuilt");
    store.settle();
    check("after the rebuild");
    assert_eq!(store.count(&tenant).unwrap(), 15_000);
    // Against exact search over what is left, the rebuilt graph still finds them.
    let left: Vec<(u64, Vec<f32>)> = data.into_iter().filter(|(id, _)| *id > 5_000).collect();
    let recall = recall_at_10(&store, &tenant, &left, &queries);
    assert!(recall >= 0.95, "recall@10 after deletes = {recall}");

    // Saved at shutdown and read back: the same graph, the same recall.
    store.persist().unwrap();
    let before = top_ids(&store, &tenant, &queries[..50]);
    drop(store);
    let store = LocalVectorStore::open(dir.path(), DIM, config(1000)).unwrap();
    assert_eq!(
        top_ids(&store, &tenant, &queries[..50]),
        before,
        "the reloaded graph answers as the saved one"
    );
    let recall = recall_at_10(&store, &tenant, &left, &queries);
    assert!(recall >= 0.95, "recall@10 after a reload = {recall}");
}
