//! Grammars that make structured output a property of decoding rather than a hope.
//!
//! `response_format` and forced tool calls become GBNF grammars (through llama.cpp's own
//! JSON-schema converter) that the sampler enforces token by token. Converted grammars are
//! kept per schema ([`BoundedLru`]), so a schema repeated across requests is converted once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::schema::{self, relocate_refs, SchemaLimits};
use crate::types::{ChatCompletionRequest, ResponseFormat, Tool, ToolChoice, ToolChoiceMode};

/// How tool calls are written in the model's output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ToolCallSyntax {
    /// `<tool_call>{"name": …, "arguments": {…}}</tool_call>`, as Hermes and Qwen templates do.
    Tagged,
    /// A bare `{"name": …, "arguments": {…}}` object.
    BareJson,
}

pub(crate) const TOOL_CALL_OPEN: &str = "<tool_call>";
pub(crate) const TOOL_CALL_CLOSE: &str = "</tool_call>";

/// The constraint a request puts on decoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum OutputConstraint {
    /// Free text.
    None,
    /// The whole output must match the grammar.
    Grammar(String),
    /// Free text, until the model opens a tool call; from there the grammar applies.
    LazyGrammar { grammar: String, trigger: String },
}

/// What the engine should do with the output once it is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutputKind {
    Text,
    /// The output is tool calls only (`required` or a named tool).
    ForcedToolCalls,
    /// The output may hold tool calls (`auto`).
    MaybeToolCalls,
}

/// Builds the decoding constraint for a request.
///
/// # Errors
/// [`Error::InvalidSchema`] when a schema is not valid JSON Schema or cannot become a grammar;
/// [`Error::RequestTooLarge`] for a schema beyond `limits`, found before any conversion.
pub(crate) fn constraint_for(
    request: &ChatCompletionRequest,
    syntax: ToolCallSyntax,
    limits: &SchemaLimits,
) -> Result<(OutputConstraint, OutputKind)> {
    schema::check_request(request, limits)?;
    let tools = request.active_tools();
    if !tools.is_empty() {
        let forced: Option<Vec<&Tool>> = match &request.tool_choice {
            Some(ToolChoice::Named(named)) => {
                Some(tools.iter().filter(|tool| tool.function.name == named.function.name).collect())
            }
            Some(ToolChoice::Mode(ToolChoiceMode::Required)) => Some(tools.iter().collect()),
            _ => None,
        };
        return match forced {
            Some(candidates) => {
                let grammar = tool_call_grammar(&candidates, syntax)?;
                Ok((OutputConstraint::Grammar(grammar), OutputKind::ForcedToolCalls))
            }
            None => {
                let candidates: Vec<&Tool> = tools.iter().collect();
                let grammar = tool_call_grammar(&candidates, syntax)?;
                let constraint = match syntax {
                    ToolCallSyntax::Tagged => {
                        OutputConstraint::LazyGrammar { grammar, trigger: TOOL_CALL_OPEN.to_owned() }
                    }
                    // Without a marker there is nothing to trigger on; the parser still finds calls.
                    ToolCallSyntax::BareJson => OutputConstraint::None,
                };
                Ok((constraint, OutputKind::MaybeToolCalls))
            }
        };
    }
    let constraint = match &request.response_format {
        None | Some(ResponseFormat::Text) => OutputConstraint::None,
        Some(ResponseFormat::JsonObject) => {
            OutputConstraint::Grammar(schema_grammar(&json!({"type": "object"}), "response_format")?)
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            let schema = json_schema.schema.clone().unwrap_or_else(|| json!({"type": "object"}));
            OutputConstraint::Grammar(schema_grammar(&schema, "response_format.json_schema.schema")?)
        }
    };
    Ok((constraint, OutputKind::Text))
}

/// Checks that `schema` is valid JSON Schema; see [`schema::check_validity`].
///
/// # Errors
/// [`Error::InvalidSchema`] with the first problem found.
pub fn check_schema(schema: &Value, param: &str) -> Result<()> {
    schema::check_validity(schema, param)
}

/// Converted schemas kept for later requests.
const CONVERTED_SCHEMAS: usize = 256;
/// Their schemas' and grammars' text, in bytes.
const CONVERTED_SCHEMA_BYTES: usize = 16 << 20;

type SchemaGrammars = Mutex<BoundedLru<String, Arc<str>>>;

fn converted() -> &'static SchemaGrammars {
    static CONVERTED: OnceLock<SchemaGrammars> = OnceLock::new();
    CONVERTED.get_or_init(|| Mutex::new(BoundedLru::new(CONVERTED_SCHEMAS, CONVERTED_SCHEMA_BYTES)))
}

