//! Scaling out with the real Redis: a serving node with no job runners of its own,
//! `ragbox worker` processes that take its document jobs, and what losing a worker or
//! Redis itself does (nothing is lost).

use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::binary::{ServerLog, worker_logged, write_config};
use crate::helpers::redis::{OwnRedis, SHARED_URL, unique_prefix};
use crate::helpers::{Tenant, TestApp, eventually};

/// A serving node that leaves every document to remote workers.
async fn serving_node(redis_url: &str, prefix: &str) -> TestApp {
    let (url, prefix) = (redis_url.to_owned(), prefix.to_owned());
    TestApp::builder()
        .config(move |c| {
            c.redis.url = Some(ragbox::config::Secret::new(url));
            c.redis.prefix = prefix;
            c.jobs.local_workers = 0;
            c.jobs.lease_secs = 30;
        })
        .start()
        .await
}

/// A `ragbox worker` for `app`, with its own config file in `dir`.
fn worker(
    dir: &std::path::Path,
    app: &TestApp,
    redis_url: &str,
    prefix: &str,
) -> (Child, String, ServerLog) {
    std::fs::create_dir_all(dir).unwrap();
    let config = write_config(
        dir,
        &format!(
            "[redis]\nurl = \"{redis_url}\"\nprefix = \"{prefix}\"\n\
             [worker]\nbind = \"127.0.0.1:0\"\nserver_url = \"{}\"\nserver_retry_secs = 60\n",
            app.base
        ),
    );
    worker_logged(&config)
}

/// Uploads `n` small documents, each with a word of its own; returns (id, word).
async fn upload(t: &Tenant<'_>, from: usize, n: usize) -> Vec<(String, String)> {
    let mut docs = Vec::new();
    for i in from..from + n {
        let word = format!("zq{i:04}marker");
        let text = format!(
            "Note {i}. The archive keeps record {word} about shipment number {i} and its route."
        );
        docs.push((t.add_text(&format!("note {i}"), &text).await, word));
    }
    docs
}

async fn statuses(t: &Tenant<'_>) -> Vec<Value> {
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let page: Value = t
            .get(&format!("/api/v1/documents?limit=100&offset={offset}"))
            .await
            .json()
            .await
            .unwrap();
        let items = page["items"].as_array().unwrap().clone();
        offset += items.len();
        let done = items.is_empty();
        all.extend(items);
        if done {
            return all;
        }
    }
}

/// Waits until every one of `n` documents is ready; fails on any failed one. The
/// test's clock stands still, so whenever nothing moved for 10 s it jumps past the
/// lease (30 s), as time would: a document a worker lost comes back then.
async fn all_ready(app: &TestApp, t: &Tenant<'_>, n: usize, within: Duration) {
    let last = std::sync::Mutex::new((0, std::time::Instant::now()));
    eventually(within, "every document to be ready", || async {
        let docs = statuses(t).await;
        if let Some(failed) = docs.iter().find(|d| d["status"] == "failed") {
            panic!("a document failed: {failed}");
        }
        let ready = docs.iter().filter(|d| d["status"] == "ready").count();
        {
            let mut last = last.lock().unwrap();
            if ready != last.0 {
                *last = (ready, std::time::Instant::now());
            } else if last.1.elapsed() > Duration::from_secs(10) {
                app.clock.advance(chrono::Duration::seconds(31));
                last.1 = std::time::Instant::now();
            }
        }
        if docs.len() == n && ready == n {
            Ok(())
        } else {
            Err(format!("{ready} of {n} ready ({} listed)", docs.len()))
        }
    })
    .await;
}

/// Each document's own word finds exactly that document, once: no chunk was stored
/// twice and none was lost.
async fn each_found_once(t: &Tenant<'_>, docs: &[(String, String)]) {
    for (id, word) in docs {
        let hits = t.search(word, "keyword").await;
        let ids: Vec<&str> = hits
            .iter()
            .filter_map(|h| h["document_id"].as_str())
            .collect();
        assert_eq!(ids, vec![id.as_str()], "search for {word}: {hits:?}");
    }
}

