//! The command line: `serve`, `worker`, `check`, `tenant …`, `key …`, `ingest`, `search`,
//! `reindex`, `migrate-vectors`, `bench …`. Every command calls the same services as the HTTP API.

mod bench;
mod chat;
mod eval;
mod knowledge;
mod migrate;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use poem_openapi::types::ToJSON;

use crate::api::dto::TenantOut;
use crate::clock::SystemClock;
use crate::config::{CliOverrides, Config, LogFormat};
use crate::domain::{Scopes, Slug, TenantRef};
use crate::services::keys::NewKey;
use crate::services::tenants::NewTenant;
use crate::services::{Core, health, keys, tenants};
use crate::startup;

const EXAMPLES: &str = "\
Examples:
  ragbox serve                                   serve with ./config.toml (or /etc/ragbox/config.toml)
  ragbox serve --bind 0.0.0.0:8080 --data-dir /var/lib/ragbox
  ragbox check                                   verify config and every store, then exit
  ragbox worker                                  take document jobs from [redis] for worker.server_url
  ragbox tenant create acme --name \"Acme Corp\"
  ragbox key create --tenant acme --name web --scopes read
  ragbox key revoke --tenant acme KEY_ID
  ragbox ingest ./docs --tenant acme             upload a folder (recursive) and wait for processing
  ragbox search --tenant acme \"refund policy\"
  ragbox migrate-vectors --to qdrant             copy the local vectors into [qdrant] (server stopped)
  ragbox bench embed --file passages.txt         embedding throughput and latency on this machine

Environment: RAGBOX__SECTION__KEY overrides config.toml, e.g. RAGBOX__SERVER__BIND=127.0.0.1:9000";

/// ragbox: a self-hosted, multi-tenant RAG appliance in one binary.
#[derive(Debug, Parser)]
#[command(name = "ragbox", version, about, after_help = EXAMPLES)]
pub struct Cli {
    /// Config file [default: ./config.toml, ~/.config/ragbox/config.toml, /etc/ragbox/config.toml].
    #[arg(long, global = true, env = "RAGBOX_CONFIG")]
    pub config: Option<PathBuf>,
    /// Data directory (overrides storage.data_dir).
    #[arg(long, global = true)]
    pub data_dir: Option<PathBuf>,
    /// Log format (overrides log.format).
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server until SIGTERM or Ctrl-C.
    Serve {
        /// Address to listen on (overrides server.bind).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Run document jobs from the shared Redis queue for a serving node (scale-out);
    /// serves only /health/live, /health/ready and /metrics, on worker.bind.
    Worker {
        /// Address of the probes and metrics (overrides worker.bind).
        #[arg(long)]
        bind: Option<SocketAddr>,
    },
    /// Load the config, open every store, report each component; non-zero exit on failure.
    Check,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage tenant API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Add files and folders (recursively) to a tenant's knowledge.
    Ingest(knowledge::IngestArgs),
    /// Search a tenant's knowledge.
    Search(knowledge::SearchArgs),
    /// Measure a tenant's retrieval on a golden set: hit@1, hit@10, MRR@10, nDCG@10 and
    /// latency per search mode.
    Eval(eval::EvalArgs),
    /// Chat with a tenant's knowledge in the terminal.
    Chat(chat::ChatArgs),
    /// Rebuild a tenant's vector index from the stored vectors.
    Reindex {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
    },
    /// Copy every tenant's vectors between the data dir's local store and the Qdrant
    /// collection of [qdrant] (the local store must be free: no server on it).
    MigrateVectors {
        /// Where the vectors go: `qdrant` (from the local store) or `local` (from Qdrant).
        #[arg(long, value_enum)]
        to: migrate::Target,
    },
    /// Measure this machine: embedding, ANN index, ingestion.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// (Internal) Extract one document's text from stdin to stdout under limits; the
    /// server runs this for every document so that no parser runs inside it.
    #[command(hide = true)]
    Extract {
        /// text, markdown, html or pdf.
        #[arg(long)]
        kind: String,
        /// Address-space limit in bytes.
        #[arg(long)]
        memory_bytes: u64,
        /// CPU-time limit in seconds.
        #[arg(long)]
        cpu_secs: u64,
    },
}

impl Cli {
    /// Runs the commands that need no async runtime (the extraction child); `None` for
    /// the others.
    pub fn run_plain(&self) -> Option<ExitCode> {
        match &self.command {
            Command::Extract {
                kind,
                memory_bytes,
                cpu_secs,
            } => Some(crate::text::sandbox::run_child(
                kind,
                *memory_bytes,
                *cpu_secs,
            )),
            _ => None,
        }
    }
}

/// Tenant commands.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Slug: lowercase letters, digits and dashes.
        slug: String,
        /// Display name.
        #[arg(long)]
        name: Option<String>,
        /// System prompt.
        #[arg(long)]
        system_prompt: Option<String>,
    },
    /// List tenants.
    List,
    /// Show one tenant as JSON.
    Show {
        /// Id or slug.
        tenant: String,
    },
    /// Delete a tenant and everything it owns.
    Delete {
        /// Id or slug.
        tenant: String,
        /// Confirm the deletion.
        #[arg(long)]
        yes: bool,
    },
}