/// A GBNF grammar for JSON values matching `schema`: checking and converting a schema takes
/// milliseconds, so each one is converted once (see [`converted`]); only schemas that passed
/// are kept.
fn schema_grammar(schema: &Value, param: &str) -> Result<String> {
    let key = schema.to_string();
    if let Some(grammar) = converted().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).get(&key) {
        return Ok(grammar.to_string());
    }
    check_schema(schema, param)?;
    let grammar = llama_cpp_2::json_schema_to_grammar(&key).map_err(|err| Error::InvalidSchema {
        param: param.to_owned(),
        reason: format!("llama.cpp cannot turn it into a grammar: {err}"),
    })?;
    let bytes = key.len() + grammar.len();
    converted().lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(key, Arc::from(grammar.as_str()), bytes);
    Ok(grammar)
}

/// A least-recently-used map bounded by entry count and by the bytes its entries declare.
/// Meant for tens to hundreds of entries: eviction scans them.
pub(crate) struct BoundedLru<K, V> {
    entries: HashMap<K, (V, usize, u64)>,
    max_entries: usize,
    max_bytes: usize,
    bytes: usize,
    clock: u64,
}

impl<K: Eq + Hash + Clone, V> BoundedLru<K, V> {
    pub(crate) fn new(max_entries: usize, max_bytes: usize) -> Self {
        BoundedLru { entries: HashMap::new(), max_entries, max_bytes, bytes: 0, clock: 0 }
    }

    /// The value under `key`, now the most recently used.
    pub(crate) fn get(&mut self, key: &K) -> Option<&V> {
        self.clock += 1;
        let clock = self.clock;
        self.entries.get_mut(key).map(|(value, _, used)| {
            *used = clock;
            &*value
        })
    }

