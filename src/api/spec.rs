//! The OpenAPI document as the server really behaves, and what is derived from it.
//!
//! poem-openapi's generated document leaves out three things its own parsers enforce or
//! allow, which a generated client or a contract tester trips over; [`exact`] adds them:
//! - an optional property without a default accepts `null` (and the server sends `null`
//!   for an absent value): it is marked `nullable`;
//! - integer formats (`int32`, `uint64`, …) are ranges: each gets its `minimum` and
//!   `maximum`, unless a tighter one is declared;
//! - nothing else.
//!
//! [`Allowed`] reads the document's paths to answer a 405 with the `Allow` header RFC
//! 9110 requires.

use serde_json::{Map, Value, json};

/// The document with the additions above.
pub fn exact(raw: &str) -> Value {
    let mut spec: Value = serde_json::from_str(raw).unwrap_or_else(|_| json!({}));
    walk(&mut spec);
    spec
}

fn walk(v: &mut Value) {
    match v {
        Value::Object(o) => {
            if let Some(Value::Object(stream)) = o.get_mut("text/event-stream") {
                event_stream(stream);
            }
            if o.contains_key("properties") {
                nullable_optionals(o);
            } else if o.contains_key("oneOf") {
                // poem-openapi types every union `object`; its options say what it is.
                o.remove("type");
            }
            if o.get("type").and_then(Value::as_str) == Some("integer") {
                integer_range(o);
            }
            for (key, child) in o.iter_mut() {
                // A form's absent part is its only "null": its fields stay as declared.
                if key != "multipart/form-data" {
                    walk(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(walk),
        _ => {}
    }
}

/// poem-openapi declares an event stream as an array of its events' type; a client
/// reads it event by event. Each event is declared as what arrives: an object whose
/// `data` is the event's JSON (`contentSchema`), or the closing `[DONE]`.
fn event_stream(media: &mut Map<String, Value>) {
    let Some(item) = media
        .get("schema")
        .filter(|s| s["format"] == "event-stream")
        .and_then(|s| s.get("items"))
        .cloned()
    else {
        return;
    };
    media.insert(
        "schema".into(),
        json!({
            "type": "object",
            "required": ["data"],
            "properties": {
                "event": {"type": "string"},
                "id": {"type": "string"},
                "data": {"oneOf": [
                    {"type": "string", "enum": ["[DONE]"]},
                    {"type": "string", "contentMediaType": "application/json", "contentSchema": item},
                ]},
            },
        }),
    );
}

fn nullable_optionals(schema: &mut Map<String, Value>) {
    let required: Vec<String> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let Some(Value::Object(props)) = schema.get_mut("properties") else {
        return;
    };
    for (name, prop) in props.iter_mut() {
        if required.contains(name) {
            continue;
        }
        let Value::Object(p) = prop else { continue };
        if p.contains_key("default") || p.get("readOnly") == Some(&Value::Bool(true)) {
            continue;
        }
        if let Some(reference) = p.remove("$ref") {
            // A sibling of `$ref` is ignored in OpenAPI 3.0: wrap it.
            p.insert("allOf".into(), json!([{ "$ref": reference }]));
        }
        p.insert("nullable".into(), Value::Bool(true));
    }
}

fn integer_range(schema: &mut Map<String, Value>) {
    let (min, max): (f64, f64) = match schema.get("format").and_then(Value::as_str) {
        Some("int8") => (i8::MIN.into(), i8::MAX.into()),
        Some("int16") => (i16::MIN.into(), i16::MAX.into()),
        Some("int32") => (i32::MIN.into(), i32::MAX.into()),
        Some("int64") => (i64::MIN as f64, i64::MAX as f64),
        Some("uint8") => (0.0, u8::MAX.into()),
        Some("uint16") => (0.0, u16::MAX.into()),
        Some("uint32") => (0.0, u32::MAX.into()),
        Some("uint64") => (0.0, u64::MAX as f64),
        _ => return,
    };
    let declared = |key: &str| schema.get(key).and_then(Value::as_f64);
    let keep_min = declared("minimum").is_some_and(|d| d >= min);
    let keep_max = declared("maximum").is_some_and(|d| d <= max);
    if !keep_min {
        schema.insert("minimum".into(), number(min));
    }
    if !keep_max {
        schema.insert("maximum".into(), number(max));
    }
}

/// A bound as JSON: an integer where it is one that JSON readers take exactly.
fn number(x: f64) -> Value {
    if x.abs() < 9.0e15 {
        json!(x as i64)
    } else if x > 0.0 {
        // 2^63 - 1 and 2^64 - 1 are not exact in f64; state them as integers.
        if x > 1.0e19 {
            json!(u64::MAX)
        } else {
            json!(i64::MAX)
        }
    } else {
        json!(i64::MIN)
    }
}

/// What only the running server knows.
pub struct Runtime<'a> {
    /// The media types an upload takes.
    pub media_types: &'a [&'a str],
    /// The providers an agent may name.
    pub providers: &'a [&'a str],
    /// The bundled chat model's name.
    pub chat_model: &'a str,
    /// The embedding model's name.
    pub embedding_model: &'a str,
}

/// Declares what only the running server knows: the media types an upload takes (the
/// `file` part's `encoding`, and `metadata` as a JSON part), the providers an agent may
/// name, and the models' names as the OpenAI routes' examples.
pub fn declare_runtime(spec: &mut Value, runtime: &Runtime<'_>) {
    let Runtime {
        media_types,
        providers,
        ..
    } = runtime;
    let form = &mut spec["paths"]["/api/v1/documents/upload"]["post"]["requestBody"]["content"]["multipart/form-data"];
    if form.is_object() {
        // The form takes its named parts only (the handler refuses others).
        form["schema"]["additionalProperties"] = json!(false);
        form["encoding"] = json!({
            "file": {"contentType": media_types.join(", ")},
            "metadata": {"contentType": "application/json"},
        });
    }
    let schemas = &mut spec["components"]["schemas"];
    for agent in ["AgentIn", "AgentPatchIn"] {
        let provider = &mut schemas[agent]["properties"]["provider"];
        if provider.is_object() {
            let mut names = json!(providers);
            // An enum lists every value taken, `null` too where it is.
            if provider["nullable"] == true
                && let Some(list) = names.as_array_mut()
            {
                list.push(Value::Null);
            }
            provider["enum"] = names;
        }
    }
    for (schema, example) in [
        ("ChatCompletionIn", runtime.chat_model),
        ("EmbeddingsIn", runtime.embedding_model),
    ] {
        let model = &mut schemas[schema]["properties"]["model"];
        if model.is_object() {
            model["example"] = json!(example);
        }
    }
}

/// A path of the document, `{name}` segments matching any one segment.
#[derive(Debug, Clone)]
pub struct Template(Vec<Option<String>>);

impl Template {
    /// Reads `/a/{b}/c`.
    pub fn parse(path: &str) -> Self {
        Self(
            path.split('/')
                .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
                .collect(),
        )
    }

    /// How well `path` matches: `None` when it does not, else the literal segments
    /// that matched (a literal route wins over one with a parameter, as the router picks).
    pub fn matches(&self, path: &str) -> Option<usize> {
        let parts: Vec<&str> = path.split('/').collect();
        let fits = self.0.len() == parts.len()
            && self.0.iter().zip(&parts).all(|(s, p)| match s {
                Some(literal) => literal == p,
                None => !p.is_empty(),
            });
        fits.then(|| self.0.iter().filter(|s| s.is_some()).count())
    }
}

/// The best match for `path` among `routes`.
pub fn best<'a, T>(routes: &'a [(Template, T)], path: &str) -> Option<&'a T> {
    routes
        .iter()
        .filter_map(|(t, v)| t.matches(path).map(|score| (score, v)))
        .max_by_key(|(score, _)| *score)
        .map(|(_, v)| v)
}

