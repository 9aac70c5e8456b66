//! Turning sampled token pieces into text: UTF-8 reassembly, stop strings and tool calls.

use serde_json::Value;

use super::grammar::{ToolCallSyntax, TOOL_CALL_CLOSE, TOOL_CALL_OPEN};
use crate::types::{new_id, FunctionCall, Tool, ToolCall};

/// Reassembles UTF-8 text from token pieces, which may split a character between them.
#[derive(Debug, Default)]
pub(crate) struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds a piece's bytes and returns the text that is now complete.
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut text = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(valid) => {
                    text.push_str(valid);
                    self.pending.clear();
                    return text;
                }
                Err(err) => {
                    let valid_up_to = err.valid_up_to();
                    // Safe: from_utf8 just vouched for these bytes.
                    text.push_str(std::str::from_utf8(&self.pending[..valid_up_to]).unwrap_or_default());
                    match err.error_len() {
                        // An incomplete character at the end: wait for the next piece.
                        None => {
                            self.pending.drain(..valid_up_to);
                            return text;
                        }
                        // Bytes that can never become valid: replace them, as lossy decoding does.
                        Some(invalid_len) => {
                            text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid_up_to + invalid_len);
                        }
                    }
                }
            }
        }
    }

    /// Bytes of a character begun but not yet complete.
    pub(crate) fn pending(&self) -> &[u8] {
        &self.pending
    }

    /// Whatever is left at the end of generation, replaced if it is an incomplete character.
    pub(crate) fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Whether appending `piece` to `pending` keeps the byte stream valid UTF-8 so far (a
/// character may still be incomplete at the end).
pub(crate) fn keeps_utf8_valid(pending: &[u8], piece: &[u8]) -> bool {
    let valid_prefix = |bytes: &[u8]| match std::str::from_utf8(bytes) {
        Ok(_) => true,
        Err(err) => err.error_len().is_none(),
    };
    if pending.is_empty() {
        return valid_prefix(piece);
    }
    let mut joined = Vec::with_capacity(pending.len() + piece.len());
    joined.extend_from_slice(pending);
    joined.extend_from_slice(piece);
    valid_prefix(&joined)
}

/// Finds stop strings in streamed text, holding back any tail that could begin one, so a
/// stop string never leaks to the caller in pieces.
#[derive(Debug)]
pub(crate) struct StopScanner {
    stops: Vec<String>,
    held: String,
}

/// What the scanner lets through after a piece of text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scan {
    /// Text that is safe to emit; generation goes on.
    Continue(String),
    /// Text before a stop string; generation must end here.
    Stopped(String),
}

impl StopScanner {
    pub(crate) fn new(stops: Vec<String>) -> Self {
        StopScanner { stops, held: String::new() }
    }

    pub(crate) fn push(&mut self, text: &str) -> Scan {
        if self.stops.is_empty() {
            return Scan::Continue(text.to_owned());
        }
        self.held.push_str(text);
        let first_stop = self.stops.iter().filter_map(|stop| self.held.find(stop.as_str())).min();
        if let Some(at) = first_stop {
            let before = self.held[..at].to_owned();
            self.held.clear();
            return Scan::Stopped(before);
        }
        let keep = self.longest_partial_stop_suffix();
        let emit_to = self.held.len() - keep;
        let emitted = self.held[..emit_to].to_owned();
        self.held.drain(..emit_to);
        Scan::Continue(emitted)
    }

    /// The held text, released when generation ends without a stop string.
    pub(crate) fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The length of the longest suffix of the held text that is a proper prefix of a stop.
    fn longest_partial_stop_suffix(&self) -> usize {
        let mut longest = 0;
        for stop in &self.stops {
            for (prefix_end, _) in stop.char_indices().skip(1) {
                let prefix = &stop[..prefix_end];
                if prefix_end > longest && self.held.ends_with(prefix) {
                    longest = prefix_end;
                }
            }
        }
        longest
    }
}

