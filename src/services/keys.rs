//! Tenant API keys: `rbx_` + 32 random bytes, shown once, stored as SHA-256.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use tracing::instrument;

use super::{Core, ServiceError, required_text, tenants};
use crate::domain::{Scopes, TenantRef};
use crate::store::StoreError;
use crate::store::commits::{CommitWatch, Stamp};
use crate::store::keys::{self, ApiKey};
use crate::store::tenants::Tenant;

/// Every tenant key starts with this.
pub const KEY_PREFIX: &str = "rbx_";
const SHOWN_PREFIX_LEN: usize = 12;
const MAX_KEY_LEN: usize = 256;

/// What a new key is made of.
#[derive(Debug, Clone)]
pub struct NewKey {
    /// Label.
    pub name: String,
    /// Scopes.
    pub scopes: Scopes,
    /// Expiry, in the future.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A key just created: the record and the secret, which is never shown again.
#[derive(Debug, Clone)]
pub struct CreatedKey {
    /// The stored record.
    pub key: ApiKey,
    /// The secret.
    pub secret: String,
}

/// SHA-256 of a key's text.
pub fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Whether a bearer token looks like a tenant key.
pub fn looks_like_key(token: &str) -> bool {
    token.starts_with(KEY_PREFIX) && token.len() <= MAX_KEY_LEN
}

/// Creates a key for a tenant.
#[instrument(skip_all, fields(tenant = %tenant_ref))]
pub async fn create(
    core: &Core,
    tenant_ref: &TenantRef,
    new: NewKey,
) -> Result<CreatedKey, ServiceError> {
    let tenant = tenants::get(core, tenant_ref).await?;
    let now = core.clock.now();
    let name = required_text("name", &new.name, 100)?;
    if new.scopes.to_list().is_empty() {
        return Err(ServiceError::Invalid(
            "at least one scope is required".into(),
        ));
    }
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let key = ApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        tenant_id: tenant.id.clone(),
        name,
        prefix: secret[..SHOWN_PREFIX_LEN].to_owned(),
        scopes: new.scopes,
        expires_at: new.expires_at,
        revoked_at: None,
        last_used_at: None,
        created_at: now,
    };
    let row = key.clone();
    let digest = hash(&secret);
    core.db
        .call(move |c| keys::insert(c, &row, &digest))
        .await?;
    tracing::info!(tenant = %tenant.slug, key_id = %key.id, "api key created");
    Ok(CreatedKey { key, secret })
}

/// Lists a tenant's keys, never their secrets.
pub async fn list(core: &Core, tenant_ref: &TenantRef) -> Result<Vec<ApiKey>, ServiceError> {
    let tenant = tenants::get(core, tenant_ref).await?;
    Ok(core.db.call(move |c| keys::list(c, &tenant.id)).await?)
}

/// Revokes a key; takes effect on the next request. Revoking twice is harmless.
#[instrument(skip_all, fields(tenant = %tenant_ref, key_id = %key_id))]
pub async fn revoke(
    core: &Core,
    tenant_ref: &TenantRef,
    key_id: &str,
) -> Result<ApiKey, ServiceError> {
    let tenant = tenants::get(core, tenant_ref).await?;
    let now = core.clock.now();
    let id = key_id.to_owned();
    let found = core
        .db
        .call(move |c| {
            if !keys::revoke(c, &tenant.id, &id, now)? {
                return Ok(None);
            }
            keys::get(c, &tenant.id, &id)
        })
        .await?;
    let key = found
        .ok_or_else(|| ServiceError::NotFound(format!("no key `{key_id}` for this tenant")))?;
    tracing::info!(key_id = %key.id, "api key revoked");
    Ok(key)
}

/// Why a key was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyRefusal {
    /// No such key.
    Unknown,
    /// Revoked.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// Keys resolved before, by the hash of their secret, valid while the database's
/// credential counter (`auth_epoch`) stands where it stood when they were read. Every
/// change a resolved key depends on moves the counter, in the same transaction and by
/// whichever process makes it (a trigger), so a revocation by the CLI is seen on the
/// next request. The counter is read again whenever anything at all was committed to
/// the database since it was last read, which a [`CommitWatch`] tells from one small
/// read of SQLite's shared log index; where there is none, on every request. Unknown
/// keys are never kept. At most [`KEY_CACHE_ENTRIES`]; when full it starts over.
#[derive(Default)]
pub struct KeyCache {
    inner: std::sync::Mutex<CacheState>,
    watch: std::sync::OnceLock<Option<CommitWatch>>,
    /// The counter as read at a stamp of the database.
    read_at: std::sync::Mutex<Option<(Stamp, i64)>>,
}

