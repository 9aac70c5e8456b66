//! The JSON Schemas a request carries (`response_format` and tool `parameters`), checked in
//! full before routing: against the metaschema, every `$ref` resolved, every `pattern`
//! compiled, and within [`SchemaLimits`]. A schema that fails here never reaches a backend, so
//! no SLM attempt is the first to notice, and no call escalates because of it.
//!
//! Also: embedding a tool's `parameters` inside a larger schema (the tool-call grammar) with
//! its local `$ref`s (`#/$defs/…`, `#/definitions/…`, `#`) rewritten to the new position.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::types::{ChatCompletionRequest, ResponseFormat};

/// Bounds on a request's schemas, so no request can make a grammar that stalls the engine.
/// `[slm]` sets them (`max_schema_bytes`, `max_schema_enum_values`, `max_schema_repeat`,
/// `grammar_timeout_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SchemaLimits {
    /// A schema's size as compact JSON. Beyond it: [`Error::RequestTooLarge`]. Default 256 KiB.
    pub max_bytes: usize,
    /// `enum` values (and `const`s) over the whole schema. Beyond it: [`Error::RequestTooLarge`].
    /// Default 4096. A 100,000-value enum takes llama.cpp minutes to turn into a grammar and
    /// every decoding step of it tracks every value.
    pub max_enum_values: usize,
    /// The most any `minItems`, `maxItems`, `minLength`, `maxLength`, `minProperties`,
    /// `maxProperties` may say. Beyond it: [`Error::InvalidSchema`]. Default 10,000. A grammar
    /// spells repetition bounds out rule by rule.
    pub max_repeat: u64,
    /// How long turning a request's schemas into a grammar may take, off the engine's worker
    /// thread, before the request fails with [`Error::RequestTooLarge`]. Default 10 s.
    pub grammar_timeout: Duration,
}

impl Default for SchemaLimits {
    fn default() -> Self {
        SchemaLimits {
            max_bytes: 256 << 10,
            max_enum_values: 4096,
            max_repeat: 10_000,
            grammar_timeout: Duration::from_secs(10),
        }
    }
}

/// The repetition keywords [`SchemaLimits::max_repeat`] bounds.
const REPEAT_KEYWORDS: [&str; 6] = ["minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties"];

/// Checks every schema in `request`: `response_format.json_schema.schema` and each tool's
/// `parameters`.
///
/// # Errors
/// [`Error::InvalidSchema`] naming the schema's parameter and the problem (with its JSON
/// pointer), or [`Error::RequestTooLarge`] beyond `limits`.
pub fn check_request(request: &ChatCompletionRequest, limits: &SchemaLimits) -> Result<()> {
    if let Some(ResponseFormat::JsonSchema { json_schema }) = &request.response_format {
        if let Some(schema) = &json_schema.schema {
            check(schema, "response_format.json_schema.schema", limits)?;
        }
    }
    let mut enum_values = 0;
    for (index, tool) in request.tools.iter().flatten().enumerate() {
        if let Some(parameters) = &tool.function.parameters {
            let param = format!("tools[{index}].function.parameters");
            check(parameters, &param, limits)?;
            enum_values += count_enum_values(parameters);
            if enum_values > limits.max_enum_values {
                return Err(Error::RequestTooLarge {
                    param,
                    reason: format!(
                        "the tools' schemas have {enum_values} enum values together, more than the limit of {} \
                         (max_schema_enum_values)",
                        limits.max_enum_values
                    ),
                });
            }
        }
    }
    Ok(())
}

