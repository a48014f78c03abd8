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
    #[oai(validator(minimum(value = "1"), maximum(value = "20")))]
    pub top_k: Option<u32>,
    /// Drop chunks below this hybrid score.
    pub min_score: Option<f32>,
    /// Only chunks of these documents (at most 100 ids).
    #[oai(validator(
        max_items = 100,
        pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub document_ids: Option<Vec<String>>,
}

/// An agent's settings; omitted ones keep their value (on create: the defaults).
#[derive(Debug, Object)]
pub struct AgentSettingsIn {
    /// Instructions (at most 20000 characters); empty means the tenant's system prompt.
    #[oai(validator(max_length = 20000))]
    pub system_prompt: Option<String>,
    /// Where answers come from: `local` (the bundled model) or the name of an upstream
    /// provider the server configures (default: the server's default provider).
    pub provider: Option<String>,
    /// The provider's model (at most 200 characters); omitted for its default.
    #[oai(validator(max_length = 200))]
    pub model: Option<String>,
    /// Sampling temperature, 0-2 (default 0.7).
    #[oai(validator(minimum(value = "0"), maximum(value = "2")))]
    pub temperature: Option<f64>,
    /// New tokens at most, 1-4096 (default 512).
    #[oai(validator(minimum(value = "1"), maximum(value = "4096")))]
    pub max_tokens: Option<u32>,
    /// Retrieval settings.
    pub retrieval: Option<AgentRetrievalDto>,
}

/// A new agent.
#[derive(Debug, Object)]
pub struct AgentIn {
    /// Unique in the tenant, 1-100 characters, not all white space; the `model` OpenAI
    /// clients name it by, taken as it is.
    #[oai(validator(max_length = 100, pattern = r"\S"))]
    pub name: String,
    /// Its settings.
    #[oai(flatten)]
    pub settings: AgentSettingsIn,
}

/// The fields of an agent to change.
#[derive(Debug, Object)]
pub struct AgentPatchIn {
    /// New name, unique in the tenant, 1-100 characters, not all white space.
    #[oai(validator(max_length = 100, pattern = r"\S"))]
    pub name: Option<String>,
    /// New settings.
    #[oai(flatten)]
    pub settings: AgentSettingsIn,
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

/// The fields given, as a change to an agent's name and settings.
fn patch(name: Option<String>, body: AgentSettingsIn) -> agents::AgentPatch {
    let (enabled, top_k, min_score, document_ids) = match body.retrieval {
        Some(r) => (r.enabled, r.top_k, r.min_score, r.document_ids),
        None => (None, None, None, None),
    };
    agents::AgentPatch {
        name,
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
        let body = body.0;
        let changes = patch(Some(body.name), body.settings);
        let agent = agents::create(&self.state.core, &auth.0.tenant.id, changes).await?;
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
        body: Json<AgentPatchIn>,
    ) -> Result<Json<AgentOut>, ApiError> {
        auth.0.require(Scope::Write)?;
        let body = body.0;
        let changes = patch(body.name, body.settings);
        let agent = agents::update(&self.state.core, &auth.0.tenant.id, &id, changes).await?;
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