/// Key commands.
#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create a key; prints the secret once, on stdout.
    Create {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Label.
        #[arg(long, default_value = "default")]
        name: String,
        /// Scopes, comma-separated.
        #[arg(long, default_value = "read,write")]
        scopes: String,
        /// Days until the key expires (never when absent).
        #[arg(long)]
        expires_in_days: Option<u32>,
    },
    /// List a tenant's keys.
    List {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
    },
    /// Revoke a key.
    Revoke {
        /// Tenant id or slug.
        #[arg(long)]
        tenant: String,
        /// Key id.
        key_id: String,
    },
}

/// Runs a parsed command line.
pub async fn run(cli: Cli) -> ExitCode {
    let bind = match &cli.command {
        Command::Serve { bind } => *bind,
        _ => None,
    };
    let overrides = CliOverrides {
        bind,
        data_dir: cli.data_dir.clone(),
        log_format: cli.log_format,
    };
    let file = match Config::find_file(cli.config.as_deref()) {
        Ok(file) => file,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(file.as_deref(), &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Serve { .. } => serve(config).await,
        Command::Worker { bind } => {
            let mut config = config;
            if let Some(bind) = bind {
                config.worker.bind = bind;
            }
            worker::run(config).await
        }
        Command::Check => check(config, file).await,
        Command::Tenant(cmd) => with_core(config, |core| tenant(core, cmd)).await,
        Command::Key(cmd) => with_core(config, |core| key(core, cmd)).await,
        Command::Ingest(args) => with_core(config, |core| knowledge::ingest(core, args)).await,
        Command::Search(args) => with_core(config, |core| knowledge::search(core, args)).await,
        Command::Eval(args) => with_core(config, |core| eval::eval(core, args)).await,
        Command::Chat(args) => with_core(config, |core| chat::chat(core, args)).await,
        Command::Reindex { tenant } => {
            with_core(config, |core| knowledge::reindex(core, tenant)).await
        }
        Command::MigrateVectors { to } => {
            with_core(config, |core| migrate::migrate_vectors(core, to)).await
        }
        Command::Bench(cmd) => bench::run(config, cmd).await,
        Command::Extract { .. } => Ok(ExitCode::from(2)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<ExitCode> {
    crate::telemetry::init(&config.log);
    let running = startup::start(config, startup::Hooks::default()).await?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received; finishing in-flight requests");
        token.cancel();
    });
    running.wait().await?;
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

async fn with_core<F, Fut>(config: Config, f: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Core) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<ExitCode>>,
{
    let core = startup::open_core(config, Arc::new(SystemClock)).await?;
    f(core).await
}

async fn check(config: Config, file: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let mut failed = false;
    let mut report = |name: &str, ok: bool, detail: &str| {
        failed |= !ok;
        println!(
            "{:<10} {:<4} {detail}",
            name,
            if ok { "ok" } else { "FAIL" }
        );
    };
    let source = file
        .map(|f| f.display().to_string())
        .unwrap_or_else(|| "built-in defaults".to_owned());
    report("config", true, &format!("loaded from {source}"));
    let core = match startup::open_core(config.clone(), Arc::new(SystemClock)).await {
        Ok(core) => core,
        Err(e) => {
            report("database", false, &format!("{e:#}"));
            return Ok(ExitCode::FAILURE);
        }
    };
    match startup::admin_token(&config) {
        Ok(_) if config.auth.admin_token.is_some() => report("admin", true, "token from config"),
        Ok(_) => report(
            "admin",
            true,
            &format!("token in {}", config.storage.admin_token_path().display()),
        ),
        Err(e) => report("admin", false, &format!("{e:#}")),
    }
    if let Some(jwt) = &config.auth.jwt {
        match crate::auth::jwt::JwtVerifier::from_config(jwt) {
            Ok(_) => report("jwt", true, &format!("{:?} verifier ready", jwt.algorithm)),
            Err(e) => report("jwt", false, &format!("{e:#}")),
        }
    }
    let upstreams = crate::llm::Upstreams::from_config(&config)?;
    let loaded = match startup::load_generator(&config).await {
        Ok(g) => Some(g),
        Err(e) => {
            report("generator", false, &format!("{e:#}"));
            None
        }
    };
    let generator = loaded.as_ref().map(|g| (g, &upstreams));
    match startup::open_knowledge(core.clone(), None).await {
        Ok(k) => {
            for c in health::run(&core, Some(&k), generator).await {
                report(c.name, c.ok, &c.detail);
            }
        }
        Err(e) => {
            for c in health::run(&core, None, generator).await {
                report(c.name, c.ok, &c.detail);
            }
            report("knowledge", false, &format!("{e:#}"));
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn tenant(core: Core, cmd: TenantCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        TenantCommand::Create {
            slug,
            name,
            system_prompt,
        } => {
            let t = tenants::create(
                &core,
                NewTenant {
                    slug: Slug::parse(&slug)?,
                    name,
                    system_prompt,
                    settings: None,
                },
            )
            .await?;
            println!("created tenant {} ({})", t.slug, t.id);
        }
        TenantCommand::List => {
            let (items, total) = tenants::list(&core, u32::MAX, 0).await?;
            println!("{:<24} {:<36} NAME", "SLUG", "ID");
            for t in items {
                println!("{:<24} {:<36} {}", t.slug, t.id, t.name);
            }
            eprintln!("{total} tenant(s)");
        }
        TenantCommand::Show { tenant } => {
            let t = tenants::get(&core, &TenantRef::parse(&tenant)?).await?;
            println!("{}", TenantOut::from(t).to_json_string());
        }
        TenantCommand::Delete { tenant, yes } => {
            anyhow::ensure!(
                yes,
                "deleting a tenant removes all its data; pass --yes to confirm"
            );
            let t = tenants::delete(&core, &TenantRef::parse(&tenant)?).await?;
            println!("deleted tenant {} ({})", t.slug, t.id);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn key(core: Core, cmd: KeyCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        KeyCommand::Create {
            tenant,
            name,
            scopes,
            expires_in_days,
        } => {
            let expires_at =
                expires_in_days.map(|d| core.clock.now() + chrono::Duration::days(i64::from(d)));
            let created = keys::create(
                &core,
                &TenantRef::parse(&tenant)?,
                NewKey {
                    name,
                    scopes: Scopes::parse(&scopes)?,
                    expires_at,
                },
            )
            .await?;
            eprintln!(
                "created key {} ({}); store it now, it will not be shown again:",
                created.key.id,
                created.key.scopes.to_text()
            );
            println!("{}", created.secret);
        }
        KeyCommand::List { tenant } => {
            let items = keys::list(&core, &TenantRef::parse(&tenant)?).await?;
            println!(
                "{:<36} {:<14} {:<12} {:<11} {:<25} NAME",
                "ID", "PREFIX", "SCOPES", "STATE", "EXPIRES"
            );
            let now = core.clock.now();
            for k in items {
                let state = if k.revoked_at.is_some() {
                    "revoked"
                } else if k.expires_at.is_some_and(|e| e <= now) {
                    "expired"
                } else {
                    "active"
                };
                let expires = k
                    .expires_at
                    .map(|e| e.to_rfc3339())
                    .unwrap_or_else(|| "never".to_owned());
                println!(
                    "{:<36} {:<14} {:<12} {:<11} {:<25} {}",
                    k.id,
                    k.prefix,
                    k.scopes.to_text(),
                    state,
                    expires,
                    k.name
                );
            }
        }
        KeyCommand::Revoke { tenant, key_id } => {
            let k = keys::revoke(&core, &TenantRef::parse(&tenant)?, &key_id)
                .await
                .context("revoking key")?;
            println!("revoked key {} ({})", k.id, k.prefix);
        }
    }
    Ok(ExitCode::SUCCESS)
}
