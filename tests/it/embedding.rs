//! The embedder against sentence-transformers' own vectors, and its queue.

use serde_json::Value;

use crate::helpers::{int8_embedder, shared_embedder};

/// The texts of `tests/fixtures/embedding_parity.json` and sentence-transformers'
/// vectors of them (made by `scripts/make_embedding_fixture.py`).
fn parity_fixture() -> Vec<(String, Vec<f32>)> {
    let fixture: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/embedding_parity.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let items = fixture["items"].as_array().unwrap();
    assert!(items.len() >= 20);
    items
        .iter()
        .map(|item| {
            let vector = item["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            (item["text"].as_str().unwrap().to_owned(), vector)
        })
        .collect()
}

/// Each of our vectors must have cosine >= 0.999 with sentence-transformers' own.
#[tokio::test]
async fn embeddings_match_sentence_transformers() {
    let fixture = parity_fixture();
    let texts: Vec<String> = fixture.iter().map(|(t, _)| t.clone()).collect();
    let ours = shared_embedder()
        .embed_waiting(texts.clone())
        .await
        .unwrap();
    for ((text, reference), v) in fixture.iter().zip(&ours) {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
        let cos = ragbox::ml::embedder::cosine(v, reference);
        assert!(cos >= 0.999, "cosine {cos} for {text:?}");
    }
    // One at a time gives the same vectors as in a batch (padding does not leak in).
    for (text, batched) in texts.iter().zip(&ours).take(5) {
        let single = shared_embedder()
            .embed_waiting(vec![text.clone()])
            .await
            .unwrap();
        let cos = ragbox::ml::embedder::cosine(&single[0], batched);
        assert!(cos > 0.9999, "{cos} for {text:?}");
    }
}

/// The int8 path (`embedding.precision = "int8"`) keeps every vector within cosine
/// 0.99 of sentence-transformers' f32 one, and really is another arithmetic: its
/// vectors are not the f32 path's.
#[tokio::test]
async fn int8_embeddings_stay_within_cosine_0_99_of_f32() {
    let fixture = parity_fixture();
    let texts: Vec<String> = fixture.iter().map(|(t, _)| t.clone()).collect();
    let int8 = int8_embedder().embed_waiting(texts.clone()).await.unwrap();
    let f32s = shared_embedder().embed_waiting(texts).await.unwrap();
    let mut least_to_f32 = 1.0f32;
    for (((text, reference), v), f) in fixture.iter().zip(&int8).zip(&f32s) {
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "L2-normalised: {norm}");
        let cos = ragbox::ml::embedder::cosine(v, reference);
        assert!(cos >= 0.99, "int8 cosine {cos} for {text:?}");
        least_to_f32 = least_to_f32.min(ragbox::ml::embedder::cosine(v, f));
    }
    assert!(
        least_to_f32 < 0.9999,
        "int8 vectors equal the f32 ones ({least_to_f32}): the int8 layers did not run"
    );
}

/// Queries go ahead of ingestion batches: a query sent after four large batches are
/// waiting is answered before the last of them.
#[tokio::test]
async fn a_query_goes_ahead_of_waiting_ingestion_batches() {
    let embedder = shared_embedder();
    let done = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (queued, mut all_queued) = tokio::sync::mpsc::unbounded_channel();
    let mut bulk = Vec::new();
    for b in 0..4 {
        let (e, done, queued) = (embedder.clone(), done.clone(), queued.clone());
        let texts: Vec<String> = (0..256)
            .map(|i| format!("batch {b} passage {i}: ingestion text that takes the model a while"))
            .collect();
        bulk.push(tokio::spawn(async move {
            let mut batch = std::pin::pin!(e.embed_waiting(texts));
            // The first poll puts the batch in the queue (four fit, unless batches of
            // other tests fill it: then the query goes first all the more).
            assert!(futures_util::poll!(batch.as_mut()).is_pending());
            queued.send(b).unwrap();
            batch.await.unwrap();
            done.lock().unwrap().push(format!("bulk {b}"));
        }));
    }
    // Ask once every batch waits in the queue.
    for _ in 0..4 {
        all_queued.recv().await.unwrap();
    }
    embedder.embed(vec!["a short query".into()]).await.unwrap();
    done.lock().unwrap().push("query".into());
    for b in bulk {
        b.await.unwrap();
    }
    let order = done.lock().unwrap().clone();
    let query_at = order.iter().position(|o| o == "query").unwrap();
    assert!(
        query_at < order.len() - 1,
        "the query waited for every batch: {order:?}"
    );
}
