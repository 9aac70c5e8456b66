//! Reading a task file: one JSON object per line, every line checked before anything runs.

use std::collections::HashMap;
use std::path::Path;

use serde::Serialize;
use serde_json::Value;

use super::check::{Check, CHECK_TYPES};
use crate::error::{Error, Result};
use crate::types::ChatCompletionRequest;

/// One checkable agent task.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Task {
    pub id: String,
    /// The group it is reported in.
    pub kind: String,
    pub request: ChatCompletionRequest,
    pub check: Check,
    /// Its line in the file (1-based).
    pub line: usize,
}

/// The keys a task line may have.
const KEYS: [&str; 5] = ["id", "kind", "request", "check", "note"];

/// Reads and checks a task file.
///
/// # Errors
/// [`Error::Io`] when it cannot be read; otherwise as [`parse_tasks`].
pub fn read_tasks(path: impl AsRef<Path>) -> Result<Vec<Task>> {
    let path = path.as_ref();
    let text = std::fs::read_to_string(path)
        .map_err(|source| Error::Io { context: format!("cannot read tasks {}", path.display()), source })?;
    parse_tasks(&text, &path.display().to_string())
}

/// Parses and checks every line of a task file (`source` names it in errors). Blank lines
/// are skipped.
///
/// # Errors
/// [`Error::InvalidRequest`] naming `source` and the first bad line: not a JSON object, a
/// missing or unknown key, an empty or duplicate `id`, an invalid request, an unknown check
/// type or a check that cannot work (see [`Check::validate`]); or a file with no tasks.
pub fn parse_tasks(text: &str, source: &str) -> Result<Vec<Task>> {
    let mut tasks = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let task = parse_line(line, number)
            .map_err(|reason| Error::invalid_request(format!("{source} line {number}: {reason}"), None))?;
        if let Some(first) = seen.insert(task.id.clone(), number) {
            return Err(Error::invalid_request(
                format!("{source} line {number}: id {:?} is already used on line {first}", task.id),
                None,
            ));
        }
        tasks.push(task);
    }
    if tasks.is_empty() {
        return Err(Error::invalid_request(format!("{source}: no tasks"), None));
    }
    Ok(tasks)
}

fn parse_line(line: &str, number: usize) -> std::result::Result<Task, String> {
    let value: Value = serde_json::from_str(line).map_err(|err| format!("not JSON: {err}"))?;
    let Value::Object(mut fields) = value else {
        return Err("a task is a JSON object".into());
    };
    if let Some(unknown) = fields.keys().find(|key| !KEYS.contains(&key.as_str())) {
        return Err(format!("unknown key {unknown:?} (a task has {})", KEYS.join(", ")));
    }
    let text = |fields: &serde_json::Map<String, Value>, key: &str| match fields.get(key) {
        Some(Value::String(text)) if !text.trim().is_empty() => Ok(text.trim().to_owned()),
        Some(_) => Err(format!("{key} must be a non-empty string")),
        None => Err(format!("{key} is missing")),
    };
    let id = text(&fields, "id")?;
    let kind = text(&fields, "kind")?;
    if fields.get("note").is_some_and(|note| !note.is_string()) {
        return Err("note must be a string".into());
    }
    let request = fields.remove("request").ok_or("request is missing")?;
    if !request.is_object() {
        return Err("request must be a chat-completions request object".into());
    }
    let request: ChatCompletionRequest =
        serde_json::from_value(request).map_err(|err| format!("task {id}: malformed request: {err}"))?;
    request.validate().map_err(|err| format!("task {id}: {err}"))?;
    if request.is_stream() {
        return Err(format!("task {id}: request asks for a stream; eval runs whole calls"));
    }
    let check = fields.remove("check").ok_or(format!("task {id}: check is missing"))?;
    let check = parse_check(check).map_err(|reason| format!("task {id}: {reason}"))?;
    Ok(Task { id, kind, request, check, line: number })
}

fn parse_check(check: Value) -> std::result::Result<Check, String> {
    let kind = match check.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err("check type must be a string".into()),
        None if check.is_object() => return Err(format!("check needs a type (one of {})", CHECK_TYPES.join(", "))),
        None => return Err("check must be an object".into()),
    };
    if !CHECK_TYPES.contains(&kind.as_str()) {
        return Err(format!("unknown check type {kind:?} (one of {})", CHECK_TYPES.join(", ")));
    }
    let check: Check = serde_json::from_value(check).map_err(|err| format!("check {kind}: {err}"))?;
    check.validate()?;
    Ok(check)
}