/// The content and tool calls found in a completed output.
#[derive(Debug, PartialEq)]
pub(crate) struct ParsedOutput {
    pub content: Option<String>,
    pub tool_calls: Vec<ToolCall>,
}

/// Parses tool calls out of `text`. Calls naming unknown tools, or whose JSON does not parse,
/// are left in the content: the caller's validators decide what to make of them.
///
/// Small models often ignore their template's call syntax when the choice is theirs
/// (`tool_choice: "auto"`): Qwen2.5 answers with a bare `{"name": …, "arguments": …}` object,
/// or one in a ```` ```json ```` fence. So whatever the syntax, an answer that is nothing but
/// calls (bare, as an array, or fenced) is read as calls too.
pub(crate) fn parse_tool_calls(text: &str, syntax: ToolCallSyntax, tools: &[Tool]) -> ParsedOutput {
    let known = |name: &str| tools.iter().any(|tool| tool.function.name == name);
    if syntax == ToolCallSyntax::Tagged && text.contains(TOOL_CALL_OPEN) {
        let tagged = parse_tagged(text, &known);
        if !tagged.tool_calls.is_empty() {
            return tagged;
        }
    }
    if let Some(calls) = whole_answer_calls(text, &known) {
        return ParsedOutput { content: None, tool_calls: calls };
    }
    if let Some(parsed) = fenced_calls(text, &known) {
        return parsed;
    }
    let content = text.trim();
    ParsedOutput { content: (!content.is_empty()).then(|| content.to_owned()), tool_calls: Vec::new() }
}

fn parse_tagged(text: &str, known: &impl Fn(&str) -> bool) -> ParsedOutput {
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut rest = text;
    while let Some(open) = rest.find(TOOL_CALL_OPEN) {
        let after_open = &rest[open + TOOL_CALL_OPEN.len()..];
        let (body, after) = match after_open.find(TOOL_CALL_CLOSE) {
            Some(close) => (&after_open[..close], &after_open[close + TOOL_CALL_CLOSE.len()..]),
            None => (after_open, ""),
        };
        match calls_from_json(strip_fence(body.trim()).unwrap_or(body.trim()), known) {
            Some(found) => {
                content.push_str(&rest[..open]);
                calls.extend(found);
            }
            None => content.push_str(&rest[..rest.len() - after.len()]),
        }
        rest = after;
    }
    content.push_str(rest);
    let content = content.trim();
    ParsedOutput { content: (!content.is_empty()).then(|| content.to_owned()), tool_calls: calls }
}

/// The calls in an answer that holds nothing else: one call object, an array of them, or
/// either in a single markdown fence.
fn whole_answer_calls(text: &str, known: &impl Fn(&str) -> bool) -> Option<Vec<ToolCall>> {
    let trimmed = text.trim();
    let body = strip_fence(trimmed).unwrap_or(trimmed);
    calls_from_json(body, known).or_else(|| json_lines_calls(body, known))
}

/// Calls given one JSON object per line, as some models write several bare calls.
fn json_lines_calls(body: &str, known: &impl Fn(&str) -> bool) -> Option<Vec<ToolCall>> {
    let lines: Vec<&str> = body.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
    if lines.len() < 2 {
        return None;
    }
    let mut calls = Vec::with_capacity(lines.len());
    for line in lines {
        calls.push(call_from_json(line, known)?);
    }
    Some(calls)
}

/// Prose around fenced blocks that hold calls: the blocks become calls, the prose content.
fn fenced_calls(text: &str, known: &impl Fn(&str) -> bool) -> Option<ParsedOutput> {
    let mut calls = Vec::new();
    let mut content = String::new();
    let mut rest = text;
    while let Some(open) = rest.find(FENCE) {
        let after_open = &rest[open + FENCE.len()..];
        let Some(close) = after_open.find(FENCE) else { break };
        let block = &rest[open..open + FENCE.len() + close + FENCE.len()];
        match strip_fence(block).and_then(|body| calls_from_json(body, known)) {
            Some(found) => {
                content.push_str(&rest[..open]);
                calls.extend(found);
            }
            None => content.push_str(&rest[..open + block.len()]),
        }
        rest = &rest[open + block.len()..];
    }
    if calls.is_empty() {
        return None;
    }
    content.push_str(rest);
    let content = content.trim();
    Some(ParsedOutput { content: (!content.is_empty()).then(|| content.to_owned()), tool_calls: calls })
}

