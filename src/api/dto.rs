//! Request and response bodies shared by several APIs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde_json::Value;

use crate::store::tenants::Tenant;

/// A tenant.
#[derive(Debug, Clone, Object)]
pub struct TenantOut {
    /// Id (UUID).
    pub id: String,
    /// Unique slug; also the subdomain when `server.base_domain` is set.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// System prompt prepended to every chat.
    pub system_prompt: String,
    /// Free-form settings.
    pub settings: BTreeMap<String, Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Tenant> for TenantOut {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id.to_string(),
            slug: t.slug.to_string(),
            name: t.name,
            system_prompt: t.system_prompt,
            settings: t.settings.into_iter().collect(),
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Changes to a tenant; absent fields stay as they are.
#[derive(Debug, Clone, Object)]
pub struct TenantPatchIn {
    /// New display name (at most 200 characters, not blank).
    #[oai(validator(max_length = 200, pattern = r"\S"))]
    pub name: Option<String>,
    /// New system prompt (at most 20000 characters).
    #[oai(validator(max_length = 20000))]
    pub system_prompt: Option<String>,
    /// New settings (replaces the whole object).
    pub settings: Option<BTreeMap<String, Value>>,
}

impl From<TenantPatchIn> for crate::services::tenants::TenantPatch {
    fn from(p: TenantPatchIn) -> Self {
        Self {
            name: p.name,
            system_prompt: p.system_prompt,
            settings: p.settings.map(|s| s.into_iter().collect()),
        }
    }
}
