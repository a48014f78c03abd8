//! JSON request bodies checked against the types the OpenAPI document declares, before
//! the handlers' parsers see them. poem-openapi's parsers turn a number or a boolean
//! given for a string into its text (`"name": false` would name a tenant "false"); here
//! every value must have its declared type, `null` only where the document says
//! `nullable`, and a property the document closes with `additionalProperties: false` is
//! refused. Lengths, ranges and patterns stay with the parsers' validators, which
//! enforce them as declared. One walk over the document at start, one over each body.

use poem::http::Method;
use poem::{Body, Endpoint, IntoResponse, Request, Response};
use serde_json::{Map, Value};

use super::error::{ApiError, ErrorCode};
use super::spec::{Template, best};

/// How deep a body's values may nest before the check gives up (poem's parser refuses
/// what serde_json does not read; this only bounds the walk).
const MAX_DEPTH: usize = 64;

/// The request body schema of every JSON operation.
#[derive(Debug, Default)]
pub struct Bodies {
    routes: Vec<(Template, Vec<(Method, Value)>)>,
    schemas: Map<String, Value>,
}

impl Bodies {
    /// Reads the document's JSON request bodies.
    pub fn from_spec(spec: &Value) -> Self {
        let mut routes = Vec::new();
        for (path, ops) in spec
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
        {
            let mut methods = Vec::new();
            for (method, op) in ops.as_object().into_iter().flatten() {
                let json = op["requestBody"]["content"]
                    .as_object()
                    .and_then(|c| c.iter().find(|(t, _)| t.contains("json")))
                    .map(|(_, m)| m["schema"].clone());
                if let (Some(schema), Ok(method)) = (json, method.to_uppercase().parse()) {
                    methods.push((method, schema));
                }
            }
            if !methods.is_empty() {
                routes.push((Template::parse(path), methods));
            }
        }
        let schemas = spec["components"]["schemas"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        Self { routes, schemas }
    }

    fn schema(&self, method: &Method, path: &str) -> Option<&Value> {
        best(&self.routes, path)?
            .iter()
            .find(|(m, _)| m == method)
            .map(|(_, s)| s)
    }

    /// Why `value` does not have the types of `schema`, naming the first place.
    pub fn check(&self, value: &Value, schema: &Value) -> Result<(), String> {
        self.walk(value, schema, "body", 0)
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => r
                .strip_prefix("#/components/schemas/")
                .and_then(|name| self.schemas.get(name))
                .unwrap_or(&Value::Null),
            None => schema,
        }
    }

    /// Whether `value` is of the kind `schema` declares at its top.
    fn kind_fits(&self, value: &Value, schema: &Value) -> bool {
        let ty = self.resolve(schema).get("type").and_then(Value::as_str);
        matches!(
            (ty, value),
            (Some("array"), Value::Array(_))
                | (Some("object"), Value::Object(_))
                | (Some("string"), Value::String(_))
        )
    }