    /// Stores `value` (declared `bytes` large), evicting the least recently used entries
    /// beyond the bounds. A value larger than the byte bound alone is not stored.
    pub(crate) fn insert(&mut self, key: K, value: V, bytes: usize) {
        if bytes > self.max_bytes || self.max_entries == 0 {
            return;
        }
        self.clock += 1;
        if let Some((_, old, _)) = self.entries.insert(key, (value, bytes, self.clock)) {
            self.bytes -= old;
        }
        self.bytes += bytes;
        while self.entries.len() > self.max_entries || self.bytes > self.max_bytes {
            let Some(oldest) = self.entries.iter().min_by_key(|(_, (_, _, used))| *used).map(|(key, _)| key.clone())
            else {
                break;
            };
            if let Some((_, size, _)) = self.entries.remove(&oldest) {
                self.bytes -= size;
            }
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// A grammar for one call of one of `tools`, its arguments matching that tool's parameters.
fn tool_call_grammar(tools: &[&Tool], syntax: ToolCallSyntax) -> Result<String> {
    let mut alternatives = Vec::with_capacity(tools.len());
    // Each tool's parameters move under `$defs`, their local `$ref`s rewritten to match, so a
    // `#/$defs/…` of a nested model still resolves inside the call schema.
    let mut parameters_by_tool = serde_json::Map::new();
    for (index, tool) in tools.iter().enumerate() {
        let parameters =
            tool.function.parameters.clone().unwrap_or_else(|| json!({"type": "object", "properties": {}}));
        check_schema(&parameters, &format!("tools[{}].function.parameters", tool.function.name))?;
        let name = format!("tool{index}-arguments");
        parameters_by_tool.insert(name.clone(), relocate_refs(&parameters, &format!("/$defs/{name}")));
        alternatives.push(json!({
            "type": "object",
            "properties": {
                "name": {"const": tool.function.name},
                "arguments": {"$ref": format!("#/$defs/{name}")},
            },
            "required": ["name", "arguments"],
            "additionalProperties": false,
        }));
    }
    let mut call_schema =
        if alternatives.len() == 1 { alternatives.remove(0) } else { json!({ "anyOf": alternatives }) };
    call_schema["$defs"] = Value::Object(parameters_by_tool);
    let call_grammar = schema_grammar(&call_schema, "tools")?;
    Ok(match syntax {
        ToolCallSyntax::BareJson => call_grammar,
        ToolCallSyntax::Tagged => {
            let renamed = rename_root(&call_grammar, "tool-call");
            format!("root ::= \"{TOOL_CALL_OPEN}\" \"\\n\"? tool-call \"\\n\"? \"{TOOL_CALL_CLOSE}\"\n{renamed}")
        }
    })
}

/// Renames the `root` rule of a converted grammar, so it can be embedded in another.
fn rename_root(grammar: &str, name: &str) -> String {
    grammar
        .lines()
        .map(|line| match line.strip_prefix("root ::=") {
            Some(rest) => format!("{name} ::={rest}"),
            None => line.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ChatMessage;

    #[test]
    fn invalid_schema_is_rejected_before_decoding() {
        let err = check_schema(&json!({"type": "nonsense"}), "p").unwrap_err();
        assert!(matches!(err, Error::InvalidSchema { .. }), "{err}");
        let err = check_schema(&json!(42), "p").unwrap_err();
        assert!(err.to_string().contains("object or a boolean"), "{err}");
    }

    #[test]
    fn lru_evicts_the_least_recently_used_by_count_and_by_bytes() {
        let mut lru = BoundedLru::new(2, 10);
        lru.insert("a", 1, 3);
        lru.insert("b", 2, 3);
        assert_eq!(lru.get(&"a"), Some(&1)); // "b" is now the least recently used
        lru.insert("c", 3, 3);
        assert_eq!(lru.get(&"a"), Some(&1));
        assert_eq!(lru.get(&"b"), None);
        assert_eq!(lru.get(&"c"), Some(&3));
        lru.insert("d", 4, 8); // 3 + 3 + 8 > 10: both older entries go
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.get(&"d"), Some(&4));
        lru.insert("e", 5, 11); // larger than the bound alone: not kept, nothing evicted
        assert_eq!(lru.len(), 1);
        assert_eq!(lru.get(&"e"), None);
        lru.insert("d", 6, 2); // replacing an entry accounts its new size
        lru.insert("f", 7, 8);
        assert_eq!(lru.get(&"d"), Some(&6));
        assert_eq!(lru.get(&"f"), Some(&7));
    }

    #[test]
    fn a_converted_schema_is_reused_and_an_invalid_one_is_not_kept() {
        let schema = json!({"type": "object", "properties": {"lru_probe_field": {"type": "integer"}}});
        let first = schema_grammar(&schema, "p").unwrap();
        assert!(converted().lock().unwrap().get(&schema.to_string()).is_some());
        assert_eq!(schema_grammar(&schema, "p").unwrap(), first);
        let invalid = json!({"type": "nonsense", "lru_probe": true});
        assert!(schema_grammar(&invalid, "p").is_err());
        assert!(converted().lock().unwrap().get(&invalid.to_string()).is_none());
    }

    /// What instructor 1.x sends as `tools[0].function.parameters` for
    /// `class User(BaseModel): name: str; age: int` and
    /// `class Team(BaseModel): name: str; members: list[User]; lead: User`.
    pub(crate) fn instructor_nested_parameters() -> Value {
        json!({
            "$defs": {
                "User": {
                    "properties": {
                        "name": {"title": "Name", "type": "string"},
                        "age": {"title": "Age", "type": "integer"}
                    },
                    "required": ["name", "age"],
                    "title": "User",
                    "type": "object"
                }
            },
            "properties": {
                "name": {"title": "Name", "type": "string"},
                "members": {"items": {"$ref": "#/$defs/User"}, "title": "Members", "type": "array"},
                "lead": {"$ref": "#/$defs/User"}
            },
            "required": ["name", "members", "lead"],
            "type": "object"
        })
    }

    #[test]
    fn tool_parameters_with_defs_and_definitions_become_grammars() {
        let mut legacy = instructor_nested_parameters();
        let defs = legacy.as_object_mut().unwrap().remove("$defs").unwrap();
        legacy["definitions"] = defs;
        legacy["properties"]["lead"]["$ref"] = json!("#/definitions/User");
        legacy["properties"]["members"]["items"]["$ref"] = json!("#/definitions/User");
        for (choice, syntax) in [
            (ToolChoice::named("Team"), ToolCallSyntax::Tagged),
            (ToolChoice::Mode(ToolChoiceMode::Required), ToolCallSyntax::BareJson),
        ] {
            let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("x")]);
            request.tools = Some(vec![
                Tool::function("Team", "Correctly extracted `Team`", instructor_nested_parameters()),
                Tool::function("Legacy", "d", legacy.clone()),
            ]);
            request.tool_choice = Some(choice);
            let (constraint, _) = constraint_for(&request, syntax, &SchemaLimits::default()).unwrap();
            let OutputConstraint::Grammar(grammar) = constraint else { panic!("expected a grammar") };
            assert!(grammar.contains("User"), "{grammar}");
        }
    }

    #[test]
    fn forced_tool_grammar_embeds_the_call_schema() {
        let mut request = ChatCompletionRequest::new(vec![ChatMessage::user("x")]);
        request.tools = Some(vec![Tool::function(
            "lookup",
            "d",
            json!({"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}),
        )]);
        request.tool_choice = Some(ToolChoice::named("lookup"));
        let (constraint, kind) = constraint_for(&request, ToolCallSyntax::Tagged, &SchemaLimits::default()).unwrap();
        assert_eq!(kind, OutputKind::ForcedToolCalls);
        let OutputConstraint::Grammar(grammar) = constraint else { panic!("expected a grammar") };
        assert!(grammar.starts_with("root ::= \"<tool_call>\""), "{grammar}");
        assert!(grammar.contains("tool-call ::="), "{grammar}");
        assert!(grammar.contains("lookup"), "{grammar}");
    }
}
