//! Prompt rendering with the model's own Jinja chat template (falling back to ChatML).

use minijinja::value::Kwargs;
use minijinja::{Environment, ErrorKind, Value as JinjaValue};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::types::{ChatMessage, ContentPart, MessageContent, Tool, ToolCall};

/// ChatML with Hermes-style tool calls, for GGUF files that carry no template.
pub(crate) const CHATML_TEMPLATE: &str = r#"{%- if tools %}<|im_start|>system
{% if messages and messages[0].role in ["system", "developer"] %}{{ messages[0].content }}

{% endif %}You may call functions. Their signatures are listed in <tools></tools>:
<tools>
{% for tool in tools %}{{ tool | tojson }}
{% endfor %}</tools>
To call one, answer with a JSON object inside <tool_call></tool_call> tags:
<tool_call>
{"name": <function-name>, "arguments": <arguments-object>}
</tool_call><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if tools and loop.first and message.role in ["system", "developer"] %}
{%- elif message.role == "tool" %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ "system" if message.role == "developer" else message.role }}
{{ message.content }}
{%- for call in message.tool_calls or [] %}
<tool_call>
{"name": {{ call.function.name | tojson }}, "arguments": {{ call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"#;

/// A compiled chat template and the special tokens it may reference.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    source: String,
    bos_token: String,
    eos_token: String,
}

const TEMPLATE_NAME: &str = "chat";

impl ChatTemplate {
    /// Compiles `source`, the Jinja text stored in the GGUF (or the ChatML fallback).
    ///
    /// # Errors
    /// [`Error::Template`] when the template does not parse.
    pub(crate) fn new(source: String, bos_token: String, eos_token: String) -> Result<Self> {
        let mut env = Environment::new();
        // Hugging Face renders chat templates with these two options; templates assume them.
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", python_tojson);
        env.add_function("raise_exception", |message: String| -> std::result::Result<JinjaValue, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
        });
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.clone())
            .map_err(|err| Error::Template(format!("the chat template does not parse: {err:#}")))?;
        Ok(ChatTemplate { env, source, bos_token, eos_token })
    }

    /// Whether the template writes tool calls as `<tool_call>…</tool_call>` (Hermes, Qwen).
    pub(crate) fn uses_tool_call_tags(&self) -> bool {
        self.source.contains("<tool_call>")
    }

    /// The template's Jinja source.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether the template renders `tools` at all: a probe conversation renders differently
    /// with a tool than without. Templates without tool support (SmolLM2's) drop them silently.
    pub(crate) fn renders_tools(&self) -> bool {
        let probe = [ChatMessage::user("probe")];
        let tool = Tool::function("slmkit_probe_tool", "probe", json!({"type": "object", "properties": {}}));
        match (self.render(&probe, &[tool]), self.render(&probe, &[])) {
            (Ok(with), Ok(without)) => with != without && with.contains("slmkit_probe_tool"),
            _ => false,
        }
    }

    /// Renders the conversation, ending with the assistant's generation prompt.
    ///
    /// # Errors
    /// [`Error::Template`] when the template raises or fails, with its message.
    pub(crate) fn render(&self, messages: &[ChatMessage], tools: &[Tool]) -> Result<String> {
        let template = self.env.get_template(TEMPLATE_NAME).map_err(|err| Error::Template(err.to_string()))?;
        let messages: Vec<Value> = messages.iter().map(message_for_template).collect();
        let tools: Option<Vec<Value>> =
            if tools.is_empty() { None } else { Some(tools.iter().map(|tool| json!(tool)).collect()) };
        template
            .render(json!({
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": true,
                "bos_token": self.bos_token,
                "eos_token": self.eos_token,
            }))
            .map_err(|err| Error::Template(format!("{err:#}")))
    }
}

