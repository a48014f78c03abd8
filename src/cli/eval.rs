//! `ragbox eval`: retrieval quality of a tenant on a golden set, per search mode. With
//! no server running it opens the data dir's stores itself; when a `ragbox serve` holds
//! the vector store it asks the server's operator route instead.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde::Deserialize;

use super::knowledge::{server_url, succeeded};
use crate::domain::TenantRef;
use crate::services::eval::{self, Case, ModeReport};
use crate::services::search::Mode;
use crate::services::{Core, tenants};
use crate::startup;

/// `ragbox eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The golden set: JSON Lines (or one JSON array) of
    /// `{"question": …, "document": "<id or title>", "chunk_index": N?}`.
    pub file: PathBuf,
    /// Tenant id or slug.
    #[arg(long)]
    pub tenant: String,
    /// Modes to evaluate, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "hybrid,vector,keyword")]
    pub modes: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseLine {
    question: String,
    document: String,
    #[serde(default)]
    chunk_index: Option<u32>,
}

/// The cases of a golden-set file: a JSON array, or one JSON object per line.
fn read_cases(path: &Path) -> anyhow::Result<Vec<Case>> {
    let text =
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let lines: Vec<CaseLine> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?
    };
    Ok(lines
        .into_iter()
        .map(|l| Case {
            question: l.question,
            document: l.document,
            chunk_index: l.chunk_index,
        })
        .collect())
}

/// `ragbox eval`.
pub async fn eval(core: Core, args: EvalArgs) -> anyhow::Result<ExitCode> {
    let tenant = tenants::get(&core, &TenantRef::parse(&args.tenant)?).await?;
    let cases = read_cases(&args.file)?;
    let modes: Vec<Mode> = args
        .modes
        .iter()
        .map(|m| Mode::parse(m.trim()))
        .collect::<Result<_, _>>()?;
    let count = cases.len();
    let rows = match startup::open_vectors(&core.config).await? {
        Some(vectors) => {
            let k = startup::assemble_knowledge(core, None, vectors).await?;
            eval::evaluate(&k, &tenant.id, cases, &modes).await?.modes
        }
        None => through_server(&core, &tenant.id, &cases, &modes).await?,
    };
    println!("{count} questions, top {}", eval::DEPTH);
    println!("| mode | hit@1 | hit@10 | MRR@10 | nDCG@10 | p50 ms | p95 ms | p99 ms |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} | {:.1} |",
            r.mode.as_str(),
            r.hit_at_1,
            r.hit_at_10,
            r.mrr_at_10,
            r.ndcg_at_10,
            r.latency_p50_ms,
            r.latency_p95_ms,
            r.latency_p99_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The same evaluation by the running server, as the operator.
async fn through_server(
    core: &Core,
    tenant: &crate::domain::TenantId,
    cases: &[Case],
    modes: &[Mode],
) -> anyhow::Result<Vec<ModeReport>> {
    let token = startup::admin_token(&core.config)?;
    let url = format!(
        "{}/api/v1/admin/tenants/{tenant}/eval",
        server_url(&core.config)
    );
    let body = serde_json::json!({
        "cases": cases.iter().map(|c| serde_json::json!({
            "question": c.question,
            "document": c.document,
            "chunk_index": c.chunk_index,
        })).collect::<Vec<_>>(),
        "modes": modes.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
    });
    let answer = reqwest::Client::new()
        .post(&url)
        .bearer_auth(token.expose())
        .json(&body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("the data dir is in use, but {url} failed: {e}"))?;
    let body: serde_json::Value = succeeded(answer).await?.json().await?;
    let rows = body["modes"].as_array().cloned().unwrap_or_default();
    rows.iter()
        .map(|r| {
            let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
            Ok(ModeReport {
                mode: Mode::parse(r["mode"].as_str().unwrap_or_default())?,
                hit_at_1: f("hit_at_1"),
                hit_at_10: f("hit_at_10"),
                mrr_at_10: f("mrr_at_10"),
                ndcg_at_10: f("ndcg_at_10"),
                latency_p50_ms: f("latency_p50_ms"),
                latency_p95_ms: f("latency_p95_ms"),
                latency_p99_ms: f("latency_p99_ms"),
            })
        })
        .collect()
}
