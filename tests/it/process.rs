//! The `ragbox` binary itself: signals, config errors and the CLI.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::helpers::binary::{
    ragbox, run, run_with_input, serve, serve_logged, wait_exit, write_config,
};
use crate::helpers::server::wait_ready;
use crate::helpers::{ADMIN_TOKEN, eventually};

#[tokio::test]
async fn sigterm_stops_the_server_with_exit_0() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0), "{status:?}");
}

#[test]
fn an_unknown_config_key_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "[log]\nverbosity = \"high\"\n");
    let out = run(&["check"], &config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("log.verbosity"), "{stderr}");

    let config = write_config(dir.path(), "");
    let out = ragbox()
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env("RAGBOX__SERVER__PORTT", "9")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.portt"), "{stderr}");

    let out = ragbox()
        .arg("--config")
        .arg(&config)
        .arg("check")
        .env("RAGBOX__SERVER__BIND", "not-an-address")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.bind"));
}

#[tokio::test]
async fn cli_tenants_and_keys_work_against_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = run(
        &["tenant", "create", "acme", "--name", "Acme Corp"],
        &config,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(
        &["key", "create", "--tenant", "acme", "--name", "cli"],
        &config,
    );
    assert!(out.status.success());
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("rbx_"), "{key}");

    let out = run(&["tenant", "list"], &config);
    assert!(String::from_utf8_lossy(&out.stdout).contains("acme"));
    let out = run(&["tenant", "show", "acme"], &config);
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["name"], "Acme Corp");

    // The server, started afterwards on the same data dir, accepts the CLI's key.
    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let get = || {
        client
            .get(format!("{base}/api/v1/tenant"))
            .bearer_auth(&key)
            .send()
    };
    let r = get().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["slug"], "acme");

    // Revoked from the CLI while the server runs: refused on the next request.
    let out = run(&["key", "list", "--tenant", "acme"], &config);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(!listing.contains(&key), "secrets are never listed");
    let id = listing
        .lines()
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_owned();
    let out = run(&["key", "revoke", "--tenant", "acme", &id], &config);
    assert!(out.status.success());
    assert_eq!(get().await.unwrap().status(), 401);

    // Deleting needs --yes.
    let out = run(&["tenant", "delete", "acme"], &config);
    assert!(!out.status.success());
    let out = run(&["tenant", "delete", "acme", "--yes"], &config);
    assert!(out.status.success());

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}

