//! Documents, background processing and search through the real server and model.

use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, error_code};

/// A one-page PDF whose text layer holds `text` (ASCII, no parentheses).
pub fn make_pdf(text: &str) -> Vec<u8> {
    let content = format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET");
    crate::helpers::pdf_of(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_vec(),
        format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()).into_bytes(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>".to_vec(),
    ])
}

#[tokio::test]
async fn every_type_is_processed_and_found() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let cases: [(&str, &str, Vec<u8>, &str); 4] = [
        ("notes.txt", "text/plain", b"Our office parrot is named Captain Feathers and loves sunflower seeds.".to_vec(), "parrot"),
        ("guide.md", "text/markdown", b"# Volcano safety\n\nWhen the volcano erupts, walk calmly to the northern evacuation point.".to_vec(), "volcano"),
        ("page.html", "text/html", b"<html><head><script>var hidden = 'zebra';</script></head><body><p>The submarine dives to four hundred metres beneath the arctic ice.</p></body></html>".to_vec(), "submarine"),
        ("report.pdf", "application/pdf", make_pdf("Quarterly revenue from glacier tourism rose by twelve percent."), "glacier"),
    ];
    let mut ids = Vec::new();
    for (name, mime, bytes, _) in &cases {
        let r = t.upload(name, mime, bytes.clone()).await;
        assert_eq!(r.status(), 202, "{name}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            v["status"], "queued",
            "a new document is queued for a worker: {v}"
        );
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    for (id, (name, mime, bytes, _)) in ids.iter().zip(&cases) {
        let doc = t.wait(id).await;
        assert_eq!(doc["status"], "ready", "{name}: {doc}");
        assert_eq!(doc["media_type"], *mime);
        assert_eq!(doc["bytes"], bytes.len());
        assert_eq!(doc["filename"], *name);
        assert_eq!(doc["metadata"]["source"], "test");
        assert!(doc["chunk_count"].as_u64().unwrap() >= 1);
        assert_eq!(doc["attempts"], 1);
    }
    let queries = [
        "what does the bird eat",
        "what to do during an eruption",
        "how deep does the boat go under the ice",
        "tourism income growth",
    ];
    for (i, q) in queries.iter().enumerate() {
        for mode in ["vector", "hybrid"] {
            let results = t.search(q, mode).await;
            assert_eq!(
                results[0]["document_id"],
                ids[i].as_str(),
                "{mode} `{q}`: {results:?}"
            );
        }
        let keyword = t.search(cases[i].3, "keyword").await;
        assert_eq!(
            keyword[0]["document_id"],
            ids[i].as_str(),
            "keyword {}",
            cases[i].3
        );
        let first = &keyword[0];
        assert!(
            first["text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(cases[i].3)
        );
        assert!(first["end"].as_u64().unwrap() > first["start"].as_u64().unwrap());
    }
    // The HTML's script never reached the index.
    assert!(t.search("zebra", "keyword").await.is_empty());
}

#[tokio::test]
async fn delete_removes_a_document_from_search_at_once() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let keep = t
        .add_text(
            "keep",
            "Penguins huddle together to survive the antarctic winter.",
        )
        .await;
    let gone = t
        .add_text(
            "gone",
            "The lighthouse keeper polishes the great brass lens every evening.",
        )
        .await;
    t.wait(&keep).await;
    t.wait(&gone).await;
    assert_eq!(
        t.search("lighthouse lens", "hybrid").await[0]["document_id"],
        gone.as_str()
    );
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/documents/{gone}")))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    for mode in ["vector", "keyword", "hybrid"] {
        let results = t.search("lighthouse keeper brass lens", mode).await;
        assert!(
            results.iter().all(|r| r["document_id"] != gone.as_str()),
            "{mode}: {results:?}"
        );
    }
    assert_eq!(
        t.get(&format!("/api/v1/documents/{gone}")).await.status(),
        404
    );
    let stored = app.dir.path().join("tenants");
    let leftover = walk(&stored).into_iter().any(|p| p.ends_with(&gone));
    assert!(!leftover, "the stored bytes are gone");
    assert_eq!(
        t.search("penguins winter", "hybrid").await[0]["document_id"],
        keep.as_str()
    );
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test]
async fn tenants_never_see_each_others_documents() {
    let app = TestApp::spawn().await;
    let a = Tenant::new(&app, "alpha").await;
    let b = Tenant::new(&app, "beta").await;
    let secret = a
        .add_text(
            "secret",
            "The launch code for project nightingale is kept in the blue vault.",
        )
        .await;
    a.wait(&secret).await;
    b.wait(
        &b.add_text(
            "other",
            "Beta sells garden furniture and outdoor umbrellas.",
        )
        .await,
    )
    .await;

    let list: Value = b.get("/api/v1/documents").await.json().await.unwrap();
    assert_eq!(list["total"], 1);
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["id"] != secret.as_str())
    );
    assert_eq!(
        error_code(b.get(&format!("/api/v1/documents/{secret}")).await, 404).await,
        "not_found"
    );
    for mode in ["vector", "keyword", "hybrid"] {
        let results = b.search("launch code nightingale vault", mode).await;
        assert!(
            results.iter().all(|r| r["document_id"] != secret.as_str()),
            "{mode}"
        );
    }
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/documents/{secret}")))
        .bearer_auth(&b.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = app
        .client
        .post(app.url(&format!("/api/v1/documents/{secret}/reprocess")))
        .bearer_auth(&b.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // Still there for its owner.
    assert_eq!(
        a.search("nightingale", "keyword").await[0]["document_id"],
        secret.as_str()
    );
}

#[tokio::test]
async fn bad_uploads_get_clear_errors() {
    let app = TestApp::builder()
        .config(|c| c.documents.max_bytes = 2048)
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let code = error_code(
        t.upload("photo.png", "image/png", vec![0x89, b'P', b'N', b'G'])
            .await,
        415,
    )
    .await;
    assert_eq!(code, "unsupported_media_type");
    let code = error_code(
        t.upload("big.txt", "text/plain", vec![b'a'; 4096]).await,
        413,
    )
    .await;
    assert_eq!(code, "payload_too_large");
    let code = error_code(
        t.upload("empty.txt", "text/plain", b"   \n  ".to_vec())
            .await,
        422,
    )
    .await;
    assert_eq!(code, "validation_failed");
    let code = error_code(
        t.upload("bad.txt", "text/plain", vec![0xff, 0xfe, 0xfd, b'x'])
            .await,
        422,
    )
    .await;
    assert_eq!(code, "validation_failed");
    let code = error_code(
        t.upload("fake.pdf", "application/pdf", b"this is not a pdf".to_vec())
            .await,
        422,
    )
    .await;
    assert_eq!(code, "validation_failed");
    // Malformed multipart.
    let r = app
        .client
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&t.key)
        .header("content-type", "multipart/form-data; boundary=XYZ")
        .body("--XYZ\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nno end")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 400).await, "bad_request");
    // Nothing was stored by any of these.
    let list: Value = t.get("/api/v1/documents").await.json().await.unwrap();
    assert_eq!(list["total"], 0);
}