/// The methods each path of the document takes, for `Allow`.
#[derive(Debug, Clone, Default)]
pub struct Allowed {
    routes: Vec<(Template, String)>,
}

impl Allowed {
    /// Reads the document's paths.
    pub fn from_spec(spec: &Value) -> Self {
        let mut routes = Vec::new();
        if let Some(paths) = spec.get("paths").and_then(Value::as_object) {
            for (path, ops) in paths {
                let methods: Vec<&str> = ops
                    .as_object()
                    .map(|o| o.keys().map(String::as_str).collect())
                    .unwrap_or_default();
                routes.push((Template::parse(path), allow_value(&methods)));
            }
        }
        Self { routes }
    }

    /// Adds a route the document does not describe (the document itself, its UI).
    pub fn with(mut self, path: &str, methods: &[&str]) -> Self {
        self.routes
            .push((Template::parse(path), allow_value(methods)));
        self
    }

    /// The `Allow` value for a path, when the document has it.
    pub fn methods(&self, path: &str) -> Option<String> {
        best(&self.routes, path).cloned()
    }
}

/// `GET, HEAD, POST`: upper case, sorted, `HEAD` wherever `GET` is.
fn allow_value(methods: &[&str]) -> String {
    let mut out: Vec<String> = methods.iter().map(|m| m.to_ascii_uppercase()).collect();
    if out.iter().any(|m| m == "GET") && !out.iter().any(|m| m == "HEAD") {
        out.push("HEAD".into());
    }
    out.sort();
    out.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn optional_properties_without_defaults_become_nullable() {
        let raw = json!({"components": {"schemas": {"A": {
            "type": "object",
            "required": ["id"],
            "properties": {
                "id": {"type": "string"},
                "expires_at": {"type": "string", "format": "date-time"},
                "top_k": {"type": "integer", "format": "uint32", "default": 5, "maximum": 100},
                "inner": {"$ref": "#/components/schemas/B"}
            }
        }}}});
        let spec = exact(&raw.to_string());
        let props = &spec["components"]["schemas"]["A"]["properties"];
        assert!(props["id"].get("nullable").is_none());
        assert_eq!(props["expires_at"]["nullable"], true);
        assert!(props["top_k"].get("nullable").is_none());
        assert_eq!(props["top_k"]["minimum"], 0);
        assert_eq!(props["top_k"]["maximum"], 100, "a tighter bound stays");
        assert_eq!(props["inner"]["allOf"][0]["$ref"], "#/components/schemas/B");
        assert_eq!(props["inner"]["nullable"], true);
    }

    #[test]
    fn integer_formats_get_their_ranges() {
        let spec = exact(
            &json!({"a": {"type": "integer", "format": "int64"},
                                 "b": {"type": "integer", "format": "uint64"},
                                 "c": {"type": "integer", "format": "int32", "minimum": 1}})
            .to_string(),
        );
        assert_eq!(spec["a"]["minimum"], i64::MIN);
        assert_eq!(spec["a"]["maximum"], i64::MAX);
        assert_eq!(spec["b"]["maximum"], u64::MAX);
        assert_eq!(spec["c"]["minimum"], 1);
        assert_eq!(spec["c"]["maximum"], i32::MAX);
    }

    #[test]
    fn allow_lists_the_methods_of_the_matching_path() {
        let spec = json!({"paths": {
            "/api/v1/documents/{id}": {"get": {}, "delete": {}},
            "/api/v1/documents/upload": {"post": {}},
            "/v1/models": {"get": {}}
        }});
        let allowed = Allowed::from_spec(&spec);
        assert_eq!(
            allowed.methods("/api/v1/documents/abc").as_deref(),
            Some("DELETE, GET, HEAD")
        );
        assert_eq!(
            allowed.methods("/api/v1/documents/upload").as_deref(),
            Some("POST")
        );
        assert_eq!(allowed.methods("/v1/models").as_deref(), Some("GET, HEAD"));
        assert_eq!(allowed.methods("/nowhere"), None);
        assert_eq!(allowed.methods("/api/v1/documents/"), None);
    }
}