/// Checks one schema: its bounds first (cheap), then JSON Schema validity.
///
/// # Errors
/// As [`check_request`].
pub fn check(schema: &Value, param: &str, limits: &SchemaLimits) -> Result<()> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(invalid(param, format!("a schema must be an object or a boolean, not {schema}")));
    }
    let bytes = serde_json::to_vec(schema).map(|text| text.len()).unwrap_or(usize::MAX);
    if bytes > limits.max_bytes {
        return Err(Error::RequestTooLarge {
            param: param.to_owned(),
            reason: format!(
                "the schema is {bytes} bytes, more than the limit of {} (max_schema_bytes)",
                limits.max_bytes
            ),
        });
    }
    let enum_values = count_enum_values(schema);
    if enum_values > limits.max_enum_values {
        return Err(Error::RequestTooLarge {
            param: param.to_owned(),
            reason: format!(
                "the schema has {enum_values} enum values, more than the limit of {} (max_schema_enum_values)",
                limits.max_enum_values
            ),
        });
    }
    check_repeats(schema, param, limits.max_repeat)?;
    check_validity(schema, param)
}

/// Validity alone: the metaschema (draft 2020-12 unless `$schema` names another), every `$ref`
/// resolvable, every `pattern` a regex.
///
/// # Errors
/// [`Error::InvalidSchema`] with the first problem and where it is.
pub fn check_validity(schema: &Value, param: &str) -> Result<()> {
    if !(schema.is_object() || schema.is_boolean()) {
        return Err(invalid(param, format!("a schema must be an object or a boolean, not {schema}")));
    }
    // Building a validator checks the schema against its metaschema, resolves every `$ref`
    // and compiles every `pattern`.
    jsonschema::validator_for(schema).map(|_| ()).map_err(|err| {
        let at = err.instance_path.to_string();
        let reason = if at.is_empty() { err.to_string() } else { format!("at {at}: {err}") };
        invalid(param, reason)
    })
}

fn invalid(param: &str, reason: String) -> Error {
    Error::InvalidSchema { param: param.to_owned(), reason }
}

