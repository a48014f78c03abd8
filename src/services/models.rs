//! The models a tenant can name, as OpenAI-style clients see them: the tenant's agents
//! by name, the bundled generator, each configured upstream provider's default model as
//! `provider/model`, and the embedding model. A name is looked up in that order, so an
//! agent may deliberately shadow a base model's name.

use chrono::{DateTime, Utc};

use super::{Core, ServiceError};
use crate::domain::TenantId;
use crate::llm::Upstreams;
use crate::store::agents::{self, Agent};

/// What a model name stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One of the tenant's agents.
    Agent,
    /// A chat model without an agent: the bundled one or an upstream's.
    Chat,
    /// The embedding model.
    Embedding,
}

/// One entry of the list.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name to send as `model`.
    pub id: String,
    /// What it is.
    pub kind: Kind,
    /// When it appeared: the agent's creation, else when the server started.
    pub created: DateTime<Utc>,
}

/// The names of the server's own models.
#[derive(Debug, Clone)]
pub struct Catalog {
    /// The bundled generator's name.
    pub local: String,
    /// The embedding model's name.
    pub embedding: String,
    /// When the server started (the base models' `created`).
    pub started: DateTime<Utc>,
}

/// A chat model a name resolved to.
#[derive(Debug, Clone)]
pub enum ChatModel {
    /// Answer as this agent.
    Agent(Box<Agent>),
    /// The bundled model, no agent.
    Local,
    /// An upstream provider's model, no agent.
    Upstream {
        /// Provider name.
        provider: String,
        /// Model at the provider.
        model: String,
    },
}

/// Every model the tenant can name, agents first (by name), then the base models.
pub async fn list(
    core: &Core,
    catalog: &Catalog,
    upstreams: &Upstreams,
    tenant: &TenantId,
) -> Result<Vec<Entry>, ServiceError> {
    let t = tenant.clone();
    let mut out: Vec<Entry> = core
        .db
        .call(move |c| agents::list(c, &t))
        .await?
        .into_iter()
        .map(|a| Entry {
            id: a.name,
            kind: Kind::Agent,
            created: a.created_at,
        })
        .collect();
    let base = |id: String, kind| Entry {
        id,
        kind,
        created: catalog.started,
    };
    out.push(base(catalog.local.clone(), Kind::Chat));
    for (provider, model) in upstreams.defaults() {
        out.push(base(format!("{provider}/{model}"), Kind::Chat));
    }
    out.push(base(catalog.embedding.clone(), Kind::Embedding));
    Ok(out)
}

/// The chat model `name` means for this tenant: one of its agents, the bundled model,
/// or `provider/model` at a configured upstream. Anything else (the embedding model
/// included) is not found.
pub async fn chat_model(
    core: &Core,
    catalog: &Catalog,
    upstreams: &Upstreams,
    tenant: &TenantId,
    name: &str,
) -> Result<ChatModel, ServiceError> {
    let (t, n) = (tenant.clone(), name.to_owned());
    if let Some(agent) = core.db.call(move |c| agents::by_name(c, &t, &n)).await? {
        return Ok(ChatModel::Agent(Box::new(agent)));
    }
    if name == catalog.local {
        return Ok(ChatModel::Local);
    }
    if let Some((provider, model)) = name.split_once('/')
        && !model.is_empty()
        && upstreams.defaults().any(|(p, _)| p == provider)
    {
        return Ok(ChatModel::Upstream {
            provider: provider.to_owned(),
            model: model.to_owned(),
        });
    }
    Err(not_found(name, "a chat model"))
}

/// Checks that `name` is the embedding model.
pub fn embedding_model(catalog: &Catalog, name: &str) -> Result<(), ServiceError> {
    if name == catalog.embedding {
        Ok(())
    } else {
        Err(not_found(name, "an embedding model"))
    }
}

fn not_found(name: &str, what: &str) -> ServiceError {
    let shown: String = name.chars().take(100).collect();
    ServiceError::NotFound(format!(
        "the model `{shown}` does not exist or is not {what}; GET /v1/models lists them"
    ))
}