async fn health(app: &TestApp) -> (u16, Value) {
    let r = app.client.get(app.url("/health")).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn two_workers_share_the_documents_and_losing_one_loses_nothing() {
    let prefix = unique_prefix();
    let app = serving_node(SHARED_URL, &prefix).await;
    let (status, h) = health(&app).await;
    assert_eq!(status, 200, "{h}");
    assert_eq!(h["checks"]["redis"], true, "{h}");
    let t = Tenant::new(&app, "acme").await;

    let (mut a, a_base, a_log) = worker(&app.dir.path().join("a"), &app, SHARED_URL, &prefix);
    let (mut b, b_base, b_log) = worker(&app.dir.path().join("b"), &app, SHARED_URL, &prefix);
    for base in [&a_base, &b_base] {
        let r = app
            .client
            .get(format!("{base}/health/ready"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let docs = upload(&t, 0, 240).await;

    // Once both have done some of the work, one dies without a word.
    eventually(
        Duration::from_secs(120),
        "both workers to prepare documents",
        || async {
            let (na, nb) = (
                a_log.count("document prepared"),
                b_log.count("document prepared"),
            );
            if na >= 5 && nb >= 5 {
                Ok(())
            } else {
                Err(format!("a {na}, b {nb}"))
            }
        },
    )
    .await;
    a.kill().unwrap();
    a.wait().unwrap();
    // What it held comes back once its lease runs out (the test's clock stands still).
    app.clock.advance(chrono::Duration::seconds(31));

    all_ready(&app, &t, docs.len(), Duration::from_secs(240)).await;
    each_found_once(&t, &docs).await;
    let metrics = app
        .client
        .get(format!("{b_base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "ragbox_jobs_finished_total",
        "ragbox_job_duration_seconds",
        "ragbox_jobs_in_flight",
        "ragbox_jobs_queue_depth",
    ] {
        assert!(metrics.contains(series), "{series} missing from\n{metrics}");
    }
    let served = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(served.contains("ragbox_jobs_queue_depth"), "{served}");
    b.kill().unwrap();
    b.wait().unwrap();
    let _ = a_log.after_exit();
    let _ = b_log.after_exit();
}

#[tokio::test]
async fn redis_stopped_mid_run_loses_no_document() {
    let mut redis = OwnRedis::start().await;
    let prefix = unique_prefix();
    let app = serving_node(&redis.url(), &prefix).await;
    let t = Tenant::new(&app, "acme").await;
    let (mut w, _, log) = worker(&app.dir.path().join("w"), &app, &redis.url(), &prefix);
    let mut docs = upload(&t, 0, 60).await;
    eventually(
        Duration::from_secs(120),
        "some documents to be prepared",
        || async {
            let n = log.count("document prepared");
            if n >= 5 {
                Ok(())
            } else {
                Err(format!("{n} prepared"))
            }
        },
    )
    .await;

    // Redis dies with every job it held; uploads meanwhile are still accepted.
    redis.kill();
    eventually(
        Duration::from_secs(30),
        "/health to report Redis down",
        || async {
            let (status, h) = health(&app).await;
            if status == 503 && h["checks"]["redis"] == false {
                Ok(())
            } else {
                Err(h.to_string())
            }
        },
    )
    .await;
    docs.extend(upload(&t, 60, 10).await);

    // It comes back empty: the serving node queues every waiting document again.
    redis.restart().await;
    // A job the worker had taken when Redis died is dropped with its worker's
    // connection: that document comes back once its lease runs out.
    app.clock.advance(chrono::Duration::seconds(31));
    all_ready(&app, &t, docs.len(), Duration::from_secs(240)).await;
    each_found_once(&t, &docs).await;
    let (status, h) = health(&app).await;
    assert_eq!(status, 200, "{h}");
    w.kill().unwrap();
    w.wait().unwrap();
    let _ = log.after_exit();
}

#[tokio::test]
async fn a_worker_needs_redis_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = crate::helpers::binary::run(&["worker"], &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis.url"), "{err}");

    let config = write_config(dir.path(), "[jobs]\nlocal_workers = 0\n");
    let out = crate::helpers::binary::run(&["serve"], &config);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("jobs.local_workers") && err.contains("redis.url"),
        "{err}"
    );

    // Nothing answers on this port: startup stops and names the key.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(
        dir.path(),
        &format!("[redis]\nurl = \"redis://127.0.0.1:{port}\"\n"),
    );
    let out = crate::helpers::binary::run(&["serve"], &config);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("redis.url"), "{err}");
}
