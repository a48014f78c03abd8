//! The operator plane: tenants, their API keys, and index maintenance.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi, Tags};
use serde_json::Value;

use super::dto::{TenantOut, TenantPatchIn};
use crate::api::error::ApiError;
use crate::api::search::ModeDto;
use crate::api::security::AdminAuth;
use crate::api::state::AppState;
use crate::domain::{Scope, Scopes, Slug, TenantRef};
use crate::services::eval;
use crate::services::keys::{self, NewKey};
use crate::services::reindex;
use crate::services::search::Mode;
use crate::services::tenants::{self, NewTenant};
use crate::store::keys::ApiKey;

#[derive(Tags)]
enum Tag {
    /// Operator: tenants and keys (operator token).
    Admin,
}

/// A new tenant.
#[derive(Debug, Object)]
pub struct TenantIn {
    /// Unique slug: lowercase letters, digits and dashes (1-63), not starting or ending
    /// with a dash, and not shaped like an id.
    #[oai(validator(pattern = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"))]
    pub slug: String,
    /// Display name (at most 200 characters, not blank); defaults to the slug.
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: Option<String>,
    /// System prompt prepended to every chat (at most 20000 characters).
    #[oai(validator(max_length = 20000))]
    pub system_prompt: Option<String>,
    /// Free-form settings.
    pub settings: Option<BTreeMap<String, Value>>,
}

/// A page of tenants.
#[derive(Debug, Object)]
pub struct TenantList {
    /// Tenants, by slug.
    pub items: Vec<TenantOut>,
    /// How many tenants exist.
    pub total: u64,
}

/// A new API key.
#[derive(Debug, Object)]
pub struct KeyIn {
    /// Label, e.g. `ci` or `web-app` (at most 100 characters, not blank).
    #[oai(validator(max_length = 100, pattern = r"\S"))]
    pub name: String,
    /// Scopes, at least one; defaults to `["read", "write"]`.
    #[oai(validator(min_items = 1))]
    pub scopes: Option<Vec<ScopeDto>>,
    /// When the key stops working; never when absent. A time already past makes a key
    /// that never works.
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a key may do.
#[derive(Debug, Clone, Copy, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum ScopeDto {
    /// Read the tenant's data.
    Read,
    /// Change the tenant's data.
    Write,
}

impl From<ScopeDto> for Scope {
    fn from(s: ScopeDto) -> Self {
        match s {
            ScopeDto::Read => Scope::Read,
            ScopeDto::Write => Scope::Write,
        }
    }
}

impl From<Scope> for ScopeDto {
    fn from(s: Scope) -> Self {
        match s {
            Scope::Read => ScopeDto::Read,
            Scope::Write => ScopeDto::Write,
        }
    }
}

/// An API key (never its secret).
#[derive(Debug, Object)]
pub struct KeyOut {
    /// Id.
    pub id: String,
    /// Owner tenant's id.
    pub tenant_id: String,
    /// Label.
    pub name: String,
    /// First characters of the key, to recognise it.
    pub prefix: String,
    /// Scopes.
    pub scopes: Vec<ScopeDto>,
    /// Expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Last use (at most a minute stale).
    pub last_used_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl From<ApiKey> for KeyOut {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            tenant_id: k.tenant_id.to_string(),
            name: k.name,
            prefix: k.prefix,
            scopes: k.scopes.to_list().into_iter().map(Into::into).collect(),
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            created_at: k.created_at,
        }
    }
}

/// A key just created, with its secret: shown this once only.
#[derive(Debug, Object)]
pub struct CreatedKeyOut {
    /// The key record.
    #[oai(flatten)]
    pub record: KeyOut,
    /// The secret, `rbx_…`; store it now, it cannot be shown again.
    pub key: String,
}

/// A tenant's keys.
#[derive(Debug, Object)]
pub struct KeyList {
    /// Keys, newest first.
    pub items: Vec<KeyOut>,
}

/// A question of a golden set and what answers it.
#[derive(Debug, Object)]
pub struct EvalCaseIn {
    /// The question, as a user would search it (at most 4000 characters).
    #[oai(validator(max_length = 4000, pattern = r"\S"))]
    pub question: String,
    /// The answering document: its id or its title.
    #[oai(validator(max_length = 500, pattern = r"\S"))]
    pub document: String,
    /// The answering chunk of that document, when one chunk is the answer.
    pub chunk_index: Option<u32>,
}

/// A golden set to evaluate retrieval on.
#[derive(Debug, Object)]
pub struct EvalIn {
    /// The questions (1-1000).
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub cases: Vec<EvalCaseIn>,
    /// Modes to evaluate, each in turn (default: hybrid, vector, keyword).
    #[oai(validator(min_items = 1, max_items = 3))]
    pub modes: Option<Vec<ModeDto>>,
}

