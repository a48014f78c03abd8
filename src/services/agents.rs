//! Agents: a tenant's configured assistants (instructions, model, sampling, retrieval).

use tracing::instrument;

use super::chat::{DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_K};
use super::{Core, ServiceError};
use crate::config::{Config, LOCAL_PROVIDER};
use crate::domain::TenantId;
use crate::store::agents::{self, Agent, AgentRetrieval, AgentSettings};

/// Defaults of a new agent: the server's default provider, and the sampling and
/// retrieval a chat without an agent gets.
pub fn default_settings(config: &Config) -> AgentSettings {
    AgentSettings {
        system_prompt: String::new(),
        provider: config.generation.provider.clone(),
        model: None,
        temperature: DEFAULT_TEMPERATURE,
        max_tokens: DEFAULT_MAX_TOKENS as u32,
        retrieval: AgentRetrieval {
            enabled: true,
            top_k: DEFAULT_TOP_K as u32,
            min_score: None,
            document_ids: None,
        },
    }
}

/// Checks a name and settings; the message names the field. The provider must be
/// `local` or one the server's configuration names.
pub fn validate(config: &Config, name: &str, s: &AgentSettings) -> Result<(), ServiceError> {
    let invalid = |m: &str| Err(ServiceError::Invalid(m.to_owned()));
    if name.chars().count() > 100 || super::is_blank(name) {
        return invalid("name must be 1 to 100 characters, not all white space");
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

/// Changes to an agent: each field given replaces the agent's; an absent one keeps it.
/// A new agent starts from [`default_settings`].
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    /// Unique in the tenant; required for a new agent.
    pub name: Option<String>,
    /// Instructions.
    pub system_prompt: Option<String>,
    /// Provider name.
    pub provider: Option<String>,
    /// The provider's model.
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// New tokens at most.
    pub max_tokens: Option<u32>,
    /// Retrieval switch.
    pub retrieval_enabled: Option<bool>,
    /// Chunks retrieved.
    pub top_k: Option<u32>,
    /// Lowest score kept.
    pub min_score: Option<f32>,
    /// Documents searched.
    pub document_ids: Option<Vec<String>>,
}

impl AgentPatch {
    /// Applies the given fields to `agent`.
    fn apply(self, agent: &mut Agent) {
        let s = &mut agent.settings;
        let r = &mut s.retrieval;
        set(&mut agent.name, self.name);
        set(&mut s.system_prompt, self.system_prompt);
        set(&mut s.provider, self.provider);
        set(&mut s.temperature, self.temperature);
        set(&mut s.max_tokens, self.max_tokens);
        set(&mut r.enabled, self.retrieval_enabled);
        set(&mut r.top_k, self.top_k);
        if self.model.is_some() {
            s.model = self.model;
        }
        if self.min_score.is_some() {
            r.min_score = self.min_score;
        }
        if self.document_ids.is_some() {
            r.document_ids = self.document_ids;
        }
    }
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *field = v;
    }
}

/// Creates an agent from the server's defaults and `patch`, which must name it; a
/// name the tenant already uses is a conflict.
#[instrument(skip_all, fields(tenant = %tenant))]
pub async fn create(
    core: &Core,
    tenant: &TenantId,
    patch: AgentPatch,
) -> Result<Agent, ServiceError> {
    let now = core.clock.now();
    let mut agent = Agent {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.clone(),
        name: String::new(),
        settings: default_settings(&core.config),
        created_at: now,
        updated_at: now,
    };
    if patch.name.is_none() {
        return Err(ServiceError::Invalid("name is required".into()));
    }
    patch.apply(&mut agent);
    validate(&core.config, &agent.name, &agent.settings)?;
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

/// Changes the fields `patch` gives of one of the tenant's agents.
#[instrument(skip_all, fields(tenant = %tenant, agent = %id))]
pub async fn update(
    core: &Core,
    tenant: &TenantId,
    id: &str,
    patch: AgentPatch,
) -> Result<Agent, ServiceError> {
    let mut agent = get(core, tenant, id).await?;
    patch.apply(&mut agent);
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