#[test]
fn check_reports_each_component_and_fails_on_a_broken_database() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let out = run(&["check"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for component in ["config", "admin", "database", "storage"] {
        assert!(stdout.contains(component), "{stdout}");
    }
    std::fs::write(dir.path().join("data/ragbox.sqlite"), b"this is not a database at all, not even close....................................................").unwrap();
    let out = run(&["check"], &config);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL"));
}

#[test]
fn a_generated_admin_token_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[storage]\ndata_dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let out = run(&["check"], &path);
    assert!(out.status.success());
    let token_file = dir.path().join("data/admin.token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_file).unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(token.trim()), "the token is never printed");
}

#[test]
fn help_has_examples_and_version_prints() {
    let out = ragbox().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Examples:"));
    let out = ragbox().arg("--version").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
}

/// Kill -9 while documents are being processed; after a restart every document ends
/// ready exactly once: one set of chunks each, nothing lost, nothing doubled.
#[tokio::test]
async fn a_crash_mid_ingestion_loses_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        "[jobs]\nheartbeat_secs = 1\npoll_interval_ms = 50\nconcurrency = 2\n",
    );
    let out = run(&["tenant", "create", "acme"], &config);
    assert!(out.status.success());
    let key = String::from_utf8(run(&["key", "create", "--tenant", "acme"], &config).stdout)
        .unwrap()
        .trim()
        .to_owned();

    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for d in 0..12 {
        let text = (0..80)
            .map(|p| {
                format!(
                    "Document {d} paragraph {p} explains topic {} in plain words.",
                    (d * 7 + p) % 13
                )
            })
            .collect::<Vec<_>>()
            .join("\n\n");
        let r = client
            .post(format!("{base}/api/v1/documents"))
            .bearer_auth(&key)
            .json(&serde_json::json!({"title": format!("doc {d}"), "text": text}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Wait until work is under way but not finished, then kill the process hard.
    let statuses = |base: String, key: String| async move {
        let list: Value = reqwest::Client::new()
            .get(format!("{base}/api/v1/documents?limit=100"))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["status"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    eventually(Duration::from_secs(30), "work to be under way", || async {
        let s = statuses(base.clone(), key.clone()).await;
        if s.iter().any(|x| x == "ready" || x == "processing") {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    let before = statuses(base.clone(), key.clone()).await;
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        before.iter().any(|s| s != "ready"),
        "killed after everything finished: {before:?}"
    );

    let (mut child, base) = serve(&config);
    wait_ready(&base).await;
    eventually(
        Duration::from_secs(120),
        "every document to be ready",
        || async {
            let s = statuses(base.clone(), key.clone()).await;
            assert!(s.iter().all(|x| x != "failed"), "{s:?}");
            if s.iter().all(|x| x == "ready") {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        },
    )
    .await;

    // Exactly one copy of each chunk, and as many as each document reports.
    let db = rusqlite::Connection::open(dir.path().join("data/ragbox.sqlite")).unwrap();
    for id in &ids {
        let (rows, distinct): (i64, i64) = db
            .query_row(
                "SELECT count(*), count(DISTINCT chunk_index) FROM chunks WHERE document_id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        let reported: i64 = db
            .query_row(
                "SELECT chunk_count FROM documents WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        assert!(rows > 0);
        assert_eq!(rows, distinct, "{id}");
        assert_eq!(rows, reported, "{id}");
    }
    // And search answers from the recovered index without duplicates.
    let r: Value = client
        .post(format!("{base}/api/v1/search"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"query": "Document 3 paragraph 10 explains topic", "mode": "vector", "top_k": 10}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let results = r["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    let mut seen = std::collections::HashSet::new();
    for x in results {
        assert!(
            seen.insert((x["document_id"].to_string(), x["chunk_index"].as_u64())),
            "duplicate {x}"
        );
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}

#[test]
fn a_missing_model_stops_serve_and_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &crate::helpers::models::model_dir().display().to_string(),
        "/nonexistent/minilm",
    );
    std::fs::write(&config, text).unwrap();
    let out = run(&["serve"], &config);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/minilm"), "{stderr}");
    assert!(stderr.contains("install.sh --models-only"), "{stderr}");
}

/// The operator-facing benchmark runs end to end (its figures are not asserted).
#[test]
fn bench_search_runs_on_a_small_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let readme = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let out = run(
        &[
            "bench",
            "search",
            "--file",
            readme,
            "--chunks",
            "250",
            "--queries",
            "3",
        ],
        &config,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for mode in ["vector:", "keyword:", "hybrid:"] {
        assert!(stdout.contains(mode), "{stdout}");
    }
}

#[tokio::test]
async fn ingest_search_and_reindex_go_through_a_running_server() {
    let dir = tempfile::tempdir().unwrap();
    // The CLI finds the server at server.bind, so it needs a real port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    assert!(run(&["tenant", "create", "acme"], &config).status.success());
    let (mut child, base) = serve(&config);
    wait_ready(&base).await;

    let docs = dir.path().join("docs");
    std::fs::create_dir_all(docs.join("nested")).unwrap();
    std::fs::write(
        docs.join("lighthouse.txt"),
        "The lighthouse keeper on Skerry Island lights the lamp at dusk.",
    )
    .unwrap();
    std::fs::write(
        docs.join("nested/bakery.md"),
        "# Bakery\n\nThe bakery on Mill Street sells rye bread every morning.",
    )
    .unwrap();
    let out = run(
        &["ingest", docs.to_str().unwrap(), "--tenant", "acme"],
        &config,
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("running ragbox server"), "{stderr}");
    assert!(stdout.contains("ready 2, failed 0"), "{stdout}");

    // The server did the work: its API lists both documents ready.
    let client = reqwest::Client::new();
    let key = String::from_utf8(run(&["key", "create", "--tenant", "acme"], &config).stdout)
        .unwrap()
        .trim()
        .to_owned();
    let listed: Value = client
        .get(format!("{base}/api/v1/documents?status=ready"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["total"], 2, "{listed}");

    let out = run(
        &[
            "search",
            "--tenant",
            "acme",
            "who lights the lamp at the lighthouse",
        ],
        &config,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = stdout.lines().next().unwrap_or_default();
    assert!(first.contains("lighthouse.txt"), "{stdout}");

    // A chat through the server prints the answer, then its sources.
    let out = run_with_input(
        &["chat", "--tenant", "acme", "--temperature", "0"],
        &config,
        "Who lights the lamp at the lighthouse on Skerry Island?\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("[1] lighthouse.txt"), "{stdout}");

    let out = run(&["reindex", "--tenant", "acme"], &config);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("rebuilt the index of 2 vectors"),
        "{stdout}"
    );

    // The temporary keys of search and chat are revoked; only the test's own is live.
    let keys: Value = client
        .get(format!("{base}/api/v1/admin/tenants/acme/keys"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let live: Vec<&Value> = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["revoked_at"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "{keys}");

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
}

#[test]
fn chat_answers_in_the_terminal_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    assert!(run(&["tenant", "create", "acme"], &config).status.success());
    let out = run_with_input(
        &["chat", "--tenant", "acme", "--temperature", "0"],
        &config,
        "What is the capital of France?\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Paris"), "{stdout}");
    let out = run_with_input(
        &["chat", "--tenant", "acme", "--agent", "nobody"],
        &config,
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no agent named `nobody`"));
}

// Two worker threads: the replay server must answer while the test waits on the CLI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_keys_stay_out_of_logs_and_answers() {
    use crate::helpers::upstream::{ANTHROPIC_KEY, Replay, Script};
    let replay = Replay::start(Script::Answer).await;
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(
        dir.path(),
        &format!(
            "[generation]\nprovider = \"claude\"\n[providers.claude]\nkind = \"anthropic\"\nbase_url = \"{}\"\nmodel = \"m\"\napi_key = \"{ANTHROPIC_KEY}\"\n",
            replay.base
        ),
    );
    let out = run(&["tenant", "create", "acme"], &config);
    assert!(out.status.success());
    let out = run(&["key", "create", "--tenant", "acme"], &config);
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let out = run(&["check"], &config);
    let checked = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(checked.contains("upstream `claude` reachable"), "{checked}");

    let (mut child, base, logged) = serve_logged(&config);
    wait_ready(&base).await;
    // The upstream refuses: a 502 for the client, a warning in the log.
    replay.set(Script::Refuse);
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/chat"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let answer = r.text().await.unwrap();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    let log = logged.after_exit();
    assert!(log.contains("upstream generation failed"), "{log}");
    assert!(log.contains("401"), "{log}");
    for text in [&log, &answer, &checked] {
        assert!(!text.contains(ANTHROPIC_KEY), "the key leaked: {text}");
    }
}