/// The figures of one search mode on a golden set.
#[derive(Debug, Object)]
pub struct EvalModeOut {
    /// The mode.
    pub mode: ModeDto,
    /// Share of questions whose answer came first.
    pub hit_at_1: f64,
    /// Share whose answer was in the top 10.
    pub hit_at_10: f64,
    /// Mean reciprocal rank of the answer within the top 10.
    pub mrr_at_10: f64,
    /// Mean nDCG@10 (one answer per question).
    pub ndcg_at_10: f64,
    /// Search latency, query embedding included: median, milliseconds.
    pub latency_p50_ms: f64,
    /// 95th percentile, milliseconds.
    pub latency_p95_ms: f64,
    /// 99th percentile, milliseconds.
    pub latency_p99_ms: f64,
}

/// Retrieval quality on a golden set, per mode.
#[derive(Debug, Object)]
pub struct EvalOut {
    /// Questions asked.
    pub cases: u64,
    /// One row per mode.
    pub modes: Vec<EvalModeOut>,
}

/// A rebuilt index.
#[derive(Debug, Object)]
pub struct Reindexed {
    /// Live vectors in the rebuilt index.
    pub vectors: u64,
    /// Time the rebuild took.
    pub seconds: f64,
}

#[derive(ApiResponse)]
enum CreatedTenant {
    /// Created.
    #[oai(status = 201)]
    Created(Json<TenantOut>),
}

#[derive(ApiResponse)]
enum CreatedKey {
    /// Created; the secret is in `key`.
    #[oai(status = 201)]
    Created(Json<CreatedKeyOut>),
}

#[derive(ApiResponse)]
enum Deleted {
    /// Deleted, with everything the tenant owned.
    #[oai(status = 204)]
    NoContent,
}

/// `/api/v1/admin`.
pub struct AdminApi {
    state: AppState,
}

impl AdminApi {
    /// Wraps the state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

fn tenant_ref(raw: &str) -> Result<TenantRef, ApiError> {
    TenantRef::parse(raw).map_err(|_| ApiError::not_found(format!("no tenant `{raw}`")))
}

#[OpenApi(prefix_path = "/api/v1/admin", tag = "Tag::Admin")]
impl AdminApi {
    /// Creates a tenant.
    #[oai(path = "/tenants", method = "post", operation_id = "create_tenant")]
    async fn create_tenant(
        &self,
        _auth: AdminAuth,
        body: Json<TenantIn>,
    ) -> Result<CreatedTenant, ApiError> {
        let body = body.0;
        let tenant = tenants::create(
            &self.state.core,
            NewTenant {
                slug: Slug::parse(&body.slug)?,
                name: body.name,
                system_prompt: body.system_prompt,
                settings: body.settings.map(|s| s.into_iter().collect()),
            },
        )
        .await?;
        Ok(CreatedTenant::Created(Json(tenant.into())))
    }

