//! `ragbox chat`: an interactive chat in the terminal. Each line typed is a question;
//! the answer prints as it is generated, then its sources. With no server running it
//! loads the models itself; when a `ragbox serve` holds the data dir it talks to the
//! server's `/api/v1/chat/stream` with a read-only key that lives for the session.

use std::io::{BufRead, Write};
use std::process::ExitCode;

use futures_util::StreamExt;

use crate::domain::{Event, Message, Role, TenantRef};
use crate::services::chat::{self, ChatRequest, Overrides};
use crate::services::{Core, Knowledge, agents, keys, tenants};
use crate::startup;

/// `ragbox chat`.
#[derive(Debug, clap::Args)]
pub struct ChatArgs {
    /// Tenant id or slug.
    #[arg(long)]
    pub tenant: String,
    /// Answer as this agent (by name).
    #[arg(long)]
    pub agent: Option<String>,
    /// Sampling temperature (0 = greedy).
    #[arg(long)]
    pub temperature: Option<f64>,
}

enum Backend {
    Local {
        k: Box<Knowledge>,
        generator: crate::ml::Generator,
        upstreams: crate::llm::Upstreams,
    },
    Served {
        url: String,
        key: String,
        key_id: String,
    },
}

/// One printed source.
struct Cited {
    n: u64,
    title: String,
    chunk_index: u64,
}

/// `ragbox chat`.
pub async fn chat(core: Core, args: ChatArgs) -> anyhow::Result<ExitCode> {
    let tenant = tenants::get(&core, &TenantRef::parse(&args.tenant)?).await?;
    let agent = match &args.agent {
        None => None,
        Some(name) => Some(
            agents::list(&core, &tenant.id)
                .await?
                .into_iter()
                .find(|a| &a.name == name)
                .ok_or_else(|| {
                    anyhow::anyhow!("tenant {} has no agent named `{name}`", tenant.slug)
                })?,
        ),
    };
    let backend = match startup::open_vectors(&core.config).await? {
        Some(vectors) => {
            eprintln!("loading the models…");
            let generator = startup::load_generator(&core.config).await?;
            let k = startup::assemble_knowledge(core.clone(), None, vectors).await?;
            Backend::Local {
                k: Box::new(k),
                generator,
                upstreams: crate::llm::Upstreams::from_config(&core.config)?,
            }
        }
        None => {
            let created = super::knowledge::temporary_read_key(
                &core,
                &tenant.id,
                "chat",
                chrono::Duration::hours(12),
            )
            .await?;
            Backend::Served {
                url: format!(
                    "{}/api/v1/chat/stream",
                    super::knowledge::server_url(&core.config)
                ),
                key: created.secret,
                key_id: created.key.id,
            }
        }
    };
    eprintln!(
        "chatting with {} — one question per line, Ctrl-D to end",
        tenant.slug
    );
    let mut history: Vec<Message> = Vec::new();
    let stdin = std::io::stdin();
    let mut outcome = Ok(());
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 {
            break;
        }
        let question = line.trim();
        if question.is_empty() {
            continue;
        }
        history.push(Message::new(Role::User, question));
        let answer = match &backend {
            Backend::Local {
                k,
                generator,
                upstreams,
            } => {
                let models = (generator, upstreams);
                local_turn(k, models, &tenant, agent.as_ref(), &args, &history).await
            }
            Backend::Served { url, key, .. } => {
                served_turn(url, key, agent.as_ref(), &args, &history).await
            }
        };
        match answer {
            Ok((text, sources)) => {
                println!();
                for s in &sources {
                    println!("  [{}] {} (chunk {})", s.n, s.title, s.chunk_index);
                }
                history.push(Message::new(Role::Assistant, text));
            }
            Err(e) => {
                eprintln!("\nerror: {e:#}");
                history.pop();
                outcome = Err(e);
            }
        }
    }
    if let Backend::Served { key_id, .. } = &backend {
        let _ = keys::revoke(&core, &TenantRef::Id(tenant.id.clone()), key_id).await;
    }
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn local_turn(
    k: &Knowledge,
    (generator, upstreams): (&crate::ml::Generator, &crate::llm::Upstreams),
    tenant: &crate::store::tenants::Tenant,
    agent: Option<&crate::store::agents::Agent>,
    args: &ChatArgs,
    history: &[Message],
) -> anyhow::Result<(String, Vec<Cited>)> {
    let overrides = Overrides {
        temperature: args.temperature,
        ..Overrides::default()
    };
    let request = ChatRequest::from_settings(
        history.to_vec(),
        agent.map(|a| &a.settings),
        &tenant.system_prompt,
        overrides,
    );
    let prepared = chat::prepare(k, generator, upstreams, &tenant.id, request).await?;
    let mut rx = chat::start(generator, &prepared).await?;
    let mut text = String::new();
    while let Some(event) = rx.recv().await {
        match event? {
            Event::Text(t) => {
                print!("{t}");
                let _ = std::io::stdout().flush();
                text.push_str(&t);
            }
            Event::Done(_) => break,
        }
    }
    let cited = prepared
        .sources
        .unwrap_or_default()
        .into_iter()
        .map(|s| Cited {
            n: s.n as u64,
            title: s.title,
            chunk_index: u64::from(s.chunk_index),
        })
        .collect();
    Ok((text, cited))
}

async fn served_turn(
    url: &str,
    key: &str,
    agent: Option<&crate::store::agents::Agent>,
    args: &ChatArgs,
    history: &[Message],
) -> anyhow::Result<(String, Vec<Cited>)> {
    let mut body = serde_json::json!({ "messages": history });
    if let Some(a) = agent {
        body["agent_id"] = a.id.clone().into();
    }
    if let Some(t) = args.temperature {
        body["temperature"] = t.into();
    }
    let answer = reqwest::Client::new()
        .post(url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the data dir is in use, but {url} failed: {e}"))?;
    let mut stream = super::knowledge::succeeded(answer).await?.bytes_stream();
    let mut parser = crate::llm::sse::SseParser::default();
    let mut text = String::new();
    let mut cited = Vec::new();
    while let Some(chunk) = stream.next().await {
        for sse in parser.push(&chunk?).map_err(|e| anyhow::anyhow!(e))? {
            let data = sse.data.trim();
            if data == "[DONE]" {
                return Ok((text, cited));
            }
            if data.is_empty() {
                continue;
            }
            let event: serde_json::Value = serde_json::from_str(data)?;
            if let Some(t) = event["text"].as_str() {
                print!("{t}");
                let _ = std::io::stdout().flush();
                text.push_str(t);
            } else if let Some(list) = event["sources"].as_array() {
                cited = list
                    .iter()
                    .map(|s| Cited {
                        n: s["n"].as_u64().unwrap_or(0),
                        title: s["title"].as_str().unwrap_or_default().to_owned(),
                        chunk_index: s["chunk_index"].as_u64().unwrap_or(0),
                    })
                    .collect();
            } else if event["error"].is_object() {
                anyhow::bail!("the server failed mid-answer: {}", event["error"]);
            }
        }
    }
    Ok((text, cited))
}