/// The message as chat templates expect it: text content, and tool-call arguments as objects.
fn message_for_template(message: &ChatMessage) -> Value {
    let mut rendered = json!({ "role": message.role.as_str(), "content": content_text(message) });
    if let Some(name) = &message.name {
        rendered["name"] = json!(name);
    }
    if let Some(call_id) = &message.tool_call_id {
        rendered["tool_call_id"] = json!(call_id);
    }
    if let Some(calls) = &message.tool_calls {
        // Templates index into the arguments (`arguments | tojson`, `arguments.items()`), so
        // they get the parsed object; arguments that are not JSON stay a string.
        let calls: Vec<Value> = calls
            .iter()
            .map(|call| {
                let arguments = arguments_value(call);
                json!({
                    "id": call.id,
                    "type": call.kind,
                    "function": { "name": call.function.name, "arguments": arguments },
                })
            })
            .collect();
        rendered["tool_calls"] = json!(calls);
    }
    rendered
}

/// A call's arguments as the JSON object they encode, or the raw string when they are not JSON.
pub(super) fn arguments_value(call: &ToolCall) -> Value {
    serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| Value::String(call.function.arguments.clone()))
}

fn content_text(message: &ChatMessage) -> String {
    match &message.content {
        Some(MessageContent::Parts(parts)) => parts
            .iter()
            .filter_map(|part| match part {
                ContentPart::Text { text } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
        _ => message.text(),
    }
}

/// `tojson` as Python's `json.dumps(value, ensure_ascii=False)`, which Hugging Face templates
/// were written against: `", "` and `": "` separators and no HTML escaping.
fn python_tojson(value: JinjaValue, kwargs: Kwargs) -> std::result::Result<String, minijinja::Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    let _sort_keys: Option<bool> = kwargs.get("sort_keys")?;
    let _ensure_ascii: Option<bool> = kwargs.get("ensure_ascii")?;
    kwargs.assert_all_used()?;
    let json = serde_json::to_value(&value)
        .map_err(|err| minijinja::Error::new(ErrorKind::InvalidOperation, format!("tojson: {err}")))?;
    let mut out = String::new();
    write_python_json(&json, indent, 0, &mut out);
    Ok(out)
}

fn write_python_json(value: &Value, indent: Option<usize>, depth: usize, out: &mut String) {
    let newline = |out: &mut String, depth: usize| {
        if let Some(width) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(width * depth));
        }
    };
    let item_separator = if indent.is_some() { "," } else { ", " };
    match value {
        Value::Array(items) if !items.is_empty() => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push(']');
        }
        Value::Object(fields) if !fields.is_empty() => {
            out.push('{');
            for (index, (key, item)) in fields.iter().enumerate() {
                if index > 0 {
                    out.push_str(item_separator);
                }
                newline(out, depth + 1);
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(": ");
                write_python_json(item, indent, depth + 1, out);
            }
            newline(out, depth);
            out.push('}');
        }
        scalar_or_empty => out.push_str(&scalar_or_empty.to_string()),
    }
}

/// `strftime_now(format)`, used by Llama 3 templates for today's date. Supports the common
/// `%d %b %Y`-style directives.
fn strftime_now(format: String) -> String {
    let days = crate::types::unix_now() / 86_400;
    let (year, month, day) = civil_from_days(days as i64);
    const MONTHS: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    let month_name = MONTHS[(month - 1) as usize];
    format
        .replace("%d", &format!("{day:02}"))
        .replace("%m", &format!("{month:02}"))
        .replace("%Y", &year.to_string())
        .replace("%B", month_name)
        .replace("%b", &month_name[..3])
}

