//! The real binary under stress: fair turns between tenants, deletes cut short by a
//! crash, and the systemd unit it ships with.

use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::binary::{children_of, run, serve, terminate, write_config};
use crate::helpers::eventually;
use crate::helpers::server::wait_ready;
use crate::helpers::tenant::{get_json, wait_document};

fn key_for(config: &std::path::Path, slug: &str) -> String {
    assert!(run(&["tenant", "create", slug], config).status.success());
    String::from_utf8(run(&["key", "create", "--tenant", slug], config).stdout)
        .unwrap()
        .trim()
        .to_owned()
}

async fn add_text(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    title: &str,
    text: &str,
) -> String {
    let r = client
        .post(format!("{base}/api/v1/documents"))
        .bearer_auth(key)
        .json(&json!({"title": title, "text": text}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn time_of(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_tenant_with_a_long_queue_does_not_hold_back_anothers_upload() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[jobs]\nconcurrency = 2\npoll_interval_ms = 50\n",
    );
    let a = key_for(&config, "alpha");
    let b = key_for(&config, "beta");
    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    for i in 0..200 {
        let text =
            format!("Alpha's note {i}: the queue is long and every note is different, number {i}.");
        add_text(&client, &base, &a, &format!("a{i}"), &text).await;
    }
    let arrived = chrono::Utc::now();
    let id = add_text(
        &client,
        &base,
        &b,
        "b",
        "Beta's single upload should not wait for alpha.",
    )
    .await;
    let done = wait_document(&client, &base, &b, &id).await;
    assert_eq!(done["status"], "ready");
    let ready_at = time_of(&done["processed_at"]);
    let list: Value = get_json(&client, format!("{base}/api/v1/documents?limit=1000"), &a).await;
    let before_b = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["processed_at"].is_string())
        .map(|d| time_of(&d["processed_at"]))
        .filter(|t| *t >= arrived && *t <= ready_at)
        .count();
    assert!(
        before_b < 10,
        "{before_b} of alpha's documents finished between beta's upload and its result"
    );
    terminate(&mut child).await;
}

#[tokio::test]
async fn a_delete_cut_short_by_a_crash_leaves_nothing_after_a_restart() {
    use ragbox::domain::TenantId;
    use ragbox::store::vectors::{LocalVectorStore, VectorStore};

    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[jobs]\npoll_interval_ms = 50\n");
    let key = key_for(&config, "acme");
    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let id = add_text(
        &client,
        &base,
        &key,
        "doomed",
        "This document is deleted by a delete that a crash cuts short.",
    )
    .await;
    assert_eq!(
        wait_document(&client, &base, &key, &id).await["status"],
        "ready"
    );
    let tenant: Value = get_json(&client, format!("{base}/api/v1/tenant"), &key).await;
    let tenant = TenantId::parse(tenant["id"].as_str().unwrap()).unwrap();
    terminate(&mut child).await;

    // What a kill -9 right after the delete's first step leaves: the row (with its
    // chunks and keyword entries) is gone; the vectors and the stored file are not.
    let data = dir.path().join("data");
    let db = ragbox::store::Db::open(&data.join("ragbox.sqlite")).unwrap();
    let (t, i) = (tenant.clone(), id.clone());
    assert!(
        db.call_blocking(move |c| ragbox::store::documents::delete(c, &t, &i))
            .unwrap()
    );
    drop(db);
    let file = data
        .join("tenants")
        .join(tenant.as_str())
        .join("documents")
        .join(&id);
    assert!(file.is_file());
    let vectors_of = |tenant: &TenantId| {
        let store = LocalVectorStore::open(&data, 384, Default::default()).unwrap();
        store.documents(tenant).unwrap()
    };
    assert!(vectors_of(&tenant).contains(&id));

    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    terminate(&mut child).await;
    assert!(!file.exists(), "the stored file outlived its row");
    assert!(
        !vectors_of(&tenant).contains(&id),
        "the vectors outlived their row"
    );
}

#[test]
fn the_systemd_unit_is_locked_down() {
    let unit = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/ragbox.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--threshold=20", unit])
        .output()
        .expect("systemd-analyze (Debian's systemd package; .ci/run installs it) is needed");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "exposure above 2.0:\n{report}");
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for ragbox.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("no overall exposure level in the report");
    assert!(level <= 2.0, "exposure {level}");
    // What ragbox itself needs stays allowed: the extraction child lowers its own
    // limits (setrlimit, in @resources) and is a new process (execve).
    let text = std::fs::read_to_string(unit).unwrap();
    assert!(text.contains("SystemCallFilter=@system-service"));
    assert!(!text.contains("~@resources") && !text.contains("~@process"));
}

#[tokio::test]
async fn sigterm_exits_promptly_while_a_hostile_document_spins_and_it_runs_again_later() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[jobs]\npoll_interval_ms = 50\n[extraction]\ncpu_secs = 300\ntimeout_secs = 600\n",
    );
    let key = key_for(&config, "acme");
    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let part = reqwest::multipart::Part::bytes(crate::hostile::page_cycle_pdf())
        .file_name("cycle.pdf")
        .mime_str("application/pdf")
        .unwrap();
    let r = client
        .post(format!("{base}/api/v1/documents/upload"))
        .bearer_auth(&key)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let status = |client: reqwest::Client, base: String, key: String, id: String| async move {
        let v: Value = get_json(&client, format!("{base}/api/v1/documents/{id}"), &key).await;
        v["status"].as_str().unwrap().to_owned()
    };
    eventually(Duration::from_secs(30), "the document to start", || async {
        let now = status(client.clone(), base.clone(), key.clone(), id.clone()).await;
        if now == "processing" {
            Ok(())
        } else {
            Err(now)
        }
    })
    .await;
    let server = child.id();
    eventually(
        Duration::from_secs(30),
        "the extraction child to spin",
        || async {
            let children = children_of(server);
            if children.is_empty() {
                Err("no child process")
            } else {
                Ok(())
            }
        },
    )
    .await;
    // wait_exit gives up (and fails the test) after 10 s; the extraction would spin 300.
    terminate(&mut child).await;

    // The interrupted document is queued again, and processing resumes at the next start.
    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    let now = status(client.clone(), base.clone(), key.clone(), id.clone()).await;
    assert!(now == "queued" || now == "processing", "{now}");
    terminate(&mut child).await;
}
