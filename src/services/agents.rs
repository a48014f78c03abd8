//! Agents: a tenant's configured assistants (instructions, model, sampling, retrieval).

use tracing::instrument;

use super::{Core, ServiceError};
use crate::config::{Config, LOCAL_PROVIDER};
use crate::domain::TenantId;
use crate::store::agents::{self, Agent, AgentRetrieval, AgentSettings};

/// Defaults of a new agent: the server's default provider.
pub fn default_settings(config: &Config) -> AgentSettings {
    AgentSettings {
        system_prompt: String::new(),
        provider: config.generation.provider.clone(),
        model: None,
        temperature: 0.7,
        max_tokens: 512,
        retrieval: AgentRetrieval {
            enabled: true,
            top_k: 4,
            min_score: None,
            document_ids: None,
        },
    }
}

/// Checks a name and settings; the message names the field. The provider must be
/// `local` or one the server's configuration names.
pub fn validate(config: &Config, name: &str, s: &AgentSettings) -> Result<(), ServiceError> {
    let invalid = |m: &str| Err(ServiceError::Invalid(m.to_owned()));
    if name.trim().is_empty() || name.chars().count() > 100 {
        return invalid("name must be 1 to 100 characters");
    }
    if s.system_prompt.chars().count() > 20_000 {
        return invalid("system_prompt must be at most 20000 characters");
    }
    if s.provider != LOCAL_PROVIDER && !config.providers.contains_key(&s.provider) {
        return Err(ServiceError::Invalid(format!(
            "provider `{}` is not available (available: {})",
            s.provider,
            config.available_providers()
        )));
    }
    if s.model.as_ref().is_some_and(|m| m.chars().count() > 200) {
        return invalid("model must be at most 200 characters");
    }
    if !(0.0..=2.0).contains(&s.temperature) {
        return invalid("temperature must be between 0 and 2");
    }
    if !(1..=4096).contains(&s.max_tokens) {
        return invalid("max_tokens must be between 1 and 4096");
    }
    if !(1..=20).contains(&s.retrieval.top_k) {
        return invalid("retrieval.top_k must be between 1 and 20");
    }
    super::check_document_ids(
        "retrieval.document_ids",
        s.retrieval.document_ids.as_deref(),
    )?;
    Ok(())
}

/// Creates an agent; a name the tenant already uses is a conflict.
#[instrument(skip_all, fields(tenant = %tenant))]
pub async fn create(
    core: &Core,
    tenant: &TenantId,
    name: String,
    settings: AgentSettings,
) -> Result<Agent, ServiceError> {
    let name = name.trim().to_owned();
    validate(&core.config, &name, &settings)?;
    let now = core.clock.now();
    let agent = Agent {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.clone(),
        name,
        settings,
        created_at: now,
        updated_at: now,
    };
    let row = agent.clone();
    match core.db.call(move |c| agents::insert(c, &row)).await {
        Ok(()) => Ok(agent),
        Err(e) if e.is_unique_violation() => Err(ServiceError::Conflict(format!(
            "an agent named `{}` exists already",
            agent.name
        ))),
        Err(e) => Err(e.into()),
    }
}

/// One agent; 404 when absent or another tenant's.
pub async fn get(core: &Core, tenant: &TenantId, id: &str) -> Result<Agent, ServiceError> {
    let (t, i) = (tenant.clone(), id.to_owned());
    core.db
        .call(move |c| agents::get(c, &t, &i))
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("no agent `{id}`")))
}

/// The tenant's agents by name.
pub async fn list(core: &Core, tenant: &TenantId) -> Result<Vec<Agent>, ServiceError> {
    let t = tenant.clone();
    Ok(core.db.call(move |c| agents::list(c, &t)).await?)
}

/// Replaces an agent's name and settings (the caller merged the patch).
pub async fn update(core: &Core, mut agent: Agent) -> Result<Agent, ServiceError> {
    agent.name = agent.name.trim().to_owned();
    validate(&core.config, &agent.name, &agent.settings)?;
    agent.updated_at = core.clock.now();
    let row = agent.clone();
    match core.db.call(move |c| agents::update(c, &row)).await {
        Ok(true) => Ok(agent),
        Ok(false) => Err(ServiceError::NotFound(format!("no agent `{}`", agent.id))),
        Err(e) if e.is_unique_violation() => Err(ServiceError::Conflict(format!(
            "an agent named `{}` exists already",
            agent.name
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Deletes an agent; 404 when absent or another tenant's.
pub async fn delete(core: &Core, tenant: &TenantId, id: &str) -> Result<(), ServiceError> {
    let (t, i) = (tenant.clone(), id.to_owned());
    if core.db.call(move |c| agents::delete(c, &t, &i)).await? {
        Ok(())
    } else {
        Err(ServiceError::NotFound(format!("no agent `{id}`")))
    }
}