#[tokio::test]
async fn the_same_content_twice_returns_the_existing_document() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let bytes = b"Duplicate detection keeps one copy of each document.".to_vec();
    let first: Value = t
        .upload("a.txt", "text/plain", bytes.clone())
        .await
        .json()
        .await
        .unwrap();
    let r = t.upload("b.txt", "text/plain", bytes).await;
    assert_eq!(r.status(), 200);
    let second: Value = r.json().await.unwrap();
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second["duplicate"], true);
    let list: Value = t.get("/api/v1/documents").await.json().await.unwrap();
    assert_eq!(list["total"], 1);
    // Another tenant may hold the same content.
    let other = Tenant::new(&app, "other").await;
    let r = other
        .upload(
            "a.txt",
            "text/plain",
            b"Duplicate detection keeps one copy of each document.".to_vec(),
        )
        .await;
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn a_corrupt_pdf_fails_after_the_retries_with_a_reason() {
    let app = TestApp::builder()
        .config(|c| {
            c.jobs.max_retries = 2;
            c.jobs.retry_delay_secs = 1;
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let mut corrupt = b"%PDF-1.4\n".to_vec();
    corrupt.extend(std::iter::repeat_n(b'#', 300));
    let r = t.upload("broken.pdf", "application/pdf", corrupt).await;
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let doc = t.wait(&id).await;
    assert_eq!(doc["status"], "failed", "{doc}");
    assert_eq!(doc["attempts"], 3, "first try and two retries: {doc}");
    assert!(doc["last_error"].as_str().unwrap().contains("PDF"), "{doc}");
    assert_eq!(doc["chunk_count"], 0);

    // Reprocess runs it again (and it fails again, the same way).
    let r = app
        .client
        .post(app.url(&format!("/api/v1/documents/{id}/reprocess")))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let doc = t.wait(&id).await;
    assert_eq!(doc["status"], "failed");
}

#[tokio::test]
async fn reprocessing_keeps_one_copy_of_each_chunk() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let text = (0..60)
        .map(|i| format!("Paragraph {i} describes the migration of arctic terns number {i}."))
        .collect::<Vec<_>>()
        .join("\n\n");
    let id = t.add_text("terns", &text).await;
    let first = t.wait(&id).await;
    let chunks = first["chunk_count"].as_u64().unwrap();
    assert!(chunks > 1);
    for _ in 0..2 {
        let r = app
            .client
            .post(app.url(&format!("/api/v1/documents/{id}/reprocess")))
            .bearer_auth(&t.key)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(t.wait(&id).await["chunk_count"], chunks);
    }
    let db = rusqlite::Connection::open(app.dir.path().join("ragbox.sqlite")).unwrap();
    let stored: i64 = db
        .query_row(
            "SELECT count(*) FROM chunks WHERE document_id = ?1",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored as u64, chunks);
    let r = t
        .search("arctic terns migration paragraph 7", "vector")
        .await;
    let mut seen = std::collections::HashSet::new();
    assert!(
        r.iter()
            .all(|x| seen.insert(x["chunk_index"].as_u64().unwrap())),
        "no duplicate chunks: {r:?}"
    );
}

#[tokio::test]
async fn search_validates_its_input() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    for body in [
        json!({"query": ""}),
        json!({"query": "x", "top_k": 0}),
        json!({"query": "x", "top_k": 101}),
    ] {
        let r = app
            .client
            .post(app.url("/api/v1/search"))
            .bearer_auth(&t.key)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        assert!(status == 400 || status == 422, "{body}: {status}");
    }
    let r = app
        .client
        .post(app.url("/api/v1/search"))
        .bearer_auth(&t.key)
        .json(&json!({"query": "x", "mode": "psychic"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(
        t.search("anything at all", "hybrid").await.is_empty(),
        "no documents, no results"
    );
    // A blank query looks for nothing and finds nothing.
    assert!(t.search("   ", "keyword").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_embedding_queue_answers_503_with_retry_after() {
    // One request may wait for the model; the rest are refused at once, not queued.
    let embedder = crate::helpers::tiny_queue_embedder();
    let app = TestApp::builder().embedder(embedder).start().await;
    let t = Tenant::new(&app, "acme").await;
    let long = "the quick brown fox jumps over the lazy dog ".repeat(20);
    let requests = (0..48).map(|i| {
        app.client
            .post(app.url("/api/v1/search"))
            .bearer_auth(&t.key)
            .json(&json!({"query": format!("{i} {long}"), "mode": "vector"}))
            .send()
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut busy = 0;
    for r in answers {
        let r = r.unwrap();
        match r.status().as_u16() {
            200 => {}
            503 => {
                busy += 1;
                assert_eq!(r.headers()["retry-after"], "1");
                assert_eq!(error_code(r, 503).await, "unavailable");
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert!(busy > 0, "48 searches at once never filled a queue of one");
    // Once the burst is over the model answers again.
    assert!(t.search("quick brown fox", "vector").await.is_empty());
}

#[tokio::test]
async fn eval_reports_the_ranks_of_known_answers_per_mode() {
    let app = TestApp::spawn().await;
    let acme = Tenant::new(&app, "acme").await;
    let other = Tenant::new(&app, "other").await;
    let docs = [
        (
            "lighthouse",
            "The lighthouse keeper on Skerry Island lights the lamp at dusk and trims its wick.",
        ),
        (
            "bakery",
            "The bakery on Mill Street sells rye bread and poppy seed rolls every morning.",
        ),
        (
            "ferry",
            "The ferry to the mainland leaves the harbour at seven and returns at noon.",
        ),
    ];
    let mut ids = Vec::new();
    for (title, text) in docs {
        let id = acme.add_text(title, text).await;
        assert_eq!(acme.wait(&id).await["status"], "ready");
        ids.push(id);
    }
    let secret = other
        .add_text("secret", "The vault code is kept by the notary.")
        .await;
    other.wait(&secret).await;

    let golden = json!({"cases": [
        {"question": "who trims the wick of the lamp on Skerry Island", "document": "lighthouse"},
        {"question": "where can I buy rye bread on Mill Street", "document": ids[1]},
        {"question": "when does the ferry leave the harbour", "document": "ferry", "chunk_index": 0},
    ]});
    let path = "/api/v1/admin/tenants/acme/eval";
    let r = app.admin(reqwest::Method::POST, path, Some(golden)).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["cases"], 3);
    let modes: Vec<&str> = report["modes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mode"].as_str().unwrap())
        .collect();
    assert_eq!(modes, ["hybrid", "vector", "keyword"]);
    // Three distinct topics, each question naming its own: every mode ranks each
    // answer first, so every figure is exactly 1.
    for m in report["modes"].as_array().unwrap() {
        for figure in ["hit_at_1", "hit_at_10", "mrr_at_10", "ndcg_at_10"] {
            assert_eq!(m[figure], 1.0, "{figure} in {m}");
        }
        assert!(m["latency_p50_ms"].as_f64().unwrap() > 0.0);
        assert!(m["latency_p99_ms"].as_f64().unwrap() >= m["latency_p50_ms"].as_f64().unwrap());
    }

    // A question whose answer is absent from the results lowers the figures by its share.
    let r = app
        .admin(
            reqwest::Method::POST,
            path,
            Some(json!({"modes": ["keyword"], "cases": [
                {"question": "rye bread Mill Street", "document": "bakery"},
                {"question": "rye bread Mill Street", "document": "ferry"},
            ]})),
        )
        .await;
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["modes"][0]["hit_at_1"], 0.5, "{report}");
    assert_eq!(report["modes"][0]["hit_at_10"], 0.5, "{report}");

    // Another tenant's document is no answer here; an empty set is refused.
    let r = app
        .admin(
            reqwest::Method::POST,
            path,
            Some(json!({"cases": [{"question": "vault code", "document": "secret"}]})),
        )
        .await;
    assert_eq!(error_code(r, 404).await, "not_found");
    let r = app
        .admin(reqwest::Method::POST, path, Some(json!({"cases": []})))
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");
    // And it is the operator's route: a tenant key does not open it.
    let r = acme
        .post(
            path,
            &json!({"cases": [{"question": "q", "document": "ferry"}]}),
        )
        .await;
    assert_eq!(r.status(), 401);
}
