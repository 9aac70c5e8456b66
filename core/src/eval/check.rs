//! The check types: how an eval task's answer is judged right or wrong. The shapes are
//! documented in `tests/eval/FORMAT.md` and in [`super`].

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::types::ChatCompletion;

/// How a task's answer is judged. Deserialised from the task line's `check` object, tagged
/// by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// The answer is a JSON object and each listed field is present and loosely equal
    /// ([`loosely_equal`]); other fields are allowed.
    JsonFields { fields: Map<String, Value> },
    /// The answer's JSON equals `value` (key order ignored, numbers compared as numbers,
    /// strings exact).
    JsonEqual { value: Value },
    /// Exactly one of `labels` appears in the answer as a whole word or phrase
    /// (case-insensitive), and it is `expected`.
    Label { labels: Vec<String>, expected: String },
    /// The answer has a tool call named `name` whose arguments hold each listed argument,
    /// loosely equal.
    ToolCall {
        name: String,
        #[serde(default)]
        arguments: Map<String, Value>,
    },
    /// Every term appears in the answer, case-insensitive.
    ContainsAll { terms: Vec<String> },
    /// The pattern (Rust `regex` syntax) matches somewhere in the answer.
    Regex { pattern: String },
}

/// The check types' names, as a task line spells them.
pub const CHECK_TYPES: [&str; 6] = ["json_fields", "json_equal", "label", "tool_call", "contains_all", "regex"];

/// A judged answer: right, or wrong and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub correct: bool,
    /// Why the answer is wrong; `None` when it is right.
    pub reason: Option<String>,
}

impl Verdict {
    fn right() -> Self {
        Verdict { correct: true, reason: None }
    }

    fn wrong(reason: impl Into<String>) -> Self {
        Verdict { correct: false, reason: Some(reason.into()) }
    }
}

impl Check {
    /// Checks the check itself, before anything runs: labels that can be told apart, an
    /// `expected` among them, terms to look for, a pattern that compiles.
    ///
    /// # Errors
    /// What is wrong with it, for the caller to put in front of the line number.
    pub fn validate(&self) -> std::result::Result<(), String> {
        match self {
            Check::JsonFields { fields } if fields.is_empty() => Err("json_fields needs at least one field".into()),
            Check::Label { labels, expected } => {
                if labels.len() < 2 {
                    return Err("label needs at least two labels".into());
                }
                if labels.iter().any(|label| label.trim().is_empty()) {
                    return Err("label's labels must not be empty".into());
                }
                if !labels.iter().any(|label| label.trim().eq_ignore_ascii_case(expected.trim())) {
                    return Err(format!("label's expected {expected:?} is not one of its labels {labels:?}"));
                }
                Ok(())
            }
            Check::ToolCall { name, .. } if name.trim().is_empty() => Err("tool_call needs a name".into()),
            Check::ContainsAll { terms } if terms.is_empty() || terms.iter().any(|term| term.is_empty()) => {
                Err("contains_all needs at least one term, none empty".into())
            }
            Check::Regex { pattern } => {
                regex::Regex::new(pattern).map(|_| ()).map_err(|err| format!("regex pattern does not compile: {err}"))
            }
            _ => Ok(()),
        }
    }

    /// Judges `completion`'s first choice.
    pub fn judge(&self, completion: &ChatCompletion) -> Verdict {
        let text = completion.content();
        match self {
            Check::JsonFields { fields } => match answer_json(text) {
                Ok(Value::Object(answer)) => match fields.iter().find(|(key, want)| !field_matches(&answer, key, want))
                {
                    None => Verdict::right(),
                    Some((key, want)) => match answer.get(key) {
                        None => Verdict::wrong(format!("field {key:?} is missing")),
                        Some(got) => Verdict::wrong(format!("field {key:?} is {got}, expected {want}")),
                    },
                },
                Ok(other) => Verdict::wrong(format!("the answer is {}, not a JSON object", kind_of(&other))),
                Err(reason) => Verdict::wrong(reason),
            },
            Check::JsonEqual { value } => match answer_json(text) {
                Ok(answer) if strictly_equal(&answer, value) => Verdict::right(),
                Ok(answer) => Verdict::wrong(format!("the answer is {answer}, expected {value}")),
                Err(reason) => Verdict::wrong(reason),
            },
            Check::Label { labels, expected } => {
                let found: Vec<&String> = labels.iter().filter(|label| contains_word(text, label)).collect();
                match found.as_slice() {
                    [only] if only.trim().eq_ignore_ascii_case(expected.trim()) => Verdict::right(),
                    [only] => Verdict::wrong(format!("the answer says {only:?}, expected {expected:?}")),
                    [] => Verdict::wrong(format!("none of the labels {labels:?} appears in the answer")),
                    many => Verdict::wrong(format!("more than one label appears in the answer: {many:?}")),
                }
            }
            Check::ToolCall { name, arguments } => judge_tool_call(completion, name, arguments),
            Check::ContainsAll { terms } => {
                let lower = text.to_lowercase();
                let missing: Vec<&String> = terms.iter().filter(|term| !lower.contains(&term.to_lowercase())).collect();
                match missing.is_empty() {
                    true => Verdict::right(),
                    false => Verdict::wrong(format!("the answer lacks {missing:?}")),
                }
            }
            Check::Regex { pattern } => match regex::Regex::new(pattern) {
                Ok(regex) if regex.is_match(text) => Verdict::right(),
                Ok(_) => Verdict::wrong(format!("the answer does not match /{pattern}/")),
                Err(err) => Verdict::wrong(format!("the pattern does not compile: {err}")),
            },
        }
    }
}

