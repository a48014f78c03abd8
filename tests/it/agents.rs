//! Agents: CRUD, validation, isolation, and chat as an agent.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{Tenant, TestApp, error_code};

async fn call(
    t: &Tenant<'_>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> reqwest::Response {
    let mut req = t
        .app
        .client
        .request(method, t.app.url(path))
        .bearer_auth(&t.key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn agents_are_created_listed_changed_and_deleted() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let r = call(
        &t,
        Method::POST,
        "/api/v1/agents",
        Some(
            json!({"name": "support", "system_prompt": "You answer support questions.",
                    "temperature": 0.2, "retrieval": {"top_k": 3}}),
        ),
    )
    .await;
    assert_eq!(r.status(), 201);
    let agent: Value = r.json().await.unwrap();
    let id = agent["id"].as_str().unwrap().to_owned();
    assert_eq!(agent["provider"], "local");
    assert_eq!(agent["temperature"], 0.2);
    assert_eq!(agent["max_tokens"], 512);
    assert_eq!(
        agent["retrieval"],
        json!({"enabled": true, "top_k": 3, "min_score": null, "document_ids": null})
    );

    let r = call(
        &t,
        Method::POST,
        "/api/v1/agents",
        Some(json!({"name": "support"})),
    )
    .await;
    assert_eq!(error_code(r, 409).await, "conflict");

    let r = call(
        &t,
        Method::PATCH,
        &format!("/api/v1/agents/{id}"),
        Some(json!({"name": "helpdesk", "max_tokens": 64, "retrieval": {"enabled": false}})),
    )
    .await;
    assert_eq!(r.status(), 200);
    let changed: Value = r.json().await.unwrap();
    assert_eq!(changed["name"], "helpdesk");
    assert_eq!(changed["max_tokens"], 64);
    assert_eq!(changed["temperature"], 0.2, "fields not given stay");
    assert_eq!(changed["retrieval"]["enabled"], false);
    assert_eq!(changed["retrieval"]["top_k"], 3);

    let list: Value = call(&t, Method::GET, "/api/v1/agents", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["name"], "helpdesk");

    let r = call(&t, Method::DELETE, &format!("/api/v1/agents/{id}"), None).await;
    assert_eq!(r.status(), 204);
    let r = call(&t, Method::GET, &format!("/api/v1/agents/{id}"), None).await;
    assert_eq!(error_code(r, 404).await, "not_found");
}

#[tokio::test]
async fn bad_agents_are_refused() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    // What the OpenAPI document declares is refused as it parses (400); a provider this
    // server does not configure, by the agent service (422).
    for (body, status) in [
        (json!({"system_prompt": "no name"}), 400),
        (json!({"name": "  "}), 400),
        (json!({"name": "hot", "temperature": 3.0}), 400),
        (json!({"name": "long", "max_tokens": 0}), 400),
        (json!({"name": "wide", "retrieval": {"top_k": 0}}), 400),
        (json!({"name": false}), 400),
        (json!({"name": "far", "provider": "somewhere-else"}), 422),
    ] {
        let r = call(&t, Method::POST, "/api/v1/agents", Some(body.clone())).await;
        assert_eq!(r.status(), status, "{body}");
    }
    let list: Value = call(&t, Method::GET, "/api/v1/agents", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]), "nothing was stored");
}

#[tokio::test]
async fn tenants_never_see_each_others_agents() {
    let app = TestApp::spawn().await;
    let a = Tenant::new(&app, "acme").await;
    let b = Tenant::new(&app, "globex").await;
    let agent: Value = call(
        &a,
        Method::POST,
        "/api/v1/agents",
        Some(json!({"name": "support"})),
    )
    .await
    .json()
    .await
    .unwrap();
    let path = format!("/api/v1/agents/{}", agent["id"].as_str().unwrap());
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"name": "mine now"}))),
        (Method::DELETE, None),
    ] {
        let r = call(&b, method.clone(), &path, body).await;
        assert_eq!(error_code(r, 404).await, "not_found", "{method}");
    }
    let list: Value = call(&b, Method::GET, "/api/v1/agents", None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
    let r = call(
        &b,
        Method::POST,
        "/api/v1/chat",
        Some(json!({"agent_id": agent["id"], "messages": [{"role": "user", "content": "hi"}]})),
    )
    .await;
    assert_eq!(error_code(r, 404).await, "not_found");
    // Still intact for its owner.
    let r = call(&a, Method::GET, &path, None).await;
    assert_eq!(r.status(), 200);
    let name: Value = r.json().await.unwrap();
    assert_eq!(name["name"], "support");
}

#[tokio::test]
async fn a_chat_as_an_agent_uses_its_settings() {
    let app = TestApp::spawn().await;
    let t = Tenant::new(&app, "acme").await;
    let doc = t
        .add_text("Hours", "The Acme shop opens at nine every weekday.")
        .await;
    t.wait(&doc).await;
    let agent: Value = call(
        &t,
        Method::POST,
        "/api/v1/agents",
        Some(json!({"name": "terse", "temperature": 0.0, "max_tokens": 8,
                    "retrieval": {"enabled": false}})),
    )
    .await
    .json()
    .await
    .unwrap();
    let body = json!({"agent_id": agent["id"],
                      "messages": [{"role": "user", "content": "When does the shop open?"}]});
    let first: Value = call(&t, Method::POST, "/api/v1/chat", Some(body.clone()))
        .await
        .json()
        .await
        .unwrap();
    let second: Value = call(&t, Method::POST, "/api/v1/chat", Some(body))
        .await
        .json()
        .await
        .unwrap();
    // The agent's temperature 0 makes it greedy, its max_tokens caps the answer, and
    // its retrieval is off.
    assert_eq!(first["text"], second["text"]);
    assert!(
        first["usage"]["completion_tokens"].as_u64().unwrap() <= 8,
        "{first}"
    );
    assert_eq!(first["sources"], json!([]));
}
