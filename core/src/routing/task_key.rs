//! Task keys: which task a call is, stable across calls of one agent template, so outcome
//! statistics can gather per task.
//!
//! The caller's tag wins (`metadata.slmkit_task`, e.g. MetaGPT's action name). Otherwise the
//! key is a fingerprint of the call's fixed parts: the system prompt and the last user turn
//! reduced to their skeleton (see `skeleton`), the response format and the tool names.

use serde::Serialize;

use crate::hints::task_tag;
use crate::types::{ChatCompletionRequest, ChatMessage, ContentPart, MessageContent, ResponseFormat, Role};

/// Where a task key came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    /// The caller named the task.
    Tag,
    /// A fingerprint of the call's template.
    Template,
}

/// A call's task key: `tag:<name>` or `tpl:<16 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskKey {
    pub key: String,
    pub source: KeySource,
}

/// Lines longer than this are pasted input, not template.
const LONG_LINE: usize = 160;
/// A message with at least this many section headings is a sectioned template: its headings
/// alone are its skeleton (the sections hold the variable content).
const SECTIONED: usize = 2;
/// Words kept from an unsectioned message's first and last instruction lines.
const INSTRUCTION_WORDS: usize = 8;
/// A text longer than this is read only at its head and tail (a pasted log costs no more).
const READ_CHARS: usize = 4000;

/// The task key of `request`.
pub fn task_key(request: &ChatCompletionRequest) -> TaskKey {
    if let Some(tag) = task_tag(request) {
        return TaskKey { key: format!("tag:{}", tag.trim()), source: KeySource::Tag };
    }
    let mut hash = Fnv::new();
    for message in request.messages.iter().filter(|m| matches!(m.role, Role::System | Role::Developer)) {
        hash.write(b"S");
        hash_message(message, &mut hash);
    }
    if let Some(last) = request.messages.iter().rev().find(|m| m.role == Role::User) {
        hash.write(b"U");
        hash_message(last, &mut hash);
    }
    match &request.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            hash.write(b"F:schema:");
            hash.write(json_schema.name.as_bytes());
            if let Some(properties) = json_schema.schema.as_ref().and_then(|s| s.get("properties")) {
                if let Some(fields) = properties.as_object() {
                    for name in fields.keys() {
                        hash.write(name.as_bytes());
                    }
                }
            }
        }
        Some(ResponseFormat::JsonObject) => hash.write(b"F:json"),
        _ => {}
    }
    let mut tools: Vec<&str> = request.active_tools().iter().map(|tool| tool.function.name.as_str()).collect();
    tools.sort_unstable();
    for tool in tools {
        hash.write(b"T:");
        hash.write(tool.as_bytes());
    }
    TaskKey { key: format!("tpl:{:016x}", hash.finish()), source: KeySource::Template }
}

fn hash_message(message: &ChatMessage, hash: &mut Fnv) {
    match &message.content {
        Some(MessageContent::Text(text)) => skeleton(text, hash),
        Some(MessageContent::Parts(parts)) => {
            for part in parts {
                match part {
                    ContentPart::Text { text } => skeleton(text, hash),
                    _ => hash.write(b"<part>"),
                }
            }
        }
        None => {}
    }
}

/// Feeds the fixed part of `text` to `hash`: code blocks, long lines and (in sectioned
/// templates) section bodies dropped; numbers, quoted spans and case masked.
///
/// A sectioned message (Markdown headings, `Label:` lines) is its headings. Any other is the
/// first few words of its first and last lines: the instruction, without the input after it.
fn skeleton(text: &str, hash: &mut Fnv) {
    let text = head(text);
    let mut headings = Vec::new();
    let mut labels = Vec::new();
    let mut prose = Vec::new();
    let mut in_code = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("```") {
            in_code = !in_code;
            continue;
        }
        if in_code || line.is_empty() {
            continue;
        }
        // The opening line is the instruction however long it is (a one-line system prompt);
        // any later long line is pasted input.
        let opening = headings.is_empty() && prose.is_empty();
        if line.len() > LONG_LINE && !opening {
            continue;
        }
        if is_heading(line) {
            headings.push(line);
        } else if let Some(label) = field_label(line) {
            labels.push(label);
        } else {
            prose.push(line);
        }
    }
    if headings.len() >= SECTIONED {
        for line in headings.iter().chain(&labels) {
            masked_words(line, usize::MAX, hash);
        }
        return;
    }
    for line in headings {
        masked_words(line, usize::MAX, hash);
    }
    if let Some(first) = prose.first() {
        masked_words(first, INSTRUCTION_WORDS, hash);
    }
    if prose.len() > 1 {
        if let Some(last) = prose.last() {
            hash.write(b"|");
            masked_words(last, INSTRUCTION_WORDS, hash);
        }
    }
}

/// `# Title`, or a short `Label:` line (capitalised, no code punctuation: `def f():` and
/// `Traceback (most recent call last):` are not headings).
fn is_heading(line: &str) -> bool {
    if line.starts_with('#') {
        return true;
    }
    let Some(label) = line.strip_suffix(':') else { return false };
    label.len() <= 60
        && label.chars().next().is_some_and(char::is_uppercase)
        && !label.contains(['(', ')', '=', '"', '{', '['])
        && label.split_whitespace().count() <= 6
}