fn judge_tool_call(completion: &ChatCompletion, name: &str, arguments: &Map<String, Value>) -> Verdict {
    let calls = completion.choices.first().and_then(|choice| choice.message.tool_calls.as_deref()).unwrap_or(&[]);
    if calls.is_empty() {
        return Verdict::wrong(format!("no tool call (expected {name})"));
    }
    let named: Vec<_> = calls.iter().filter(|call| call.function.name == name).collect();
    if named.is_empty() {
        let names: Vec<&str> = calls.iter().map(|call| call.function.name.as_str()).collect();
        return Verdict::wrong(format!("called {names:?}, expected {name}"));
    }
    let mut last_reason = String::new();
    for call in named {
        let parsed: Value = match serde_json::from_str(&call.function.arguments) {
            Ok(parsed) => parsed,
            Err(err) => {
                last_reason = format!("{name}'s arguments are not JSON: {err}");
                continue;
            }
        };
        let Value::Object(given) = parsed else {
            last_reason = format!("{name}'s arguments are not a JSON object");
            continue;
        };
        match arguments.iter().find(|(key, want)| !field_matches(&given, key, want)) {
            None => return Verdict::right(),
            Some((key, want)) => {
                last_reason = match given.get(key) {
                    None => format!("{name} was called without argument {key:?}"),
                    Some(got) => format!("{name}'s argument {key:?} is {got}, expected {want}"),
                }
            }
        }
    }
    Verdict::wrong(last_reason)
}

fn field_matches(answer: &Map<String, Value>, key: &str, want: &Value) -> bool {
    answer.get(key).is_some_and(|got| loosely_equal(got, want))
}

/// Loose equality: strings equal after trimming, ignoring case; numbers equal as numbers;
/// arrays item by item in order; objects key by key (the same keys); nothing else converts
/// (a number never equals a string).
pub fn loosely_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(a), Value::String(b)) => a.trim().to_lowercase() == b.trim().to_lowercase(),
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| loosely_equal(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter().all(|(key, value)| b.get(key).is_some_and(|other| loosely_equal(value, other)))
        }
        _ => a == b,
    }
}

/// Exact equality, except that numbers compare as numbers (`1` = `1.0`).
pub fn strictly_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(a), Value::Number(b)) => numbers_equal(a, b),
        (Value::Array(a), Value::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| strictly_equal(a, b)),
        (Value::Object(a), Value::Object(b)) => {
            a.len() == b.len()
                && a.iter().all(|(key, value)| b.get(key).is_some_and(|other| strictly_equal(value, other)))
        }
        _ => a == b,
    }
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number) -> bool {
    match (a.as_i64(), b.as_i64(), a.as_u64(), b.as_u64()) {
        (Some(a), Some(b), _, _) => a == b,
        (_, _, Some(a), Some(b)) => a == b,
        _ => match (a.as_f64(), b.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
    }
}

/// The answer as JSON: the text trimmed and, if one Markdown code fence wraps all of it,
/// unwrapped.
///
/// # Errors
/// Why it is not JSON.
pub fn answer_json(text: &str) -> std::result::Result<Value, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("the answer is empty, not JSON".into());
    }
    let body = unfence(trimmed).unwrap_or(trimmed);
    serde_json::from_str(body).map_err(|err| format!("the answer is not JSON ({err})"))
}

/// The inside of a fence that wraps all of `text` (```` ```json\n…\n``` ````), if one does.
fn unfence(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("```")?;
    let inner = rest.strip_suffix("```")?;
    // The info string (`json`) runs to the first newline.
    let (_, body) = inner.split_once('\n')?;
    (!body.contains("```")).then_some(body.trim())
}

/// Whether `phrase` appears in `text` as a whole word or phrase, ignoring case: the
/// characters either side (if any) are not letters, digits or `_`.
pub fn contains_word(text: &str, phrase: &str) -> bool {
    let text = text.to_lowercase();
    let phrase = phrase.trim().to_lowercase();
    if phrase.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(&phrase).any(|(start, found)| {
        let before = text[..start].chars().next_back();
        let after = text[start + found.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
