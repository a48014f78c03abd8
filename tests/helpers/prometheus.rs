//! Reads Prometheus's text exposition format (version 0.0.4) strictly: every line a
//! `# HELP`, a `# TYPE` or a sample of a family declared before it, names and labels as
//! the format allows them, values as numbers.

use std::collections::{BTreeMap, HashMap};

/// Samples by series (`name{label="value",…}` with labels sorted), and each family's type.
#[derive(Debug, Default)]
pub struct Scrape {
    pub samples: BTreeMap<String, f64>,
    pub types: HashMap<String, String>,
}

impl Scrape {
    /// The sample of `series`, written as the parser keys it; 0 when absent.
    pub fn value(&self, series: &str) -> f64 {
        self.samples.get(series).copied().unwrap_or(0.0)
    }

    /// The sum of every sample of the metric `name` (all label sets).
    pub fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(_, v)| v)
            .sum()
    }

    /// Whether any sample of the metric `name` is present.
    pub fn has(&self, name: &str) -> bool {
        self.samples
            .keys()
            .any(|k| k.split('{').next() == Some(name))
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn number(s: &str) -> Result<f64, String> {
    match s {
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        "NaN" => Ok(f64::NAN),
        _ => s.parse().map_err(|_| format!("`{s}` is not a number")),
    }
}

/// `a="x",b="y"` → sorted pairs; label values may hold escaped `\\`, `\"` and `\n`.
fn labels(mut s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let eq = s.find('=').ok_or("a label without =")?;
        let name = &s[..eq];
        if !is_name(name) || name.contains(':') {
            return Err(format!("`{name}` is not a label name"));
        }
        let rest = s[eq + 1..]
            .strip_prefix('"')
            .ok_or("an unquoted label value")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    _ => return Err("a bad escape in a label value".into()),
                },
                Some((_, c)) => value.push(c),
                None => return Err("an unterminated label value".into()),
            }
        };
        out.push((name.to_owned(), value));
        s = &rest[end + 1..];
        s = s.strip_prefix(',').unwrap_or(s);
    }
    out.sort();
    Ok(out)
}

/// The family a sample belongs to, given the declared types.
fn family<'a>(name: &'a str, types: &HashMap<String, String>) -> Option<&'a str> {
    if types.contains_key(name) {
        return Some(name);
    }
    for suffix in ["_bucket", "_sum", "_count"] {
        let base = name.strip_suffix(suffix);
        let kind = base.and_then(|b| types.get(b)).map(String::as_str);
        if matches!(kind, Some("histogram" | "summary")) {
            return base;
        }
    }
    None
}

/// Parses a whole scrape; the error names the first line that breaks the format.
pub fn parse(text: &str) -> Result<Scrape, String> {
    let mut scrape = Scrape::default();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: String| format!("line {}: {why}: {line}", n + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("HELP"), Some(name), _) if is_name(name) => {}
                (Some("TYPE"), Some(name), Some(kind)) if is_name(name) => {
                    if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                        return Err(fail(format!("unknown type {kind}")));
                    }
                    if scrape.types.insert(name.into(), kind.into()).is_some() {
                        return Err(fail("a family declared twice".into()));
                    }
                }
                _ => return Err(fail("a malformed comment".into())),
            }
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .ok_or_else(|| fail("no value".into()))?;
        let value = number(value).map_err(fail)?;
        let (name, pairs) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').ok_or_else(|| fail("no }".into()))?;
                (name, labels(inner).map_err(fail)?)
            }
            None => (series, Vec::new()),
        };
        if !is_name(name) {
            return Err(fail(format!("`{name}` is not a metric name")));
        }
        let kind = family(name, &scrape.types)
            .and_then(|f| scrape.types.get(f))
            .ok_or_else(|| fail("a sample of no declared family".into()))?;
        if kind == "counter" && (value.is_nan() || value < 0.0) {
            return Err(fail("a negative counter".into()));
        }
        let key = if pairs.is_empty() {
            name.to_owned()
        } else {
            let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
            format!("{name}{{{}}}", inner.join(","))
        };
        if scrape.samples.insert(key, value).is_some() {
            return Err(fail("a series given twice".into()));
        }
    }
    Ok(scrape)
}