    /// Lists tenants by slug.
    #[oai(path = "/tenants", method = "get", operation_id = "list_tenants")]
    async fn list_tenants(
        &self,
        _auth: AdminAuth,
        /// Page size, 1-1000.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "1000"))
        )]
        limit: Query<u32>,
        /// Tenants to skip.
        #[oai(default)]
        offset: Query<u32>,
    ) -> Result<Json<TenantList>, ApiError> {
        let (items, total) = tenants::list(&self.state.core, limit.0, offset.0).await?;
        Ok(Json(TenantList {
            items: items.into_iter().map(Into::into).collect(),
            total,
        }))
    }

    /// One tenant, by id or slug.
    #[oai(path = "/tenants/:tenant", method = "get", operation_id = "get_tenant")]
    async fn get_tenant(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
    ) -> Result<Json<TenantOut>, ApiError> {
        let t = tenants::get(&self.state.core, &tenant_ref(&tenant)?).await?;
        Ok(Json(t.into()))
    }

    /// Changes a tenant's name, system prompt or settings.
    #[oai(
        path = "/tenants/:tenant",
        method = "patch",
        operation_id = "update_tenant"
    )]
    async fn update_tenant(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
        body: Json<TenantPatchIn>,
    ) -> Result<Json<TenantOut>, ApiError> {
        let t = tenants::update(&self.state.core, &tenant_ref(&tenant)?, body.0.into()).await?;
        Ok(Json(t.into()))
    }

    /// Deletes a tenant and everything it owns.
    #[oai(
        path = "/tenants/:tenant",
        method = "delete",
        operation_id = "delete_tenant"
    )]
    async fn delete_tenant(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
    ) -> Result<Deleted, ApiError> {
        tenants::delete_with_vectors(&self.state.knowledge, &tenant_ref(&tenant)?).await?;
        Ok(Deleted::NoContent)
    }

    /// Rebuilds a tenant's vector index from its stored vectors (what `ragbox reindex`
    /// asks of a running server). Searches go on meanwhile.
    ///
    /// Answers 409 `conflict` when the vector store keeps no local index to rebuild
    /// (a backend such as Qdrant indexes by itself).
    #[oai(
        path = "/tenants/:tenant/reindex",
        method = "post",
        operation_id = "reindex_tenant"
    )]
    async fn reindex_tenant(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
    ) -> Result<Json<Reindexed>, ApiError> {
        let done = reindex::reindex_tenant(&self.state.knowledge, &tenant_ref(&tenant)?).await?;
        Ok(Json(Reindexed {
            vectors: done.vectors as u64,
            seconds: done.took.as_secs_f64(),
        }))
    }

    /// Measures a tenant's retrieval on a golden set (what `ragbox eval` asks of a
    /// running server): each question is searched in each mode, top 10, and the ranks
    /// of the answers give hit@1, hit@10, MRR@10 and nDCG@10, beside search latency.
    ///
    /// Answers 404 `not_found` when an answer names no document of the tenant.
    #[oai(
        path = "/tenants/:tenant/eval",
        method = "post",
        operation_id = "evaluate_tenant"
    )]
    async fn evaluate_tenant(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
        body: Json<EvalIn>,
    ) -> Result<Json<EvalOut>, ApiError> {
        let found = tenants::get(&self.state.core, &tenant_ref(&tenant)?).await?;
        let body = body.0;
        let cases = body
            .cases
            .into_iter()
            .map(|c| eval::Case {
                question: c.question,
                document: c.document,
                chunk_index: c.chunk_index,
            })
            .collect();
        let modes: Vec<Mode> = match body.modes {
            Some(m) => m.into_iter().map(Into::into).collect(),
            None => vec![Mode::Hybrid, Mode::Vector, Mode::Keyword],
        };
        let report = eval::evaluate(&self.state.knowledge, &found.id, cases, &modes).await?;
        Ok(Json(EvalOut {
            cases: report.cases as u64,
            modes: report
                .modes
                .into_iter()
                .map(|r| EvalModeOut {
                    mode: r.mode.into(),
                    hit_at_1: r.hit_at_1,
                    hit_at_10: r.hit_at_10,
                    mrr_at_10: r.mrr_at_10,
                    ndcg_at_10: r.ndcg_at_10,
                    latency_p50_ms: r.latency_p50_ms,
                    latency_p95_ms: r.latency_p95_ms,
                    latency_p99_ms: r.latency_p99_ms,
                })
                .collect(),
        }))
    }

    /// Creates an API key for a tenant; the response holds the secret, once.
    #[oai(
        path = "/tenants/:tenant/keys",
        method = "post",
        operation_id = "create_key"
    )]
    async fn create_key(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
        body: Json<KeyIn>,
    ) -> Result<CreatedKey, ApiError> {
        let body = body.0;
        let scopes = match body.scopes {
            Some(list) => Scopes::from_list(&list.into_iter().map(Into::into).collect::<Vec<_>>()),
            None => Scopes::ALL,
        };
        let created = keys::create(
            &self.state.core,
            &tenant_ref(&tenant)?,
            NewKey {
                name: body.name,
                scopes,
                expires_at: body.expires_at,
            },
        )
        .await?;
        Ok(CreatedKey::Created(Json(CreatedKeyOut {
            record: created.key.into(),
            key: created.secret,
        })))
    }

    /// Lists a tenant's API keys (never their secrets).
    #[oai(
        path = "/tenants/:tenant/keys",
        method = "get",
        operation_id = "list_keys"
    )]
    async fn list_keys(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
    ) -> Result<Json<KeyList>, ApiError> {
        let items = keys::list(&self.state.core, &tenant_ref(&tenant)?).await?;
        Ok(Json(KeyList {
            items: items.into_iter().map(Into::into).collect(),
        }))
    }

    /// Revokes an API key; it fails from the very next request.
    #[oai(
        path = "/tenants/:tenant/keys/:key_id/revoke",
        method = "post",
        operation_id = "revoke_key"
    )]
    async fn revoke_key(
        &self,
        _auth: AdminAuth,
        tenant: Path<String>,
        key_id: Path<String>,
    ) -> Result<Json<KeyOut>, ApiError> {
        let key = keys::revoke(&self.state.core, &tenant_ref(&tenant)?, &key_id).await?;
        Ok(Json(key.into()))
    }
}

fn default_limit() -> u32 {
    100
}
