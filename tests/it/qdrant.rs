//! Vectors in Qdrant, through the real server. All but the first test need a Qdrant:
//! they run when `QDRANT_URL` names one that answers (e.g. `docker run -p 6333:6333
//! qdrant/qdrant`, then `QDRANT_URL=http://127.0.0.1:6333 cargo test --test it
//! qdrant`); without one each prints `SKIPPED …` and returns. Each uses a collection of
//! its own and deletes it at the end.

use std::collections::HashMap;
use std::path::Path;

use ragbox::config::{Config, QdrantConfig};
use ragbox::domain::TenantId;
use ragbox::startup::{self, Hooks};
use ragbox::store::vectors::{LocalVectorStore, QdrantVectorStore, VectorStore};
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::server::test_config;
use crate::helpers::tenant::get_json;
use crate::helpers::upstream::dead_url;
use crate::helpers::{Tenant, TestApp, binary};

const PARROT: &str = "Our office parrot is named Captain Feathers and loves sunflower seeds.";
const VOLCANO: &str = "When the volcano erupts, walk calmly to the northern evacuation point.";

/// A collection of the test's own on the Qdrant of `QDRANT_URL`, deleted when dropped.
struct Scratch {
    url: String,
    name: String,
}

/// Says that a test did not run, on the real stderr: the test harness captures
/// `eprintln!`, and a skip must show in a plain `cargo test`.
fn skipped(test: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED qdrant::{test}: {why}");
}

impl Scratch {
    /// `None`, after saying why, when no Qdrant is at hand.
    async fn new(test: &str) -> Option<Self> {
        let Some(url) = std::env::var("QDRANT_URL").ok().filter(|u| !u.is_empty()) else {
            skipped(test, "QDRANT_URL not set");
            return None;
        };
        let url = url.trim_end_matches('/').to_owned();
        match reqwest::get(format!("{url}/collections")).await {
            Ok(r) if r.status().is_success() => {}
            Ok(r) => {
                skipped(test, &format!("QDRANT_URL={url} answers {}", r.status()));
                return None;
            }
            Err(e) => {
                skipped(test, &format!("no Qdrant answers at QDRANT_URL={url}: {e}"));
                return None;
            }
        }
        let name = format!("ragbox_test_{}", ulid::Ulid::generate()).to_lowercase();
        Some(Self { url, name })
    }

    fn config(&self) -> QdrantConfig {
        QdrantConfig {
            url: Some(self.url.clone()),
            collection: self.name.clone(),
            ..QdrantConfig::default()
        }
    }

    /// Points a server's config at this collection.
    fn apply(&self, config: &mut Config) {
        config.qdrant = self.config();
    }

    /// The collection, opened as the server opens it.
    async fn store(&self) -> QdrantVectorStore {
        let config = self.config();
        tokio::task::spawn_blocking(move || QdrantVectorStore::open(&config, 384))
            .await
            .unwrap()
            .unwrap()
    }

    /// How many vectors the tenant has in the collection.
    async fn count(&self, tenant: &TenantId) -> usize {
        let (store, tenant) = (self.store().await, tenant.clone());
        tokio::task::spawn_blocking(move || store.count(&tenant))
            .await
            .unwrap()
            .unwrap()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let url = format!("{}/collections/{}", self.url, self.name);
        // Off the test's runtime: the blocking client runs one of its own.
        let _ =
            std::thread::spawn(move || reqwest::blocking::Client::new().delete(url).send()).join();
    }
}

/// The tenant's id, as its key sees it.
async fn tenant_id(t: &Tenant<'_>) -> TenantId {
    let v = get_json(&t.app.client, t.app.url("/api/v1/tenant"), &t.key).await;
    TenantId::parse(v["id"].as_str().unwrap()).unwrap()
}

/// Adds a text document and waits until it is ready; returns its id and chunk count.
async fn ready_text(t: &Tenant<'_>, title: &str, text: &str) -> (String, usize) {
    let id = t.add_text(title, text).await;
    let doc = t.wait(&id).await;
    assert_eq!(doc["status"], "ready", "{doc}");
    (id, doc["chunk_count"].as_u64().unwrap() as usize)
}