    fn walk(&self, value: &Value, schema: &Value, at: &str, depth: usize) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Ok(());
        }
        let schema = self.resolve(schema);
        let Some(s) = schema.as_object() else {
            return Ok(());
        };
        if value.is_null() && s.get("nullable") == Some(&Value::Bool(true)) {
            return Ok(());
        }
        for part in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            self.walk(value, part, at, depth + 1)?;
        }
        if let Some(options) = s.get("oneOf").or(s.get("anyOf")).and_then(Value::as_array) {
            let mut why = None;
            for option in options {
                match self.walk(value, option, at, depth + 1) {
                    Ok(()) => {
                        why = None;
                        break;
                    }
                    // The reason worth giving is the one of the option of the value's
                    // own kind (an array's bad item, not "must be a string").
                    Err(e) if why.is_none() || self.kind_fits(value, option) => why = Some(e),
                    Err(_) => {}
                }
            }
            if let Some(e) = why {
                return Err(e);
            }
        }
        let Some(ty) = s.get("type").and_then(Value::as_str) else {
            return Ok(());
        };
        let fits = match ty {
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "array" => value.is_array(),
            "object" => value.is_object(),
            _ => true,
        };
        if !fits {
            let found = match value {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::Number(_) => "a number",
                Value::String(_) => "a string",
                Value::Array(_) => "an array",
                Value::Object(_) => "an object",
            };
            let article = if ty == "array" || ty == "object" || ty == "integer" {
                "an"
            } else {
                "a"
            };
            return Err(format!("`{at}` must be {article} {ty}, not {found}"));
        }
        match value {
            Value::Array(items) => {
                if let Some(item) = s.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.walk(v, item, &format!("{at}[{i}]"), depth + 1)?;
                    }
                }
            }
            Value::Object(fields) => {
                let props = s.get("properties").and_then(Value::as_object);
                let extra = s.get("additionalProperties");
                for (name, v) in fields {
                    let here = if at == "body" {
                        name.clone()
                    } else {
                        format!("{at}.{name}")
                    };
                    match props.and_then(|p| p.get(name)) {
                        Some(prop) => self.walk(v, prop, &here, depth + 1)?,
                        None => match extra {
                            Some(Value::Bool(false)) => {
                                return Err(format!("`{here}` is not a known property"));
                            }
                            Some(other @ Value::Object(_)) => {
                                self.walk(v, other, &here, depth + 1)?
                            }
                            _ => {}
                        },
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Middleware: a JSON body whose types differ from the document's gets 400 naming the
/// first difference. The body is read here (within the body limit around this) and
/// handed on unchanged.
pub async fn check_body<E: Endpoint>(
    bodies: std::sync::Arc<Bodies>,
    ep: E,
    mut req: Request,
) -> poem::Result<Response> {
    let json = req
        .content_type()
        .is_some_and(|t| t.starts_with("application/json"));
    let schema = json
        .then(|| bodies.schema(req.method(), req.uri().path()))
        .flatten()
        .cloned();
    if let Some(schema) = schema {
        let bytes = req.take_body().into_bytes().await?;
        if let Ok(value) = serde_json::from_slice::<Value>(&bytes)
            && let Err(why) = bodies.check(&value, &schema)
        {
            return Err(ApiError::new(ErrorCode::BadRequest, why).into());
        }
        req.set_body(Body::from_bytes(bytes));
    }
    ep.call(req).await.map(IntoResponse::into_response)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn bodies() -> Bodies {
        Bodies::from_spec(&json!({
            "paths": {"/things/{id}": {"patch": {"requestBody": {"content": {
                "application/json; charset=utf-8": {"schema": {"$ref": "#/components/schemas/Thing"}}
            }}}}},
            "components": {"schemas": {
                "Thing": {"type": "object", "required": ["name"], "properties": {
                    "name": {"type": "string"},
                    "note": {"type": "string", "nullable": true},
                    "count": {"type": "integer"},
                    "tags": {"type": "array", "items": {"type": "string"}},
                    "input": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
                    "closed": {"type": "object", "additionalProperties": false, "properties": {"a": {"type": "boolean"}}}
                }}
            }}
        }))
    }

    #[test]
    fn values_must_have_their_declared_types() {
        let b = bodies();
        let schema = b.schema(&Method::PATCH, "/things/7").unwrap().clone();
        let check = |v: Value| b.check(&v, &schema);
        assert!(check(json!({"name": "x", "note": null, "count": 3, "tags": ["a"]})).is_ok());
        assert!(
            check(json!({"name": "x", "unknown": 1})).is_ok(),
            "open by default"
        );
        assert_eq!(
            check(json!({"name": false})).unwrap_err(),
            "`name` must be a string, not a boolean"
        );
        assert!(check(json!({"name": null})).is_err());
        assert!(check(json!({"name": "x", "count": 1.5})).is_err());
        assert_eq!(
            check(json!({"name": "x", "tags": ["a", 2]})).unwrap_err(),
            "`tags[1]` must be a string, not a number"
        );
        assert!(check(json!({"name": "x", "input": "a"})).is_ok());
        assert!(check(json!({"name": "x", "input": ["a"]})).is_ok());
        assert!(check(json!({"name": "x", "input": 4})).is_err());
        assert_eq!(
            check(json!({"name": "x", "input": ["a", 4]})).unwrap_err(),
            "`input[1]` must be a string, not a number"
        );
        assert_eq!(
            check(json!({"name": "x", "closed": {"b": true}})).unwrap_err(),
            "`closed.b` is not a known property"
        );
        assert!(b.schema(&Method::GET, "/things/7").is_none());
        assert!(b.schema(&Method::PATCH, "/other").is_none());
    }
}
