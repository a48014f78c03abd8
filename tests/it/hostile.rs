//! A hostile tenant: documents that attack the parsers, bodies and connections that
//! attack the HTTP edge, and one tenant's traffic that would crowd out another's.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, error_code, eventually, pdf_of};

fn stream(dict: &str, data: &[u8]) -> Vec<u8> {
    let mut out = format!("<< {dict} /Length {} >>\nstream\n", data.len()).into_bytes();
    out.extend(data);
    out.extend(b"\nendstream");
    out
}

/// A page that draws a form XObject which draws itself: unbounded recursion.
pub fn self_drawing_pdf() -> Vec<u8> {
    pdf_of(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /X 4 0 R >> >> /Contents 5 0 R >>".to_vec(),
        stream(
            "/Type /XObject /Subtype /Form /BBox [0 0 10 10] /Resources << /XObject << /X 4 0 R >> >>",
            b"/X Do",
        ),
        stream("", b"/X Do"),
    ])
}

/// A page whose parent is itself: inherited attributes are looked up forever.
pub fn page_cycle_pdf() -> Vec<u8> {
    pdf_of(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 3 0 R /Contents 4 0 R >>".to_vec(),
        stream("", b"BT /F1 12 Tf 72 720 Td (cycle) Tj ET"),
    ])
}

/// A page whose content stream inflates from about a megabyte to `inflated` bytes.
fn flate_bomb_pdf(inflated: usize) -> Vec<u8> {
    use flate2::Compression;
    use flate2::write::ZlibEncoder;
    let mut z = ZlibEncoder::new(Vec::new(), Compression::best());
    let zeros = vec![b' '; 1 << 20];
    for _ in 0..inflated / zeros.len() {
        z.write_all(&zeros).unwrap();
    }
    let packed = z.finish().unwrap();
    pdf_of(&[
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << >> /Contents 4 0 R >>"
            .to_vec(),
        stream("/Filter /FlateDecode", &packed),
    ])
}