/// The field a bulleted `- Field: ...` line describes (a template's list of output fields).
fn field_label(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("- ")?;
    let (label, _) = rest.split_once(':')?;
    let plain = !label.is_empty() && label.len() <= 40 && !label.contains(['(', ')', '=', '"', '{', '[']);
    plain.then_some(label)
}

fn head(text: &str) -> &str {
    if text.len() <= READ_CHARS {
        return text;
    }
    let mut end = READ_CHARS;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Hashes up to `limit` words of `line`, lowercased, with digits, quoted spans, file names
/// and paths masked.
fn masked_words(line: &str, limit: usize, hash: &mut Fnv) {
    let mut quote: Option<char> = None;
    for word in line.split_whitespace().take(limit) {
        if looks_like_path(word) && quote.is_none() {
            hash.write(b"<f> ");
            continue;
        }
        let mut last_masked = false;
        for ch in word.chars() {
            if let Some(open) = quote {
                if ch == open {
                    quote = None;
                }
                continue;
            }
            if let Some(close) = closing_quote(ch) {
                quote = Some(close);
                hash.write(b"<q>");
                last_masked = false;
                continue;
            }
            if ch.is_ascii_digit() {
                if !last_masked {
                    hash.write(b"#");
                }
                last_masked = true;
                continue;
            }
            last_masked = false;
            if ch.is_ascii() {
                hash.write(&[ch.to_ascii_lowercase() as u8]);
            } else {
                let mut buffer = [0u8; 4];
                hash.write(ch.encode_utf8(&mut buffer).as_bytes());
            }
        }
        if quote.is_none() {
            hash.write(b" ");
        }
    }
    hash.write(b"\n");
}

fn closing_quote(ch: char) -> Option<char> {
    match ch {
        '"' | '`' => Some(ch),
        '\u{201c}' => Some('\u{201d}'),
        '\u{ab}' => Some('\u{bb}'),
        _ => None,
    }
}

/// `game.py`, `src/app/main.rs`, `{workspace}/tests`: names that change from call to call.
fn looks_like_path(word: &str) -> bool {
    let word = word.trim_matches(|ch: char| matches!(ch, ':' | ',' | ';' | '(' | ')' | '.' | '\'' | '*'));
    if word.contains('/') && word.len() > 1 {
        return true;
    }
    match word.rsplit_once('.') {
        Some((stem, extension)) => {
            stem.len() >= 2
                && (1..=5).contains(&extension.len())
                && extension.chars().all(|ch| ch.is_ascii_alphanumeric())
                && extension.chars().any(|ch| ch.is_ascii_alphabetic())
        }
        None => false,
    }
}

/// FNV-1a, 64 bits: stable across runs, platforms and releases (std's hasher is not).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn call(system: &str, user: &str) -> ChatCompletionRequest {
        ChatCompletionRequest::new(vec![ChatMessage::system(system), ChatMessage::user(user)])
    }

    #[test]
    fn the_callers_tag_wins() {
        let mut request = call("You are a PM.", "Write the PRD.");
        request.metadata = Some(serde_json::Map::from_iter([("slmkit_task".into(), Value::from("WritePRD"))]));
        assert_eq!(task_key(&request), TaskKey { key: "tag:WritePRD".into(), source: KeySource::Tag });
    }

    #[test]
    fn one_template_filled_differently_is_one_key() {
        let template = |context: &str, code: &str, n: u32| {
            call(
                "You are Alex, an engineer. Write elegant code.",
                &format!(
                    "## Context\n{context}\n\n## Code: {n}\n```python\n{code}\n```\n\n## Instruction\nWrite \
                     the file `app_{n}.py` in {n} lines or fewer."
                ),
            )
        };
        let a = task_key(&template("A snake game in pygame.", "def main(): pass", 3));
        let b = task_key(&template("A CLI todo list with sqlite storage and tags.", "import os\nprint(1)", 41));
        assert_eq!(a, b);
        assert_eq!(a.source, KeySource::Template);
        assert!(a.key.starts_with("tpl:") && a.key.len() == 20, "{}", a.key);
    }

    #[test]
    fn an_instruction_with_different_inputs_is_one_key() {
        let a = task_key(&call("Classify the ticket.", "Classify this: \"my bill is wrong\" (ticket 1234)"));
        let b = task_key(&call("Classify the ticket.", "Classify this: \"app crashes on start\" (ticket 77)"));
        assert_eq!(a, b);
    }

    #[test]
    fn file_names_in_headings_are_masked() {
        let code = |file: &str| {
            task_key(&call("Engineer.", &format!("# Context\n## Code: {file}\n## Instruction\nWrite {file}.")))
        };
        assert_eq!(code("game.py"), code("src/ui/board_view.ts"));
        assert!(
            looks_like_path("game.py:")
                && looks_like_path("a/b")
                && !looks_like_path("e.g.")
                && !looks_like_path("3.14")
        );
    }

    #[test]
    fn different_templates_are_different_keys() {
        let review = task_key(&call("You are a reviewer.", "## Code\nx\n## Review\nReview the code above."));
        let write = task_key(&call("You are a reviewer.", "## Code\nx\n## Rewrite\nRewrite the code above."));
        let other_system = task_key(&call("You are an engineer.", "## Code\nx\n## Review\nReview the code above."));
        assert_ne!(review, write);
        assert_ne!(review, other_system);
        let mut with_json = call("You are a reviewer.", "## Code\nx\n## Review\nReview the code above.");
        with_json.response_format = Some(ResponseFormat::JsonObject);
        assert_ne!(task_key(&with_json), review);
    }
}