/// The document ids of a vector search, optionally within `documents`.
async fn found(t: &Tenant<'_>, query: &str, documents: Option<&[&str]>) -> Vec<String> {
    let mut body = json!({"query": query, "mode": "vector", "top_k": 5});
    if let Some(d) = documents {
        body["document_ids"] = json!(d);
    }
    let r = t.post("/api/v1/search", &body).await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["document_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_qdrant_that_does_not_answer_stops_startup_naming_qdrant_url() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(&dir);
    config.qdrant.url = Some(dead_url());
    let err = match startup::start(config, Hooks::default()).await {
        Ok(_) => panic!("the server started without its Qdrant"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("qdrant.url"), "{err}");
    assert!(err.contains("unavailable"), "{err}");
}

#[tokio::test]
async fn tenants_find_only_their_own_vectors_in_qdrant() {
    let Some(q) = Scratch::new("tenants_find_only_their_own_vectors_in_qdrant").await else {
        return;
    };
    let app = TestApp::builder().config(|c| q.apply(c)).start().await;
    let a = Tenant::new(&app, "acme").await;
    let b = Tenant::new(&app, "globex").await;
    let (parrot, parrot_chunks) = ready_text(&a, "Parrot", PARROT).await;
    let (volcano, volcano_chunks) = ready_text(&b, "Volcano", VOLCANO).await;

    // Whatever is asked, a tenant finds its own document and never the other's.
    for query in ["what does the bird eat", "what to do during an eruption"] {
        assert_eq!(
            found(&a, query, None).await,
            vec![parrot.clone()],
            "{query}"
        );
        assert_eq!(
            found(&b, query, None).await,
            vec![volcano.clone()],
            "{query}"
        );
    }
    // A document filter narrows within the tenant: naming the other tenant's document
    // finds nothing.
    let bird = "what does the bird eat";
    assert_eq!(
        found(&a, bird, Some(&[&parrot])).await,
        vec![parrot.clone()]
    );
    assert!(found(&a, bird, Some(&[&volcano])).await.is_empty());

    // One point per chunk, under each tenant.
    assert_eq!(q.count(&tenant_id(&a).await).await, parrot_chunks);
    assert_eq!(q.count(&tenant_id(&b).await).await, volcano_chunks);

    let health: Value = app
        .client
        .get(app.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["qdrant"], true, "{health}");
    assert!(health["checks"].get("vectors").is_none(), "{health}");
    app.stop().await;
}

#[tokio::test]
async fn deleting_a_document_or_a_tenant_removes_its_vectors_from_qdrant() {
    let Some(q) =
        Scratch::new("deleting_a_document_or_a_tenant_removes_its_vectors_from_qdrant").await
    else {
        return;
    };
    let app = TestApp::builder().config(|c| q.apply(c)).start().await;
    let t = Tenant::new(&app, "acme").await;
    let tenant = tenant_id(&t).await;
    let (parrot, parrot_chunks) = ready_text(&t, "Parrot", PARROT).await;
    let (volcano, volcano_chunks) = ready_text(&t, "Volcano", VOLCANO).await;
    assert_eq!(q.count(&tenant).await, parrot_chunks + volcano_chunks);

    let r = app
        .client
        .delete(app.url(&format!("/api/v1/documents/{parrot}")))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(q.count(&tenant).await, volcano_chunks);
    assert_eq!(
        found(&t, "what does the bird eat", None).await,
        vec![volcano.clone()]
    );

    let r = app
        .admin(Method::DELETE, "/api/v1/admin/tenants/acme", None)
        .await;
    assert_eq!(r.status(), 204);
    assert_eq!(q.count(&tenant).await, 0);
    app.stop().await;
}

/// Vectors per tenant in the local store of `data_dir` (no server may hold it).
async fn local_counts(data_dir: &Path, tenants: &[TenantId]) -> HashMap<TenantId, usize> {
    let (dir, tenants) = (data_dir.to_path_buf(), tenants.to_vec());
    tokio::task::spawn_blocking(move || {
        let store = LocalVectorStore::open(&dir, 384, Default::default()).unwrap();
        tenants
            .into_iter()
            .map(|t| {
                let n = store.count(&t).unwrap();
                (t, n)
            })
            .collect()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn migrate_vectors_copies_a_local_installation_into_qdrant() {
    let Some(q) = Scratch::new("migrate_vectors_copies_a_local_installation_into_qdrant").await
    else {
        return;
    };
    // A local installation with two tenants.
    let app = TestApp::spawn().await;
    let (a, b) = (
        Tenant::new(&app, "acme").await,
        Tenant::new(&app, "globex").await,
    );
    let (parrot, _) = ready_text(&a, "Parrot", PARROT).await;
    let (volcano, _) = ready_text(&b, "Volcano", VOLCANO).await;
    let ids = [tenant_id(&a).await, tenant_id(&b).await];
    let keys = [a.key.clone(), b.key.clone()];
    drop((a, b));
    let TestApp { dir, running, .. } = app;
    running.unwrap().stop().await.unwrap();
    let before = local_counts(dir.path(), &ids).await;
    assert!(before.values().all(|n| *n > 0), "{before:?}");

    // The CLI copies them into the collection, with the server stopped.
    let config = dir.path().join("migrate.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\ndata_dir = \"{}\"\n[qdrant]\nurl = \"{}\"\ncollection = \"{}\"\n",
            dir.path().display(),
            q.url,
            q.name
        ),
    )
    .unwrap();
    let out = tokio::task::spawn_blocking(move || {
        binary::run(&["migrate-vectors", "--to", "qdrant"], &config)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let total: usize = before.values().sum();
    assert!(
        stdout.contains(&format!(
            "copied {total} vectors of 2 tenants from local to qdrant"
        )),
        "{stdout}"
    );
    for id in &ids {
        assert_eq!(q.count(id).await, before[id], "tenant {id}");
    }

    // A server on the same data dir, now on Qdrant, finds each tenant's document.
    let path = dir.path().to_path_buf();
    let app = TestApp::builder()
        .config(|c| {
            c.storage.data_dir = path;
            q.apply(c);
        })
        .start()
        .await;
    let a = Tenant {
        app: &app,
        key: keys[0].clone(),
    };
    let b = Tenant {
        app: &app,
        key: keys[1].clone(),
    };
    assert_eq!(
        found(&a, "what does the bird eat", None).await,
        vec![parrot]
    );
    assert_eq!(
        found(&b, "what to do during an eruption", None).await,
        vec![volcano]
    );
    app.stop().await;
}