const FENCE: &str = "```";

/// The body of a text that is exactly one markdown code fence (with or without a language).
fn strip_fence(text: &str) -> Option<&str> {
    let inner = text.strip_prefix(FENCE)?.strip_suffix(FENCE)?;
    let newline = inner.find('\n')?;
    let language = inner[..newline].trim();
    if !language.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return None;
    }
    Some(inner[newline + 1..].trim())
}

/// One call, or an array of calls that are all valid.
fn calls_from_json(body: &str, known: &impl Fn(&str) -> bool) -> Option<Vec<ToolCall>> {
    match serde_json::from_str::<Value>(body).ok()? {
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|item| call_from_value(item, known)).collect::<Option<Vec<_>>>()
        }
        value => call_from_value(&value, known).map(|call| vec![call]),
    }
}

fn call_from_json(body: &str, known: &impl Fn(&str) -> bool) -> Option<ToolCall> {
    serde_json::from_str::<Value>(body).ok().and_then(|value| call_from_value(&value, known))
}

fn call_from_value(value: &Value, known: &impl Fn(&str) -> bool) -> Option<ToolCall> {
    let name = value.get("name")?.as_str()?;
    if !known(name) {
        return None;
    }
    // Llama 3 templates say "parameters" where OpenAI says "arguments".
    let arguments = value.get("arguments").or_else(|| value.get("parameters"))?;
    let arguments = match arguments {
        Value::String(already_encoded) => already_encoded.clone(),
        other => other.to_string(),
    };
    Some(ToolCall {
        id: new_id("call_"),
        kind: "function".to_owned(),
        function: FunctionCall { name: name.to_owned(), arguments },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn utf8_split_across_pieces_is_reassembled() {
        let bytes = "é€😀".as_bytes();
        let mut assembler = Utf8Assembler::default();
        let mut text = String::new();
        for byte in bytes {
            text.push_str(&assembler.push(&[*byte]));
        }
        text.push_str(&assembler.finish());
        assert_eq!(text, "é€😀");
        let mut assembler = Utf8Assembler::default();
        assert_eq!(assembler.push(&[0xff, b'a']), "\u{fffd}a");
        assert_eq!(assembler.push(&[0xe2, 0x82]), "");
        assert_eq!(assembler.finish(), "\u{fffd}");
    }

    #[test]
    fn utf8_validity_of_continuations() {
        assert!(keeps_utf8_valid(b"", "é".as_bytes()));
        assert!(keeps_utf8_valid(b"", &[0xe2, 0x82]));
        assert!(keeps_utf8_valid(&[0xe2], &[0x82, 0xac, b'x']));
        assert!(!keeps_utf8_valid(b"", &[0x80]));
        assert!(!keeps_utf8_valid(b"", &[0xff]));
        assert!(!keeps_utf8_valid(&[0xe2], b"a"));
    }

    #[test]
    fn stop_strings_are_never_emitted_in_part() {
        let mut scanner = StopScanner::new(vec!["END".into()]);
        assert_eq!(scanner.push("abc E"), Scan::Continue("abc ".into()));
        assert_eq!(scanner.push("N"), Scan::Continue(String::new()));
        assert_eq!(scanner.push("X"), Scan::Continue("ENX".into()));
        assert_eq!(scanner.push("yyEN"), Scan::Continue("yy".into()));
        assert_eq!(scanner.push("Dzz"), Scan::Stopped(String::new()));
        let mut scanner = StopScanner::new(vec!["\n\n".into(), "###".into()]);
        assert_eq!(scanner.push("one\ntwo\n"), Scan::Continue("one\ntwo".into()));
        assert_eq!(scanner.push("\nrest"), Scan::Stopped(String::new()));
        let mut scanner = StopScanner::new(vec!["ZZ".into()]);
        assert_eq!(scanner.push("tail Z"), Scan::Continue("tail ".into()));
        assert_eq!(scanner.finish(), "Z");
    }

    fn tools() -> Vec<Tool> {
        vec![Tool::function("search", "s", json!({"type": "object"}))]
    }

    #[test]
    fn tagged_tool_calls_are_parsed_and_text_kept() {
        let parsed = parse_tool_calls(
            "Let me look.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"rust\"}}\n</tool_call>",
            ToolCallSyntax::Tagged,
            &tools(),
        );
        assert_eq!(parsed.content.as_deref(), Some("Let me look."));
        assert_eq!(parsed.tool_calls.len(), 1);
        assert_eq!(parsed.tool_calls[0].function.name, "search");
        assert_eq!(parsed.tool_calls[0].function.arguments, r#"{"q":"rust"}"#);
        assert!(parsed.tool_calls[0].id.starts_with("call_"));
    }

    #[test]
    fn unknown_tools_and_bad_json_stay_text() {
        for text in
            ["<tool_call>{\"name\": \"rm\", \"arguments\": {}}</tool_call>", "<tool_call>{oops</tool_call>", "plain"]
        {
            let parsed = parse_tool_calls(text, ToolCallSyntax::Tagged, &tools());
            assert!(parsed.tool_calls.is_empty(), "{text}");
            assert_eq!(parsed.content.as_deref(), Some(text));
        }
    }

    #[test]
    fn auto_answers_in_any_shape_become_calls() {
        let call = r#"{"name": "search", "arguments": {"q": "rust"}}"#;
        for text in [
            call.to_owned(),
            format!("```json\n{call}\n```"),
            format!("```\n{call}\n```"),
            format!("[{call}, {call}]"),
            format!("{call}\n{call}"),
        ] {
            for syntax in [ToolCallSyntax::Tagged, ToolCallSyntax::BareJson] {
                let parsed = parse_tool_calls(&text, syntax, &tools());
                assert_eq!(parsed.content, None, "{text}");
                assert!(!parsed.tool_calls.is_empty(), "{text}");
                assert!(parsed.tool_calls.iter().all(|c| c.function.arguments == r#"{"q":"rust"}"#), "{text}");
            }
        }
        let parsed = parse_tool_calls(
            &format!("<tool_call>\n{call}\n</tool_call>\n<tool_call>\n{call}\n</tool_call>"),
            ToolCallSyntax::Tagged,
            &tools(),
        );
        assert_eq!(parsed.tool_calls.len(), 2);
        assert_eq!(parsed.content, None);
        let parsed =
            parse_tool_calls(&format!("I will search.\n```json\n{call}\n```"), ToolCallSyntax::Tagged, &tools());
        assert_eq!(parsed.tool_calls.len(), 1);
        assert_eq!(parsed.content.as_deref(), Some("I will search."));
    }

    #[test]
    fn text_that_only_mentions_json_stays_content() {
        for text in [
            "Paris is the capital of France.",
            r#"{"city": "Paris"}"#,
            "```json\n{\"name\": \"rm\", \"arguments\": {}}\n```",
            "Use {\"name\": \"search\"} to search.",
        ] {
            let parsed = parse_tool_calls(text, ToolCallSyntax::Tagged, &tools());
            assert!(parsed.tool_calls.is_empty(), "{text}");
            assert_eq!(parsed.content.as_deref(), Some(text));
        }
    }

    #[test]
    fn bare_json_calls_accept_parameters_alias() {
        let parsed =
            parse_tool_calls(r#" {"name": "search", "parameters": {"q": 1}} "#, ToolCallSyntax::BareJson, &tools());
        assert_eq!(parsed.content, None);
        assert_eq!(parsed.tool_calls[0].function.arguments, r#"{"q":1}"#);
    }
}