/// Days since 1970-01-01 to (year, month, day), after Howard Hinnant's civil calendar algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{FunctionCall, ToolCall};

    fn chatml() -> ChatTemplate {
        ChatTemplate::new(CHATML_TEMPLATE.to_owned(), String::new(), "<|im_end|>".into()).unwrap()
    }

    #[test]
    fn chatml_renders_a_plain_conversation() {
        let prompt = chatml().render(&[ChatMessage::system("Be brief."), ChatMessage::user("Hi")], &[]).unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn chatml_renders_tools_calls_and_results() {
        let tool = Tool::function("get_weather", "Weather for a city", json!({"type": "object"}));
        let mut call = ChatMessage::assistant("");
        call.content = None;
        call.tool_calls = Some(vec![ToolCall {
            id: "call_1".into(),
            kind: "function".into(),
            function: FunctionCall { name: "get_weather".into(), arguments: r#"{"city":"Paris"}"#.into() },
        }]);
        let prompt = chatml()
            .render(
                &[ChatMessage::system("S"), ChatMessage::user("Weather?"), call, ChatMessage::tool("call_1", "sunny")],
                &[tool],
            )
            .unwrap();
        assert!(prompt.starts_with("<|im_start|>system\nS\n\nYou may call functions."), "{prompt}");
        assert!(prompt.contains(r#"{"type": "function", "function": {"name": "get_weather""#), "{prompt}");
        assert!(
            prompt.contains(
                "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
            ),
            "{prompt}"
        );
        assert!(prompt.contains("<tool_response>\nsunny\n</tool_response>"), "{prompt}");
        assert!(prompt.ends_with("<|im_start|>assistant\n"));
        assert_eq!(prompt.matches("<|im_start|>system").count(), 1);
    }

    #[test]
    fn template_errors_are_typed() {
        let raising =
            ChatTemplate::new("{{ raise_exception('roles must alternate') }}".into(), String::new(), String::new())
                .unwrap();
        let err = raising.render(&[ChatMessage::user("x")], &[]).unwrap_err();
        assert!(matches!(err, Error::Template(ref message) if message.contains("roles must alternate")), "{err}");
        assert!(matches!(ChatTemplate::new("{% for %}".into(), String::new(), String::new()), Err(Error::Template(_))));
    }

    #[test]
    fn python_style_json_and_python_string_methods() {
        let template = ChatTemplate::new(
            "{{ messages[0].content.strip() | tojson }}|{{ {'a': [1, 'x<y']} | tojson }}".into(),
            String::new(),
            String::new(),
        )
        .unwrap();
        let out = template.render(&[ChatMessage::user("  hé  ")], &[]).unwrap();
        assert_eq!(out, r#""hé"|{"a": [1, "x<y"]}"#);
    }

    /// The templates of real models, rendered by Hugging Face's renderer (jinja2) in
    /// `scripts/render_reference.py`: slmkit must produce the same prompt byte for byte,
    /// including the tool-result turn, or the model sees a conversation it was not trained on.
    #[test]
    fn templates_match_the_reference_rendering() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/templates");
        let conversation: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("conversation.json")).unwrap()).unwrap();
        let mut messages = conversation["messages"].clone();
        // On the wire (OpenAI's format) arguments are a JSON string; the reference passes the object.
        for message in messages.as_array_mut().unwrap() {
            for call in message.get_mut("tool_calls").and_then(Value::as_array_mut).into_iter().flatten() {
                let arguments = call["function"]["arguments"].to_string();
                call["function"]["arguments"] = json!(arguments);
            }
        }
        let messages: Vec<ChatMessage> = serde_json::from_value(messages).unwrap();
        let tools: Vec<Tool> = serde_json::from_value(conversation["tools"].clone()).unwrap();
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension() != Some(std::ffi::OsStr::new("jinja")) {
                continue;
            }
            let template =
                ChatTemplate::new(std::fs::read_to_string(&path).unwrap(), String::new(), "<|im_end|>".into()).unwrap();
            let expected = std::fs::read_to_string(path.with_extension("expected.txt")).unwrap();
            assert_eq!(template.render(&messages, &tools).unwrap(), expected, "{}", path.display());
            checked += 1;
        }
        assert_eq!(checked, 2);
        let qwen = std::fs::read_to_string(dir.join("qwen2.5.jinja")).unwrap();
        let qwen = ChatTemplate::new(qwen, String::new(), String::new()).unwrap();
        assert!(qwen.renders_tools() && qwen.uses_tool_call_tags());
        let smol = std::fs::read_to_string(dir.join("smollm2.jinja")).unwrap();
        assert!(!ChatTemplate::new(smol, String::new(), String::new()).unwrap().renders_tools());
        assert!(chatml().renders_tools());
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_000), (2024, 10, 4));
    }
}
