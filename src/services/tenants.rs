//! Tenants: create, read, update, delete (with everything they own).

use serde_json::{Map, Value};
use tracing::instrument;

use super::{Core, Knowledge, ServiceError, blocking, limited_text, required_text};
use crate::domain::{Slug, TenantId, TenantRef};
use crate::store::tenants::{self, Tenant};

const MAX_NAME: usize = 200;
const MAX_SYSTEM_PROMPT: usize = 20_000;

/// What a new tenant is made of.
#[derive(Debug, Clone)]
pub struct NewTenant {
    /// Unique slug.
    pub slug: Slug,
    /// Display name; the slug when empty.
    pub name: Option<String>,
    /// System prompt.
    pub system_prompt: Option<String>,
    /// Settings object.
    pub settings: Option<Map<String, Value>>,
}

/// Fields to change; `None` keeps the current value.
#[derive(Debug, Clone, Default)]
pub struct TenantPatch {
    /// New name.
    pub name: Option<String>,
    /// New system prompt.
    pub system_prompt: Option<String>,
    /// New settings (replaces the whole object).
    pub settings: Option<Map<String, Value>>,
}

/// Creates a tenant; 409 when the slug is taken.
#[instrument(skip_all, fields(slug = %new.slug))]
pub async fn create(core: &Core, new: NewTenant) -> Result<Tenant, ServiceError> {
    let now = core.clock.now();
    let name = match new.name {
        Some(name) => required_text("name", &name, MAX_NAME)?,
        None => new.slug.to_string(),
    };
    let tenant = Tenant {
        id: TenantId::generate(),
        slug: new.slug,
        name,
        system_prompt: limited_text(
            "system_prompt",
            new.system_prompt.as_deref().unwrap_or(""),
            MAX_SYSTEM_PROMPT,
        )?,
        settings: {
            super::check_object_size("settings", new.settings.as_ref())?;
            new.settings.unwrap_or_default()
        },
        created_at: now,
        updated_at: now,
    };
    let row = tenant.clone();
    core.db
        .call(move |c| tenants::insert(c, &row))
        .await
        .map_err(|e| {
            if e.is_unique_violation() {
                ServiceError::Conflict(format!("a tenant with slug `{}` exists", tenant.slug))
            } else {
                e.into()
            }
        })?;
    tracing::info!(tenant = %tenant.slug, id = %tenant.id, "tenant created");
    Ok(tenant)
}

/// Finds a tenant by id or slug; 404 when absent.
pub async fn get(core: &Core, r: &TenantRef) -> Result<Tenant, ServiceError> {
    let key = r.clone();
    core.db
        .call(move |c| tenants::get(c, &key))
        .await?
        .ok_or_else(|| ServiceError::NotFound(format!("no tenant `{r}`")))
}

/// Lists tenants by slug, with the total count.
pub async fn list(
    core: &Core,
    limit: u32,
    offset: u32,
) -> Result<(Vec<Tenant>, u64), ServiceError> {
    Ok(core
        .db
        .call(move |c| Ok((tenants::list(c, limit, offset)?, tenants::count(c)?)))
        .await?)
}

/// Changes a tenant's name, system prompt or settings.
#[instrument(skip_all, fields(tenant = %r))]
pub async fn update(
    core: &Core,
    r: &TenantRef,
    patch: TenantPatch,
) -> Result<Tenant, ServiceError> {
    let mut tenant = get(core, r).await?;
    if let Some(name) = patch.name {
        tenant.name = required_text("name", &name, MAX_NAME)?;
    }
    if let Some(prompt) = patch.system_prompt {
        tenant.system_prompt = limited_text("system_prompt", &prompt, MAX_SYSTEM_PROMPT)?;
    }
    if let Some(settings) = patch.settings {
        super::check_object_size("settings", Some(&settings))?;
        tenant.settings = settings;
    }
    tenant.updated_at = core.clock.now();
    let row = tenant.clone();
    if !core.db.call(move |c| tenants::update(c, &row)).await? {
        return Err(ServiceError::NotFound(format!("no tenant `{r}`")));
    }
    Ok(tenant)
}

/// Deletes a tenant and everything it owns: rows (by cascade) and files.
#[instrument(skip_all, fields(tenant = %r))]
pub async fn delete(core: &Core, r: &TenantRef) -> Result<Tenant, ServiceError> {
    let tenant = get(core, r).await?;
    let id = tenant.id.clone();
    if !core.db.call(move |c| tenants::delete(c, &id)).await? {
        return Err(ServiceError::NotFound(format!("no tenant `{r}`")));
    }
    let dir = core.config.storage.tenant_dir(tenant.id.as_str());
    match tokio::fs::remove_dir_all(&dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e.into()),
    }
    core.db.keywords().forget(&tenant.id);
    tracing::info!(tenant = %tenant.slug, "tenant deleted");
    Ok(tenant)
}

/// Deletes a tenant as [`delete`] does, and drops what the serving process holds of it
/// beside the database: its vectors and its place in the limiter.
pub async fn delete_with_vectors(k: &Knowledge, r: &TenantRef) -> Result<Tenant, ServiceError> {
    let tenant = delete(&k.core, r).await?;
    k.core.limiter.forget(&tenant.id);
    let (vectors, id) = (k.vectors.clone(), tenant.id.clone());
    if let Err(e) = blocking(move || vectors.drop_tenant(&id)).await? {
        tracing::warn!(tenant = %tenant.id, error = %e, "could not drop the tenant's vectors; they go at the next start");
    }
    Ok(tenant)
}
