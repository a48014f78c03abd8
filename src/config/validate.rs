//! Checks on values that parse but make no sense together or on their own.

use super::{Config, ConfigError, JwtAlgorithm, LOCAL_PROVIDER, ProviderKind};

impl Config {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        if self.chunking.overlap_tokens * 2 > self.chunking.max_tokens
            || self.chunking.max_tokens < 16
        {
            return invalid(
                "chunking.overlap_tokens must be at most half of chunking.max_tokens (>= 16)",
            );
        }
        if self.chunking.max_tokens + 2 > self.embedding.max_tokens {
            return invalid(
                "chunking.max_tokens must leave room for 2 special tokens within embedding.max_tokens",
            );
        }
        if self.embedding.batch_size == 0 || self.embedding.queue_capacity == 0 {
            return invalid(
                "embedding.batch_size and embedding.queue_capacity must be greater than 0",
            );
        }
        if self.embedding.max_tokens > 512 {
            return invalid(
                "embedding.max_tokens must be at most 512 (the model's position limit)",
            );
        }
        if self.generation.keep_warm_secs > 86_400 {
            return invalid("generation.keep_warm_secs must be at most 86400 (a day)");
        }
        if self.metrics.tenant_series > 10_000 {
            return invalid(
                "metrics.tenant_series must be at most 10000 (each tenant adds 8 series)",
            );
        }
        if !(0.0..=1.0).contains(&self.search.vector_weight) {
            return invalid("search.vector_weight must be between 0 and 1");
        }
        if !self.search.rrf_k.is_finite() || self.search.rrf_k < 0.0 {
            return invalid("search.rrf_k must be a finite number of at least 0");
        }
        if self.jobs.concurrency == 0 || self.jobs.heartbeat_secs == 0 {
            return invalid("jobs.concurrency and jobs.heartbeat_secs must be greater than 0");
        }
        if self.jobs.local_workers == 0 && self.redis.url().is_none() {
            return invalid(
                "jobs.local_workers = 0 needs redis.url: without Redis no `ragbox worker` can take the jobs",
            );
        }
        if self.jobs.lease_secs == 0 {
            return invalid("jobs.lease_secs must be greater than 0");
        }
        if let Some(url) = self.redis.url()
            && !(url.starts_with("redis://") || url.starts_with("rediss://"))
        {
            return invalid("redis.url must start with redis:// or rediss://");
        }
        if let Some(url) = self.qdrant.url()
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("qdrant.url must start with http:// or https:// (Qdrant's REST port)");
        }
        if self.qdrant.collection.is_empty()
            || !self
                .qdrant
                .collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return invalid("qdrant.collection must be letters, digits, `_` or `-`");
        }
        if !(0.0..1.0).contains(&self.index.rebuild_deleted_fraction)
            || self.index.hnsw_m < 2
            || self.index.hnsw_m > 256
        {
            return invalid(
                "index.rebuild_deleted_fraction must be in [0, 1) and index.hnsw_m in 2..=256",
            );
        }
        self.validate_providers()?;
        let x = &self.extraction;
        if x.memory_mb < 64 || x.cpu_secs == 0 || x.timeout_secs == 0 || x.max_text_ratio == 0 {
            return invalid(
                "extraction.memory_mb must be at least 64, and extraction.cpu_secs, timeout_secs and max_text_ratio greater than 0",
            );
        }
        if self.limits.concurrent_generations == 0 || self.limits.concurrent_ingestion_jobs == 0 {
            return invalid(
                "limits.concurrent_generations and limits.concurrent_ingestion_jobs must be greater than 0",
            );
        }
        if self.documents.max_chunks == 0 {
            return invalid("documents.max_chunks must be greater than 0");
        }
        if self.server.max_body_bytes == 0 {
            return invalid("server.max_body_bytes must be greater than 0");
        }
        if self.server.header_read_timeout_secs == 0 || self.server.idle_timeout_secs == 0 {
            return invalid(
                "server.header_read_timeout_secs and server.idle_timeout_secs must be greater than 0",
            );
        }
        if let Some(token) = &self.auth.admin_token
            && token.expose().len() < 16
        {
            return invalid("auth.admin_token must be at least 16 characters");
        }
        if let Some(domain) = &self.server.base_domain
            && (domain.is_empty() || domain.starts_with('.') || domain.contains(':'))
        {
            return invalid("server.base_domain must be a host name like `ragbox.example.com`");
        }
        if let Some(jwt) = &self.auth.jwt {
            match jwt.algorithm {
                JwtAlgorithm::HS256 => match &jwt.secret {
                    Some(s) if s.expose().len() >= 32 => {}
                    _ => {
                        return invalid(
                            "auth.jwt.secret must be set to at least 32 bytes for HS256",
                        );
                    }
                },
                JwtAlgorithm::RS256 | JwtAlgorithm::ES256 => {
                    if jwt.public_key_file.is_none() {
                        return invalid("auth.jwt.public_key_file must be set for RS256/ES256");
                    }
                }
            }
            if jwt.tenant_claim.is_empty() {
                return invalid("auth.jwt.tenant_claim must not be empty");
            }
        }
        Ok(())
    }

    fn validate_providers(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        for (name, p) in &self.providers {
            if name == LOCAL_PROVIDER
                || name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return invalid(format!(
                    "providers.{name}: a provider name is letters, digits, `-` and `_`, and not `{LOCAL_PROVIDER}`"
                ));
            }
            if p.kind == ProviderKind::Openai && p.base_url.is_none() {
                return invalid(format!("providers.{name}.base_url must be set"));
            }
            let base = p.base();
            if !(base.starts_with("http://") || base.starts_with("https://"))
                || reqwest::Url::parse(&base).is_err()
            {
                return invalid(format!(
                    "providers.{name}.base_url must be an http:// or https:// URL"
                ));
            }
            if p.model.trim().is_empty() {
                return invalid(format!("providers.{name}.model must be set"));
            }
            if p.context_tokens < 256 || p.connect_timeout_ms == 0 || p.idle_timeout_ms == 0 {
                return invalid(format!(
                    "providers.{name}: context_tokens must be at least 256 and the timeouts greater than 0"
                ));
            }
        }
        let default = &self.generation.provider;
        if default != LOCAL_PROVIDER && !self.providers.contains_key(default) {
            return invalid(format!(
                "generation.provider `{default}` is neither `{LOCAL_PROVIDER}` nor a [providers.{default}] section"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_checked_and_their_keys_redacted() {
        let ok = Config::from_toml(
            "[generation]\nprovider = \"up\"\n[providers.up]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:8080/v1/\"\napi_key = \"sk-very-secret\"\nmodel = \"m\"\n",
        )
        .unwrap();
        assert_eq!(ok.providers["up"].base(), "http://127.0.0.1:8080/v1");
        assert!(!format!("{ok:?}").contains("sk-very-secret"));
        let anthropic =
            Config::from_toml("[providers.claude]\nkind = \"anthropic\"\nmodel = \"m\"\n").unwrap();
        assert!(anthropic.providers["claude"].base().starts_with("https://"));
        for (toml, named) in [
            ("[generation]\nprovider = \"nope\"\n", "generation.provider"),
            (
                "[providers.up]\nkind = \"openai\"\nmodel = \"m\"\n",
                "providers.up.base_url",
            ),
            (
                "[providers.up]\nkind = \"openai\"\nbase_url = \"ftp://x\"\nmodel = \"m\"\n",
                "providers.up.base_url",
            ),
            (
                "[providers.up]\nkind = \"anthropic\"\n",
                "providers.up.model",
            ),
            (
                "[providers.local]\nkind = \"anthropic\"\nmodel = \"m\"\n",
                "providers.local",
            ),
        ] {
            let err = Config::from_toml(toml).unwrap_err().to_string();
            assert!(err.contains(named), "{toml}: {err}");
        }
    }

    #[test]
    fn the_generators_keep_warm_is_bounded() {
        let ok = Config::from_toml("[generation]\nkeep_warm_secs = 0\n").unwrap();
        assert_eq!(ok.generation.keep_warm_secs, 0);
        assert_eq!(Config::default().generation.keep_warm_secs, 30);
        let err = Config::from_toml("[generation]\nkeep_warm_secs = 86401\n").unwrap_err();
        assert!(
            err.to_string().contains("generation.keep_warm_secs"),
            "{err}"
        );
    }

    #[test]
    fn hs256_needs_a_long_secret() {
        let err = Config::from_toml("[auth.jwt]\nalgorithm = \"HS256\"\nsecret = \"short\"\n")
            .unwrap_err();
        assert!(err.to_string().contains("auth.jwt.secret"), "{err}");
    }
}
