//! `/api/v1/agents`: the tenant's configured assistants.

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};

use crate::api::error::ApiError;
use crate::api::security::TenantAuth;
use crate::api::state::AppState;
use crate::domain::Scope;
use crate::services::agents;
use crate::store::agents::Agent;

#[derive(Tags)]
enum Tag {
    /// Chat grounded in the tenant's knowledge.
    Chat,
}

/// What an agent retrieves before answering.
#[derive(Debug, Clone, Object)]
pub struct AgentRetrievalDto {
    /// Search the tenant's knowledge (default true).
    pub enabled: Option<bool>,
    /// Chunks given to the model, 1-20 (default 4).
    pub top_k: Option<u32>,
    /// Drop chunks below this hybrid score.
    pub min_score: Option<f32>,
    /// Only chunks of these documents (at most 100 ids).
    #[oai(validator(max_items = 100))]
    pub document_ids: Option<Vec<String>>,
}

/// A new agent, or the fields of one to change.
#[derive(Debug, Object)]
pub struct AgentIn {
    /// Unique in the tenant (1-100 characters); required to create.
    pub name: Option<String>,
    /// Instructions; empty means the tenant's system prompt.
    pub system_prompt: Option<String>,
    /// Where answers come from: `local` (the bundled model) or the name of an upstream
    /// provider the server configures (default: the server's default provider).
    pub provider: Option<String>,
    /// The provider's model; omitted for its default.
    pub model: Option<String>,
    /// Sampling temperature, 0-2 (default 0.7).
    pub temperature: Option<f64>,
    /// New tokens at most, 1-4096 (default 512).
    pub max_tokens: Option<u32>,
    /// Retrieval settings.
    pub retrieval: Option<AgentRetrievalDto>,
}

/// An agent.
#[derive(Debug, Object)]
pub struct AgentOut {
    /// Id.
    pub id: String,
    /// Name, unique in the tenant.
    pub name: String,
    /// Instructions.
    pub system_prompt: String,
    /// Provider.
    pub provider: String,
    /// Model, when not the provider's default.
    pub model: Option<String>,
    /// Sampling temperature.
    pub temperature: f64,
    /// New tokens at most.
    pub max_tokens: u32,
    /// Retrieval.
    pub retrieval: AgentRetrievalDto,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Agent> for AgentOut {
    fn from(a: Agent) -> Self {
        let s = a.settings;
        Self {
            id: a.id,
            name: a.name,
            system_prompt: s.system_prompt,
            provider: s.provider,
            model: s.model,
            temperature: s.temperature,
            max_tokens: s.max_tokens,
            retrieval: AgentRetrievalDto {
                enabled: Some(s.retrieval.enabled),
                top_k: Some(s.retrieval.top_k),
                min_score: s.retrieval.min_score,
                document_ids: s.retrieval.document_ids,
            },
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

/// The tenant's agents.
#[derive(Debug, Object)]
pub struct AgentList {
    /// Agents by name.
    pub items: Vec<AgentOut>,
}

#[derive(ApiResponse)]
enum Created {
    /// Created.
    #[oai(status = 201)]
    Created(Json<AgentOut>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

/// Applies the fields given onto an agent's name and settings.
impl From<AgentIn> for agents::AgentPatch {
    fn from(body: AgentIn) -> Self {
        let r = body.retrieval;
        let (enabled, top_k, min_score, document_ids) = match r {
            Some(r) => (r.enabled, r.top_k, r.min_score, r.document_ids),
            None => (None, None, None, None),
        };
        Self {
            name: body.name,
            system_prompt: body.system_prompt,
            provider: body.provider,
            model: body.model,
            temperature: body.temperature,
            max_tokens: body.max_tokens,
            retrieval_enabled: enabled,
            top_k,
            min_score,
            document_ids,
        }
    }
}

/// `/api/v1/agents`.
pub struct AgentsApi {
    state: AppState,
}

impl AgentsApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[OpenApi(tag = "Tag::Chat")]
impl AgentsApi {
    /// Creates an agent.
    #[oai(
        path = "/api/v1/agents",
        method = "post",
        operation_id = "create_agent"
    )]
    async fn create(&self, auth: TenantAuth, body: Json<AgentIn>) -> Result<Created, ApiError> {
        auth.0.require(Scope::Write)?;
        let agent = agents::create(&self.state.core, &auth.0.tenant.id, body.0.into()).await?;
        Ok(Created::Created(Json(agent.into())))
    }

    /// Lists the tenant's agents.
    #[oai(path = "/api/v1/agents", method = "get", operation_id = "list_agents")]
    async fn list(&self, auth: TenantAuth) -> Result<Json<AgentList>, ApiError> {
        auth.0.require(Scope::Read)?;
        let items = agents::list(&self.state.core, &auth.0.tenant.id).await?;
        Ok(Json(AgentList {
            items: items.into_iter().map(Into::into).collect(),
        }))
    }

    /// One agent.
    #[oai(
        path = "/api/v1/agents/:id",
        method = "get",
        operation_id = "get_agent"
    )]
    async fn get(&self, auth: TenantAuth, id: Path<String>) -> Result<Json<AgentOut>, ApiError> {
        auth.0.require(Scope::Read)?;
        let agent = agents::get(&self.state.core, &auth.0.tenant.id, &id).await?;
        Ok(Json(agent.into()))
    }

    /// Changes the fields given.
    #[oai(
        path = "/api/v1/agents/:id",
        method = "patch",
        operation_id = "update_agent"
    )]
    async fn update(
        &self,
        auth: TenantAuth,
        id: Path<String>,
        body: Json<AgentIn>,
    ) -> Result<Json<AgentOut>, ApiError> {
        auth.0.require(Scope::Write)?;
        let agent = agents::update(&self.state.core, &auth.0.tenant.id, &id, body.0.into()).await?;
        Ok(Json(agent.into()))
    }

    /// Deletes an agent.
    #[oai(
        path = "/api/v1/agents/:id",
        method = "delete",
        operation_id = "delete_agent"
    )]
    async fn delete(&self, auth: TenantAuth, id: Path<String>) -> Result<Deleted, ApiError> {
        auth.0.require(Scope::Write)?;
        agents::delete(&self.state.core, &auth.0.tenant.id, &id).await?;
        Ok(Deleted::NoContent)
    }
}