/// Waits for a document to finish, checking at each look that `/health/live` still
/// answers; panics if the server stops answering.
async fn wait_alive(t: &Tenant<'_>, id: &str) -> Value {
    let what = format!("document {id} to finish");
    eventually(Duration::from_secs(120), &what, || async {
        let live = t.app.client.get(t.app.url("/health/live")).send().await;
        assert_eq!(
            live.map(|r| r.status().as_u16()).ok(),
            Some(200),
            "the server stopped answering"
        );
        let v: Value = t
            .get(&format!("/api/v1/documents/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "ready" || v["status"] == "failed" {
            Ok(v)
        } else {
            Err(v)
        }
    })
    .await
}

fn id_of(v: &Value) -> String {
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn hostile_documents_fail_alone_and_a_normal_one_beside_them_is_ready() {
    let app = TestApp::builder()
        .config(|c| {
            c.extraction.cpu_secs = 2;
            c.extraction.timeout_secs = 6;
            c.extraction.memory_mb = 512;
            c.jobs.max_retries = 0;
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let mut hostile = Vec::new();
    for (name, bytes) in [
        ("recursion.pdf", self_drawing_pdf()),
        ("cycle.pdf", page_cycle_pdf()),
        ("bomb.pdf", flate_bomb_pdf(1 << 30)),
    ] {
        let r = t.upload(name, "application/pdf", bytes).await;
        assert_eq!(r.status(), 202, "{name} is accepted: the job decides");
        hostile.push((name, id_of(&r.json().await.unwrap())));
    }
    let normal = t
        .add_text(
            "normal",
            "Ordinary documents still become searchable beside hostile ones.",
        )
        .await;

    // Deep nesting is refused at upload, without parsing.
    let deep = format!(
        "{}x{}",
        "<blockquote>".repeat(5000),
        "</blockquote>".repeat(5000)
    );
    let r = t.upload("deep.html", "text/html", deep.into_bytes()).await;
    assert_eq!(error_code(r, 422).await, "validation_failed");

    assert_eq!(wait_alive(&t, &normal).await["status"], "ready");
    for (name, id) in hostile {
        let v = wait_alive(&t, &id).await;
        assert_eq!(v["status"], "failed", "{name}: {v}");
        let reason = v["last_error"].as_str().unwrap_or_default();
        assert!(!reason.is_empty(), "{name} failed without a reason");
        println!("{name}: {reason}");
    }
    let found = t.search("hostile ones searchable", "keyword").await;
    assert_eq!(found.len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn extraction_limits_and_reasons_are_the_operators_to_read() {
    let app = TestApp::builder()
        .config(|c| {
            c.extraction.max_text_ratio = 1;
            c.extraction.max_text_bytes = 70_000;
            c.jobs.max_retries = 0;
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    // A text of 100 kB makes more text than the absolute cap allows.
    let big = "word ".repeat(20_000);
    let id = t.add_text("big", &big).await;
    let v = t.wait(&id).await;
    assert_eq!(v["status"], "failed");
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains("larger than the limit"),
        "{v}"
    );
    // A PDF that recurses forever fails with a reason naming the crash.
    let r = t
        .upload("recursion.pdf", "application/pdf", self_drawing_pdf())
        .await;
    let v = t.wait(&id_of(&r.json().await.unwrap())).await;
    assert_eq!(v["status"], "failed");
    assert!(
        v["last_error"]
            .as_str()
            .unwrap()
            .contains("could not be extracted"),
        "{v}"
    );
}

/// Sends raw bytes and reads until the server closes or `limit` passes.
fn raw_exchange(addr: &str, request: &[u8], limit: Duration) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test]
async fn the_http_edge_counts_every_body_and_drops_slow_clients() {
    let app = TestApp::builder()
        .config(|c| {
            c.server.max_body_bytes = 1 << 20;
            c.server.header_read_timeout_secs = 1;
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let oversized = json!({"query": "x".repeat(2 << 20)}).to_string();

    // HTTP/2 with prior knowledge: announced and streamed bodies alike.
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let r = h2
        .post(app.url("/api/v1/search"))
        .bearer_auth(&t.key)
        .header("content-type", "application/json")
        .body(oversized.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    // Streamed without a length: over HTTP/2, and over HTTP/1.1 with chunked encoding.
    for client in [&h2, &app.client] {
        let pieces: Vec<Result<Vec<u8>, std::io::Error>> = oversized
            .as_bytes()
            .chunks(64 * 1024)
            .map(|c| Ok(c.to_vec()))
            .collect();
        let r = client
            .post(app.url("/api/v1/search"))
            .bearer_auth(&t.key)
            .header("content-type", "application/json")
            .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
                pieces,
            )))
            .send()
            .await
            .unwrap();
        assert_eq!(error_code(r, 413).await, "payload_too_large");
    }
    // A huge multipart upload, streamed without a length, is cut off at the limit too.
    let part = reqwest::multipart::Part::stream(reqwest::Body::wrap_stream(
        futures_util::stream::iter((0..64).map(|_| Ok::<_, std::io::Error>(vec![b'a'; 64 * 1024]))),
    ))
    .file_name("huge.txt")
    .mime_str("text/plain")
    .unwrap();
    let r = app
        .client
        .post(app.url("/api/v1/documents/upload"))
        .bearer_auth(&t.key)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(r, 413).await, "payload_too_large");
    // A body within the limit still works over HTTP/2.
    let r = h2
        .post(app.url("/api/v1/search"))
        .bearer_auth(&t.key)
        .json(&json!({"query": "anything", "mode": "keyword"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Without a credential, a body is refused before a byte of it is sent.
    let addr2 = addr.clone();
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &addr2,
            b"POST /api/v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    let addr2 = addr.clone();
    let answer = tokio::task::spawn_blocking(move || {
        raw_exchange(
            &addr2,
            b"POST /api/v1/search HTTP/1.1\r\nHost: x\r\nContent-Length: 40000000\r\n\r\n",
            Duration::from_secs(20),
        )
    })
    .await
    .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 413") || answer.starts_with("HTTP/1.1 401"),
        "{answer}"
    );

    // A client that trickles its headers is disconnected before it finishes them.
    let addr2 = addr.clone();
    let (sent, answered) = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr2).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        let request = b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let mut sent = 0;
        let mut answer = Vec::new();
        for byte in request {
            if s.write_all(&[*byte]).is_err() {
                break;
            }
            sent += 1;
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    answer.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => break,
            }
            // The behaviour under test: a client that sends one byte at a time.
            std::thread::sleep(Duration::from_millis(150));
        }
        (sent, String::from_utf8_lossy(&answer).into_owned())
    })
    .await
    .unwrap();
    assert!(sent < 90, "the server waited for all {sent} slow bytes");
    assert!(!answered.contains(" 200 "), "{answered}");

    // Methods outside the fixed set share one metrics series.
    for method in ["BREW", "WHEN", "FOO"] {
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        app.client
            .request(m, app.url("/health"))
            .send()
            .await
            .unwrap();
    }
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("method=\"OTHER\""), "no OTHER series");
    assert!(!metrics.contains("BREW") && !metrics.contains("FOO"));
}

#[tokio::test]
async fn request_fields_have_limits_checked_before_work() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let many: Vec<String> = (0..101).map(|_| uuid::Uuid::new_v4().to_string()).collect();
    let r = t
        .post(
            "/api/v1/search",
            &json!({"query": "x", "document_ids": many}),
        )
        .await;
    assert_eq!(r.status().as_u16() / 100, 4);
    let r = t
        .post(
            "/api/v1/search",
            &json!({"query": "x", "document_ids": ["not-an-id"]}),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");
    let r = t
        .post(
            "/api/v1/chat",
            &json!({"messages": [{"role": "user", "content": "hi"}], "stop": ["x".repeat(65)]}),
        )
        .await;
    assert_eq!(error_code(r, 400).await, "bad_request");
    // A conversation far beyond the context is cut by its bytes before any tokenizing,
    // then answered.
    let huge = "word ".repeat(200_000);
    let r = t
        .post(
            "/api/v1/chat",
            &json!({"messages": [{"role": "user", "content": huge}], "max_tokens": 4,
                    "retrieval": {"enabled": false}}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.unwrap();
    assert!(answer["usage"]["prompt_tokens"].as_u64().unwrap() < 2048);
    let r = t
        .post(
            "/api/v1/documents",
            &json!({"text": "t", "metadata": {"blob": "x".repeat(20_000)}}),
        )
        .await;
    assert_eq!(error_code(r, 422).await, "validation_failed");
    let r = app
        .admin(
            Method::PATCH,
            "/api/v1/admin/tenants/acme",
            Some(json!({"settings": {"blob": "x".repeat(20_000)}})),
        )
        .await;
    assert_eq!(error_code(r, 422).await, "validation_failed");
    let r = t
        .upload(
            &format!("{}.txt", "n".repeat(300)),
            "text/plain",
            b"text".to_vec(),
        )
        .await;
    assert_eq!(error_code(r, 422).await, "validation_failed");
}

#[tokio::test]
async fn one_tenants_uploads_leave_anothers_keyword_scores_unchanged() {
    let app = TestApp::spawn().await;
    let a = Tenant::new(&app, "alpha").await;
    let b = Tenant::new(&app, "beta").await;
    let id = a
        .add_text(
            "zebras",
            "Zebras graze on the savanna. A zebra has stripes.",
        )
        .await;
    a.wait(&id).await;
    let score = |r: &[Value]| r[0]["score"].as_f64().unwrap();
    let before = a.search("zebra stripes", "keyword").await;
    assert_eq!(before.len(), 1);
    for i in 0..8 {
        let id = b
            .add_text(
                &format!("b{i}"),
                &format!("Zebra zebra stripes, note {i}: zebra stripes everywhere, zebra."),
            )
            .await;
        b.wait(&id).await;
    }
    let after = a.search("zebra stripes", "keyword").await;
    assert_eq!(after.len(), 1);
    assert_eq!(
        score(&before),
        score(&after),
        "B's documents moved A's score"
    );
    assert_eq!(b.search("zebra stripes", "keyword").await.len(), 5);
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_while_another_is_served() {
    let app = TestApp::spawn().await;
    let a = Tenant::new(&app, "alpha").await;
    let b = Tenant::new(&app, "beta").await;
    let r = app
        .admin(
            Method::PUT,
            "/api/v1/admin/tenants/alpha/limits",
            Some(json!({"requests_per_minute": 3})),
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["effective"]["requests_per_minute"], 3);
    for left in [2, 1, 0] {
        let r = a.get("/api/v1/tenant").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit"], "3");
        assert_eq!(
            r.headers()["x-ratelimit-remaining"],
            left.to_string().as_str()
        );
        assert!(r.headers().contains_key("x-ratelimit-reset"));
    }
    let r = a.get("/api/v1/tenant").await;
    assert_eq!(r.status(), 429);
    for h in [
        "retry-after",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert!(r.headers().contains_key(h), "429 without {h}");
    }
    assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(error_code(r, 429).await, "rate_limited");
    // The other tenant is not held back.
    for _ in 0..10 {
        assert_eq!(b.get("/api/v1/tenant").await.status(), 200);
    }
    // Time refills the bucket: 3 a minute is one every 20 s.
    app.clock.advance(chrono::Duration::seconds(21));
    assert_eq!(a.get("/api/v1/tenant").await.status(), 200);
    assert_eq!(a.get("/api/v1/tenant").await.status(), 429);
    // Lifting the limit takes effect at once.
    let r = app
        .admin(
            Method::PUT,
            "/api/v1/admin/tenants/alpha/limits",
            Some(json!({"requests_per_minute": 0})),
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(a.get("/api/v1/tenant").await.status(), 200);
}

#[tokio::test]
async fn two_concurrent_reprocess_calls_leave_one_copy_of_each_chunk() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let text = (0..40)
        .map(|i| format!("Paragraph {i} of the reprocessed document mentions quokka number {i}."))
        .collect::<Vec<_>>()
        .join("\n\n");
    let id = t.add_text("quokkas", &text).await;
    let first = t.wait(&id).await;
    let chunks = first["chunk_count"].as_u64().unwrap();
    assert!(chunks > 1);
    for _ in 0..3 {
        let path = format!("/api/v1/documents/{id}/reprocess");
        let empty = json!({});
        let (x, y) = tokio::join!(t.post(&path, &empty), t.post(&path, &empty));
        let mut statuses = [x.status().as_u16(), y.status().as_u16()];
        statuses.sort();
        assert!(
            statuses == [202, 409] || statuses == [202, 202],
            "{statuses:?}"
        );
        assert_eq!(t.wait(&id).await["status"], "ready");
    }
    let r = t
        .post(
            "/api/v1/search",
            &json!({"query": "quokka paragraph", "mode": "vector", "top_k": 100, "document_ids": [id]}),
        )
        .await;
    let found = r.json::<Value>().await.unwrap()["results"]
        .as_array()
        .unwrap()
        .clone();
    let mut indexes: Vec<u64> = found
        .iter()
        .map(|f| f["chunk_index"].as_u64().unwrap())
        .collect();
    indexes.sort();
    indexes.dedup();
    assert_eq!(found.len() as u64, chunks, "one vector per chunk");
    assert_eq!(indexes.len() as u64, chunks, "no chunk twice");
    let keyword = t.search("quokka", "keyword").await;
    let mut seen: Vec<u64> = keyword
        .iter()
        .map(|f| f["chunk_index"].as_u64().unwrap())
        .collect();
    let all = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), all);
}

#[tokio::test]
async fn deleting_a_document_stops_its_extraction() {
    // One document of the tenant at a time: a spinning one would hold its only place
    // for the whole CPU limit unless the delete stops it.
    let app = TestApp::builder()
        .config(|c| {
            c.extraction.cpu_secs = 300;
            c.extraction.timeout_secs = 600;
            c.limits.concurrent_ingestion_jobs = 1;
        })
        .start()
        .await;
    let t = Tenant::new(&app, "acme").await;
    let r = t
        .upload("cycle.pdf", "application/pdf", page_cycle_pdf())
        .await;
    let id = id_of(&r.json().await.unwrap());
    eventually(Duration::from_secs(30), "the document to start", || async {
        let v: Value = t
            .get(&format!("/api/v1/documents/{id}"))
            .await
            .json()
            .await
            .unwrap();
        if v["status"] == "processing" {
            Ok(())
        } else {
            Err(v)
        }
    })
    .await;
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/documents/{id}")))
        .bearer_auth(&t.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // The tenant's one place is free again at once: the next document is processed.
    let next = t
        .add_text(
            "next",
            "The next document does not wait for the deleted one.",
        )
        .await;
    assert_eq!(t.wait(&next).await["status"], "ready");
}
