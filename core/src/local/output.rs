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
pub(crate) fn parse_tool_calls(text: &str, syntax: ToolCallSyntax, tools: &[Tool]) -> ParsedOutput {
    let known = |name: &str| tools.iter().any(|tool| tool.function.name == name);
    let mut calls = Vec::new();
    let mut content = String::new();
    match syntax {
        ToolCallSyntax::Tagged => {
            let mut rest = text;
            while let Some(open) = rest.find(TOOL_CALL_OPEN) {
                let after_open = &rest[open + TOOL_CALL_OPEN.len()..];
                let (body, after) = match after_open.find(TOOL_CALL_CLOSE) {
                    Some(close) => (&after_open[..close], &after_open[close + TOOL_CALL_CLOSE.len()..]),
                    None => (after_open, ""),
                };
                match call_from_json(body.trim(), &known) {
                    Some(call) => {
                        content.push_str(&rest[..open]);
                        calls.push(call);
                    }
                    None => content.push_str(&rest[..rest.len() - after.len()]),
                }
                rest = after;
            }
            content.push_str(rest);
        }
        ToolCallSyntax::BareJson => {
            let trimmed = text.trim();
            match serde_json::from_str::<Value>(trimmed) {
                Ok(Value::Array(items)) => {
                    let parsed: Vec<ToolCall> = items.iter().filter_map(|item| call_from_value(item, &known)).collect();
                    if parsed.len() == items.len() && !parsed.is_empty() {
                        calls = parsed;
                    } else {
                        content.push_str(text);
                    }
                }
                Ok(value) => match call_from_value(&value, &known) {
                    Some(call) => calls.push(call),
                    None => content.push_str(text),
                },
                Err(_) => content.push_str(text),
            }
        }
    }
    let content = content.trim();
    ParsedOutput { content: (!content.is_empty()).then(|| content.to_owned()), tool_calls: calls }
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
    fn bare_json_calls_accept_parameters_alias() {
        let parsed =
            parse_tool_calls(r#" {"name": "search", "parameters": {"q": 1}} "#, ToolCallSyntax::BareJson, &tools());
        assert_eq!(parsed.content, None);
        assert_eq!(parsed.tool_calls[0].function.arguments, r#"{"q":1}"#);
    }
}