/// Every value of a subschema (not a property that happens to be called so).
fn each_object<'a>(schema: &'a Value, mut visit: impl FnMut(&'a Map<String, Value>, &str) -> Result<()>) -> Result<()> {
    let mut stack: Vec<(&Value, String)> = vec![(schema, String::new())];
    while let Some((value, pointer)) = stack.pop() {
        match value {
            Value::Object(object) => {
                visit(object, &pointer)?;
                for (key, child) in object {
                    // `enum`, `const`, `default` and `examples` hold instances, not schemas.
                    if !matches!(key.as_str(), "enum" | "const" | "default" | "examples") {
                        stack.push((child, format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"))));
                    }
                }
            }
            Value::Array(items) => {
                for (index, child) in items.iter().enumerate() {
                    stack.push((child, format!("{pointer}/{index}")));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

fn count_enum_values(schema: &Value) -> usize {
    let mut count = 0;
    let _ = each_object(schema, |object, _| {
        count += object.get("enum").and_then(Value::as_array).map_or(0, Vec::len);
        count += usize::from(object.contains_key("const"));
        Ok(())
    });
    count
}

fn check_repeats(schema: &Value, param: &str, max_repeat: u64) -> Result<()> {
    each_object(schema, |object, pointer| {
        for keyword in REPEAT_KEYWORDS {
            let Some(bound) = object.get(keyword).and_then(Value::as_f64) else { continue };
            if bound > max_repeat as f64 {
                let at = if pointer.is_empty() { "/".to_owned() } else { pointer.to_owned() };
                return Err(invalid(
                    param,
                    format!("{keyword} = {bound} at {at} is more than the limit of {max_repeat} (max_schema_repeat)"),
                ));
            }
        }
        Ok(())
    })
}

/// `parameters` rewritten to live at `pointer` (a JSON pointer, e.g. `/$defs/tool0`) of a
/// larger schema: each local `$ref` (`#`, `#/$defs/X`, `#/definitions/X`, any `#/…`) gets
/// `pointer` put in front, so it still names the same subschema. Pydantic writes nested
/// models as `$ref: "#/$defs/Model"`; without this they dangle once embedded.
pub(crate) fn relocate_refs(parameters: &Value, pointer: &str) -> Value {
    match parameters {
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(key, value)| {
                    let value = match (key.as_str(), value) {
                        ("$ref", Value::String(reference)) => match reference.strip_prefix('#') {
                            Some(rest) => Value::String(format!("#{pointer}{rest}")),
                            None => value.clone(),
                        },
                        // Instances, not schemas: a `$ref` key inside them is data.
                        ("enum" | "const" | "default" | "examples", _) => value.clone(),
                        _ => relocate_refs(value, pointer),
                    };
                    (key.clone(), value)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|item| relocate_refs(item, pointer)).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn reason(schema: Value) -> String {
        match check(&schema, "p", &SchemaLimits::default()) {
            Err(Error::InvalidSchema { reason, .. }) => reason,
            other => panic!("expected InvalidSchema for {schema}, got {other:?}"),
        }
    }

    #[test]
    fn the_reported_invalid_schemas_are_rejected_with_where() {
        assert!(reason(json!({"type": 5})).contains("/type"), "{}", reason(json!({"type": 5})));
        let dangling = reason(json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}}));
        assert!(dangling.contains("Missing"), "{dangling}");
        let pattern = reason(json!({"type": "string", "pattern": "(unclosed"}));
        assert!(pattern.contains("pattern") || pattern.contains("regex") || pattern.contains("unclosed"), "{pattern}");
        let repeat = reason(json!({"type": "object", "properties": {"xs": {"type": "array", "minItems": 1_000_000}}}));
        assert!(repeat.contains("minItems") && repeat.contains("/properties/xs"), "{repeat}");
        assert!(reason(json!(42)).contains("object or a boolean"));
    }

    #[test]
    fn a_property_named_like_a_keyword_is_not_a_keyword() {
        let schema = json!({"type": "object", "properties": {"minItems": {"type": "integer"}, "enum": {"type": "string"}},
                            "default": {"minLength": 1_000_000}});
        check(&schema, "p", &SchemaLimits::default()).unwrap();
    }

    #[test]
    fn huge_schemas_are_too_large() {
        let values: Vec<String> = (0..5000).map(|n| format!("v{n}")).collect();
        let err = check(&json!({"enum": values}), "p", &SchemaLimits::default()).unwrap_err();
        assert!(matches!(&err, Error::RequestTooLarge { reason, .. } if reason.contains("5000 enum values")), "{err}");
        assert_eq!(err.status_code(), 413);
        let tight = SchemaLimits { max_bytes: 64, ..SchemaLimits::default() };
        let err = check(&json!({"description": "x".repeat(100)}), "p", &tight).unwrap_err();
        assert!(matches!(err, Error::RequestTooLarge { .. }), "{err}");
    }

    #[test]
    fn relocated_refs_still_resolve() {
        let parameters = json!({
            "type": "object",
            "properties": {"user": {"$ref": "#/$defs/User"}, "old": {"$ref": "#/definitions/Old"}},
            "$defs": {"User": {"type": "object", "properties": {"friend": {"$ref": "#"}}}},
            "definitions": {"Old": {"type": "string", "enum": [{"$ref": "#/not/a/schema"}]}},
        });
        let wrapper = json!({"$defs": {"tool0": relocate_refs(&parameters, "/$defs/tool0")}, "$ref": "#/$defs/tool0"});
        assert_eq!(wrapper["$defs"]["tool0"]["properties"]["user"]["$ref"], "#/$defs/tool0/$defs/User");
        assert_eq!(wrapper["$defs"]["tool0"]["$defs"]["User"]["properties"]["friend"]["$ref"], "#/$defs/tool0");
        assert_eq!(wrapper["$defs"]["tool0"]["definitions"]["Old"]["enum"][0]["$ref"], "#/not/a/schema");
        check_validity(&wrapper, "p").unwrap();
    }
}