#[derive(Default)]
struct CacheState {
    epoch: i64,
    keys: std::collections::HashMap<[u8; 32], (ApiKey, Tenant)>,
}

/// The most keys a [`KeyCache`] holds.
pub const KEY_CACHE_ENTRIES: usize = 10_000;

impl KeyCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The credential counter now: as last read while nothing has been committed
    /// since, else read again.
    fn epoch(&self, db: &crate::store::Db) -> Result<i64, StoreError> {
        let watch = self.watch.get_or_init(|| {
            CommitWatch::open(db.path()).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "no commit watch; the key cache reads its counter on every request");
                None
            })
        });
        let Some(watch) = watch else {
            return db.call_blocking(|c| keys::epoch(c));
        };
        // The stamp is taken before the read: a commit in between makes the next
        // request's stamp differ, so it reads again.
        let stamp = watch.stamp();
        let mut read_at = self.read_at.lock().unwrap_or_else(|e| e.into_inner());
        if let (Some(stamp), Some((seen, epoch))) = (stamp, *read_at)
            && seen == stamp
        {
            return Ok(epoch);
        }
        let epoch = watch.read(keys::epoch)?;
        *read_at = stamp.map(|s| (s, epoch));
        Ok(epoch)
    }

    /// The key and tenant kept for `digest` if the counter still reads `epoch`. A
    /// counter that moved on empties the cache; a request that read it before the
    /// latest move (it raced the change) gets nothing from it.
    fn get(&self, epoch: i64, digest: &[u8; 32]) -> Option<(ApiKey, Tenant)> {
        let mut state = self.lock();
        if epoch > state.epoch {
            state.keys.clear();
            state.epoch = epoch;
            return None;
        }
        if epoch < state.epoch {
            return None;
        }
        state.keys.get(digest).cloned()
    }

    fn put(&self, epoch: i64, digest: [u8; 32], found: &(ApiKey, Tenant)) {
        let mut state = self.lock();
        if state.epoch != epoch {
            return;
        }
        if state.keys.len() >= KEY_CACHE_ENTRIES {
            state.keys.clear();
        }
        state.keys.insert(digest, found.clone());
    }

    fn used(&self, digest: &[u8; 32], at: DateTime<Utc>) {
        if let Some((key, _)) = self.lock().keys.get_mut(digest) {
            key.last_used_at = Some(at);
        }
    }
}

/// Looks a presented key up (in `cache` first, when given) and checks it is usable now;
/// records its use at most once a minute so that hot keys do not turn every read into a
/// write.
pub async fn authenticate(
    core: &Core,
    cache: Option<&KeyCache>,
    secret: &str,
) -> Result<Result<(ApiKey, Tenant), KeyRefusal>, ServiceError> {
    let digest = hash(secret);
    let now = core.clock.now();
    let (epoch, kept) = match cache {
        Some(cache) => {
            // At most a point read, here on the runtime: cheaper than the hop to a
            // blocking thread, and WAL readers never wait for writers.
            let epoch = cache.epoch(&core.db)?;
            (epoch, cache.get(epoch, &digest))
        }
        None => (0, None),
    };
    let found = match kept {
        Some(found) => Some(found),
        None => {
            let found = core
                .db
                .call(move |c| keys::find_by_hash(c, &digest))
                .await?;
            if let (Some(cache), Some(found)) = (cache, &found) {
                cache.put(epoch, digest, found);
            }
            found
        }
    };
    let Some((key, tenant)) = found else {
        return Ok(Err(KeyRefusal::Unknown));
    };
    if key.revoked_at.is_some() {
        return Ok(Err(KeyRefusal::Revoked));
    }
    if key.expires_at.is_some_and(|exp| exp <= now) {
        return Ok(Err(KeyRefusal::Expired));
    }
    let stale = key
        .last_used_at
        .is_none_or(|t| now - t > chrono::Duration::seconds(60));
    if stale {
        if let Some(cache) = cache {
            cache.used(&digest, now);
        }
        let db = core.db.clone();
        let id = key.id.clone();
        tokio::spawn(async move {
            if let Err(e) = db.call(move |c| keys::touch(c, &id, now)).await {
                tracing::warn!(error = %e, "could not record key use");
            }
        });
    }
    Ok(Ok((key, tenant)))
}
