//! The contract as outside clients see it: the official `openai` Python package against
//! `/v1`, and schemathesis against every operation of the OpenAPI document, as a tenant
//! and as the operator. Both run from `.venv-py/` (`scripts/py_venv.sh`, which
//! `scripts/test.sh` runs).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use crate::helpers::{ADMIN_TOKEN, Tenant, TestApp};
use crate::one_at_a_time;

/// schemathesis's checks, all of them but `max_response_time`.
const CHECKS: &str = "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,negative_data_rejection,positive_data_acceptance,missing_required_header,unsupported_method,allow_header_conformance,use_after_free,ensure_resource_availability,ignored_auth,object_level_authorization";

fn venv_bin(name: &str) -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv-py/bin")
        .join(name);
    assert!(
        bin.exists(),
        "{} is missing: run scripts/py_venv.sh first (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Runs a command to its end (at most `limit`), and prints what it printed.
async fn run(mut cmd: tokio::process::Command, limit: Duration) -> Output {
    cmd.kill_on_drop(true);
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .expect("the client ran past its time limit")
        .unwrap();
    println!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    out
}

/// A tenant with a grounded agent `support` and one document it answers from.
async fn grounded_tenant(app: &TestApp) -> (Tenant<'_>, String) {
    let t = Tenant::new(app, "acme").await;
    let doc = t
        .add_text(
            "Kelvara facts",
            "The Zorbulon reactor on the island of Kelvara produces blue steam every \
             Tuesday at noon.",
        )
        .await;
    let filler = t
        .add_text(
            "Office",
            "Office hours are nine to five. The cafeteria serves soup daily.",
        )
        .await;
    t.wait(&doc).await;
    t.wait(&filler).await;
    t.support_agent().await;
    (t, doc)
}

#[tokio::test]
async fn the_official_openai_sdk_works_against_v1() {
    let _alone = one_at_a_time().lock().await;
    let app = TestApp::spawn().await;
    let (t, doc) = grounded_tenant(&app).await;
    let mut cmd = tokio::process::Command::new(venv_bin("python"));
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/openai_sdk.py"
    ))
    .env("RAGBOX_URL", &app.base)
    .env("RAGBOX_KEY", &t.key)
    .env("RAGBOX_AGENT", "support")
    .env("RAGBOX_DOC", &doc);
    let out = run(cmd, Duration::from_secs(600)).await;
    assert!(
        out.status.success(),
        "the openai package found a difference (output above)"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all OpenAI SDK checks passed"));
}

/// Runs schemathesis over the operations `filter` selects, with `token`.
async fn schemathesis(app: &TestApp, token: &str, filter: &[&str], examples: u32) -> Output {
    let mut cmd = tokio::process::Command::new(venv_bin("schemathesis"));
    cmd.arg("run")
        .arg(app.url("/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {token}")])
        // Every check but the response time: speed is measured by benchmarks, never
        // asserted by a test.
        .args(["--checks", CHECKS])
        .args(["--max-examples", &examples.to_string()])
        .args(["--seed", "1"])
        .args(["--phases", "examples,coverage,fuzzing"])
        // One worker, one thread: with two, schemathesis's own data generation once
        // failed here with CPython 3.11's `SystemError: AST constructor recursion depth
        // mismatch`, an interpreter bug reported from threaded programs (CPython issue
        // 106905), and the run counted it as an error of the API.
        .args(["--workers", "1"])
        .args(["--request-timeout", "120"])
        .args(["--suppress-health-check", "all"])
        .arg("--no-color")
        .args(filter)
        // What files of each accepted media type hold (see the hooks' own words).
        .env(
            "PYTHONPATH",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python"),
        )
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .current_dir(app.dir.path());
    // A hang, not a slow host, is what this limit is for: on a 2-vCPU Zen 3 host whose
    // builds ran a third slower than usual, the tenant's run alone passed 900 s.
    run(cmd, Duration::from_secs(1800)).await
}

#[tokio::test]
async fn schemathesis_finds_no_failure_in_the_openapi_document() {
    let _alone = one_at_a_time().lock().await;
    let app = TestApp::builder()
        .config(|c| {
            // Generated answers are short, so that hundreds of them fit the test's time.
            c.generation.context_tokens = 128;
        })
        .start()
        .await;
    let (t, _) = grounded_tenant(&app).await;
    let tenant = schemathesis(
        &app,
        &t.key,
        &["--exclude-path-regex", "^/api/v1/admin"],
        25,
    )
    .await;
    let operator = schemathesis(
        &app,
        ADMIN_TOKEN,
        &["--include-path-regex", "^/api/v1/admin"],
        25,
    )
    .await;
    assert!(
        tenant.status.success(),
        "schemathesis, as a tenant, found failures (output above)"
    );
    assert!(
        operator.status.success(),
        "schemathesis, as the operator, found failures (output above)"
    );
}
