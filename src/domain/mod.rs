//! Validated newtypes for identifiers and inputs, parsed once at the edge, and the
//! types of text generation that the bundled model and the upstream providers share.

mod generation;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use generation::{Event, FinishReason, GenError, Message, Role, Sampling, Usage};

/// Why an input was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidInput(pub String);

/// A tenant's id (a UUID, assigned by ragbox).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TenantId(String);

impl TenantId {
    /// A new random id.
    pub fn generate() -> Self {
        Self(uuid::Uuid::now_v7().to_string())
    }

    /// Parses an id given by a client: a UUID in its hyphenated form, as ids are issued.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        uuid::Uuid::try_parse(s)
            .ok()
            .filter(|_| s.len() == 36)
            .map(|u| Self(u.to_string()))
            .ok_or_else(|| InvalidInput(format!("`{s}` is not a tenant id")))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps an id read back from the database.
    pub(crate) fn from_db(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A tenant's slug: 1–63 lowercase letters, digits and inner dashes, usable as a DNS label.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Slug(String);

impl Slug {
    /// Validates a slug.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if s.is_empty() || s.len() > 63 || !ok_chars || s.starts_with('-') || s.ends_with('-') {
            return Err(InvalidInput(format!(
                "slug `{s}` must be 1-63 lowercase letters, digits or dashes, not starting or ending with a dash"
            )));
        }
        if uuid::Uuid::parse_str(s).is_ok() {
            return Err(InvalidInput(format!(
                "slug `{s}` looks like an id; choose a name"
            )));
        }
        Ok(Self(s.to_owned()))
    }

    /// The slug as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a slug read back from the database.
    pub(crate) fn from_db(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Display for Slug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a tenant is named in a path or on the command line: by id or by slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TenantRef {
    /// By id.
    Id(TenantId),
    /// By slug.
    Slug(Slug),
}

impl TenantRef {
    /// An id when the text is a UUID, else a slug.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match TenantId::parse(s) {
            Ok(id) => Ok(Self::Id(id)),
            Err(_) => Slug::parse(s).map(Self::Slug),
        }
    }
}

impl fmt::Display for TenantRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => id.fmt(f),
            Self::Slug(slug) => slug.fmt(f),
        }
    }
}

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read the tenant's data.
    Read,
    /// Change the tenant's data.
    Write,
}

impl Scope {
    /// The scope's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    /// Parses `read` or `write`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        match s.trim() {
            "read" => Ok(Self::Read),
            "write" => Ok(Self::Write),
            other => Err(InvalidInput(format!(
                "unknown scope `{other}`: use `read` or `write`"
            ))),
        }
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Scopes {
    read: bool,
    write: bool,
}

impl Scopes {
    /// Read and write.
    pub const ALL: Scopes = Scopes {
        read: true,
        write: true,
    };

    /// Builds a set from a list.
    pub fn from_list(list: &[Scope]) -> Self {
        Self {
            read: list.contains(&Scope::Read),
            write: list.contains(&Scope::Write),
        }
    }

    /// Parses a comma- or space-separated list, e.g. `read,write`.
    pub fn parse(s: &str) -> Result<Self, InvalidInput> {
        let list = s
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(Scope::parse)
            .collect::<Result<Vec<_>, _>>()?;
        if list.is_empty() {
            return Err(InvalidInput("at least one scope is required".to_owned()));
        }
        Ok(Self::from_list(&list))
    }

    /// Whether the set holds `scope`.
    pub fn contains(self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
        }
    }

    /// The scopes as a list.
    pub fn to_list(self) -> Vec<Scope> {
        let mut out = Vec::new();
        if self.read {
            out.push(Scope::Read);
        }
        if self.write {
            out.push(Scope::Write);
        }
        out
    }

    /// The scopes as text, comma-separated.
    pub fn to_text(self) -> String {
        self.to_list()
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn slugs() {
        assert!(Slug::parse("acme").is_ok());
        assert!(Slug::parse("acme-2").is_ok());
        assert!(Slug::parse("").is_err());
        assert!(Slug::parse("Acme").is_err());
        assert!(Slug::parse("-acme").is_err());
        assert!(Slug::parse("acme-").is_err());
        assert!(Slug::parse("ac_me").is_err());
        assert!(Slug::parse(&"a".repeat(64)).is_err());
        assert!(Slug::parse("0190a6b2-1c2d-7e3f-8a9b-0c1d2e3f4a5b").is_err());
    }

    #[test]
    fn tenant_ref_prefers_ids() {
        let id = TenantId::generate();
        assert_eq!(TenantRef::parse(id.as_str()).unwrap(), TenantRef::Id(id));
        assert!(matches!(
            TenantRef::parse("acme").unwrap(),
            TenantRef::Slug(_)
        ));
    }

    #[test]
    fn scopes_parse() {
        assert_eq!(Scopes::parse("read").unwrap().to_text(), "read");
        assert_eq!(Scopes::parse("write, read").unwrap(), Scopes::ALL);
        assert!(Scopes::parse("admin").is_err());
        assert!(Scopes::parse("").is_err());
    }

    proptest! {
        #[test]
        fn valid_slugs_are_dns_labels(s in "[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?") {
            let slug = Slug::parse(&s).unwrap();
            prop_assert_eq!(slug.as_str(), s.as_str());
        }

        #[test]
        fn anything_else_is_rejected(s in ".*[^a-z0-9-].*") {
            prop_assert!(Slug::parse(&s).is_err());
        }
    }
}
