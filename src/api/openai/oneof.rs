//! OpenAI fields that take either one value or a list (`input`, `stop`, a message's
//! `content`), with schemas that say exactly what is accepted: `oneOf` a bounded string
//! and a bounded array.

use std::borrow::Cow;

use poem_openapi::registry::{MetaSchema, MetaSchemaRef, Registry};
use poem_openapi::types::{ParseError, ParseFromJSON, ParseResult, ToJSON, Type};
use serde_json::Value;

/// A string, or an array of `MIN..=MAX` strings; every string 1 to `CHARS` characters.
/// Reads as the list of strings either way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StringOrList<const MIN: usize, const MAX: usize, const CHARS: usize>(pub Vec<String>);

fn string_schema(chars: usize) -> MetaSchema {
    MetaSchema {
        min_length: Some(1),
        max_length: Some(chars),
        ..MetaSchema::new("string")
    }
}

/// `oneOf` the string schema `one` and an array of `min..=max` `items`.
fn one_or_list(one: MetaSchema, items: MetaSchemaRef, min: usize, max: usize) -> MetaSchemaRef {
    let list = MetaSchema {
        items: Some(Box::new(items)),
        min_items: Some(min),
        max_items: Some(max),
        ..MetaSchema::new("array")
    };
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        one_of: vec![
            MetaSchemaRef::Inline(Box::new(one)),
            MetaSchemaRef::Inline(Box::new(list)),
        ],
        ..MetaSchema::ANY
    }))
}

impl<const MIN: usize, const MAX: usize, const CHARS: usize> Type
    for StringOrList<MIN, MAX, CHARS>
{
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        format!("string_or_list_{MIN}_{MAX}_{CHARS}").into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let item = MetaSchemaRef::Inline(Box::new(string_schema(CHARS)));
        one_or_list(string_schema(CHARS), item, MIN, MAX)
    }

    fn register(_: &mut Registry) {}

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

/// A text of 1 to `chars` characters, or why not.
fn bounded(s: String, chars: usize) -> Result<String, String> {
    match s.chars().count() {
        0 => Err("a text must not be empty".into()),
        n if n > chars => Err(format!("a text is {n} characters; at most {chars}")),
        _ => Ok(s),
    }
}

impl<const MIN: usize, const MAX: usize, const CHARS: usize> ParseFromJSON
    for StringOrList<MIN, MAX, CHARS>
{
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        match value.unwrap_or_default() {
            Value::String(s) => Ok(Self(vec![bounded(s, CHARS).map_err(ParseError::custom)?])),
            Value::Array(items) => {
                if items.len() < MIN || items.len() > MAX {
                    return Err(ParseError::custom(format!(
                        "the list holds {} items; {MIN} to {MAX} are allowed",
                        items.len()
                    )));
                }
                let texts = items
                    .into_iter()
                    .map(|v| match v {
                        Value::String(s) => bounded(s, CHARS),
                        Value::Number(_) | Value::Array(_) => {
                            Err("token arrays are not accepted: send the texts themselves".into())
                        }
                        other => Err(format!("expected a string, found {other}")),
                    })
                    .collect::<Result<Vec<_>, String>>()
                    .map_err(ParseError::custom)?;
                Ok(Self(texts))
            }
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl<const MIN: usize, const MAX: usize, const CHARS: usize> ToJSON
    for StringOrList<MIN, MAX, CHARS>
{
    fn to_json(&self) -> Option<Value> {
        Some(Value::from(self.0.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Input = StringOrList<1, 3, 5>;

    fn parse(v: Value) -> Result<Vec<String>, String> {
        Input::parse_from_json(Some(v))
            .map(|i| i.0)
            .map_err(|e| e.into_message())
    }

    #[test]
    fn one_text_or_a_bounded_list_of_texts() {
        use serde_json::json;
        assert_eq!(parse(json!("hello")).unwrap(), ["hello"]);
        assert_eq!(parse(json!(["a", "bé"])).unwrap(), ["a", "bé"]);
        assert!(parse(json!("")).is_err());
        assert!(parse(json!("toolong")).is_err());
        assert!(parse(json!([])).is_err());
        assert!(parse(json!(["a", "b", "c", "d"])).is_err());
        assert!(parse(json!(["a", 1])).unwrap_err().contains("token arrays"));
        assert!(parse(json!(7)).is_err());
        assert!(parse(json!(null)).is_err());
    }
}

/// The kind of a content part; only text is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, poem_openapi::Enum)]
#[oai(rename_all = "lowercase")]
pub enum PartKind {
    /// A piece of text.
    Text,
}

/// One part of a message's content.
#[derive(Debug, Clone, poem_openapi::Object)]
pub struct TextPart {
    /// `text`.
    #[oai(rename = "type")]
    pub kind: PartKind,
    /// The text.
    #[oai(validator(max_length = 65536))]
    pub text: String,
}

/// A message's content: a string, or an array of text parts (joined by line breaks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content(pub String);

/// Characters of a message's content, at most.
pub const MAX_CONTENT_CHARS: usize = 65_536;
/// Parts of one message's content, at most.
pub const MAX_PARTS: usize = 64;

impl Type for Content {
    const IS_REQUIRED: bool = true;
    type RawValueType = Self;
    type RawElementValueType = Self;

    fn name() -> Cow<'static, str> {
        "message_content".into()
    }

    fn schema_ref() -> MetaSchemaRef {
        let text = MetaSchema {
            max_length: Some(MAX_CONTENT_CHARS),
            ..MetaSchema::new("string")
        };
        one_or_list(text, <TextPart as Type>::schema_ref(), 1, MAX_PARTS)
    }

    fn register(registry: &mut Registry) {
        <TextPart as Type>::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        Some(self)
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(self.as_raw_value().into_iter())
    }
}

impl ParseFromJSON for Content {
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let too_long = || {
            ParseError::custom(format!(
                "a message's content is at most {MAX_CONTENT_CHARS} characters"
            ))
        };
        match value.unwrap_or_default() {
            Value::String(s) if s.chars().count() > MAX_CONTENT_CHARS => Err(too_long()),
            Value::String(s) => Ok(Self(s)),
            Value::Array(items) => {
                if items.is_empty() || items.len() > MAX_PARTS {
                    return Err(ParseError::custom(format!(
                        "content parts: 1 to {MAX_PARTS} are allowed"
                    )));
                }
                let mut texts = Vec::with_capacity(items.len());
                for item in items {
                    let kind = item.get("type").and_then(Value::as_str).map(str::to_owned);
                    let part = TextPart::parse_from_json(Some(item)).map_err(|e| match kind {
                        Some(k) if k != "text" => ParseError::custom(format!(
                            "content parts of type `{k}` are not accepted; only `text`"
                        )),
                        _ => ParseError::custom(e.into_message()),
                    })?;
                    texts.push(part.text);
                }
                Ok(Self(texts.join("\n")))
            }
            other => Err(ParseError::expected_type(other)),
        }
    }
}

impl ToJSON for Content {
    fn to_json(&self) -> Option<Value> {
        Some(Value::String(self.0.clone()))
    }
}
