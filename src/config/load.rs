//! Reading the configuration: the file searched for, then environment variables, then
//! command-line flags over built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};

use super::{Config, LogFormat};

/// Paths searched, in order, when `--config` is not given.
pub fn default_config_paths() -> Vec<PathBuf> {
    let mut paths = vec![PathBuf::from("config.toml")];
    if let Some(home) = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
    {
        paths.push(home.join("ragbox/config.toml"));
    }
    paths.push(PathBuf::from("/etc/ragbox/config.toml"));
    paths
}

/// Overrides given on the command line; they win over file and environment.
#[derive(Debug, Clone, Default)]
pub struct CliOverrides {
    /// `--bind`.
    pub bind: Option<SocketAddr>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--log-format`.
    pub log_format: Option<LogFormat>,
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` does not exist.
    #[error("config file {0} does not exist")]
    Missing(PathBuf),
    /// A key is unknown or a value has the wrong type.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// The file to read: `explicit` (which must exist), else the first default path
    /// that exists, else none (built-in defaults).
    pub fn find_file(explicit: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
        match explicit {
            Some(p) if !p.exists() => Err(ConfigError::Missing(p.to_path_buf())),
            Some(p) => Ok(Some(p.to_path_buf())),
            None => Ok(default_config_paths().into_iter().find(|p| p.exists())),
        }
    }

    /// Loads the configuration: defaults < file < environment < CLI flags.
    pub fn load(file: Option<&Path>, overrides: &CliOverrides) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        figment = figment.merge(Env::prefixed("RAGBOX__").split("__"));
        let mut config: Config = figment.extract().map_err(describe)?;
        if let Some(bind) = overrides.bind {
            config.server.bind = bind;
        }
        if let Some(dir) = &overrides.data_dir {
            config.storage.data_dir = dir.clone();
        }
        if let Some(format) = overrides.log_format {
            config.log.format = format;
        }
        config.validate()?;
        Ok(config)
    }

    /// Parses a configuration from TOML text alone (no environment), for tests and tools.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(describe)?;
        config.validate()?;
        Ok(config)
    }
}

fn describe(err: figment::Error) -> ConfigError {
    let messages: Vec<String> = err
        .into_iter()
        .map(|e| {
            let key = e.path.join(".");
            let source = e
                .metadata
                .as_ref()
                .and_then(|m| m.source.as_ref())
                .map(|s| format!(" (from {s})"))
                .unwrap_or_default();
            if key.is_empty() {
                format!("{}{source}", e.kind)
            } else {
                format!("key `{key}`: {}{source}", e.kind)
            }
        })
        .collect();
    ConfigError::Invalid(messages.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml("[server]\nbindd = \"1.2.3.4:5\"\n").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("bindd"), "{text}");
    }

    #[test]
    fn embedding_precision_is_read_and_a_wrong_one_named() {
        let config = Config::from_toml("[embedding]\nprecision = \"int8\"\n").unwrap();
        assert_eq!(
            config.embedding.precision,
            crate::config::EmbeddingPrecision::Int8
        );
        let err = Config::from_toml("[embedding]\nprecision = \"int4\"\n").unwrap_err();
        assert!(err.to_string().contains("embedding.precision"), "{err}");
    }

    #[test]
    fn bad_value_is_named() {
        let err = Config::from_toml("[server]\nbind = \"nowhere\"\n").unwrap_err();
        assert!(err.to_string().contains("server.bind"), "{err}");
    }
}
