//! Entry points for the fuzz targets in `fuzz/` (`make fuzz`): each feeds arbitrary bytes to
//! one parser the way user input or a remote server reaches it. Not part of the public API;
//! every function here must return normally for any input, an `Err` being a normal return.

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use crate::local::grammar::ToolCallSyntax;
use crate::local::output::parse_tool_calls;
use crate::remote::{parse_sse_body, RemoteBackend, RemoteConfig};
use crate::types::{ChatCompletionRequest, Tool};

/// A request body, as `slmkit serve` and the bindings receive it: parsed, validated, its hints
/// checked and, when it passes, hashed for the cache (what `Client::prepare` does).
pub fn request_json(bytes: &[u8]) {
    let Ok(request) = serde_json::from_slice::<ChatCompletionRequest>(bytes) else {
        return;
    };
    if request.validate().is_ok() && crate::hints::check(&request).is_ok() {
        let _ = crate::cache::digest(&request);
    }
}

/// A remote server's streamed reply, split where the first byte says (so event boundaries
/// fall inside and between reads), through the remote backend's SSE parser.
pub fn sse(bytes: &[u8]) {
    let Some((&split_every, body)) = bytes.split_first() else {
        return;
    };
    let step = usize::from(split_every.max(1));
    let pieces: Vec<Vec<u8>> = body.chunks(step).map(<[u8]>::to_vec).collect();
    let Some((runtime, backend)) = sse_harness() else {
        return;
    };
    let _ = runtime.block_on(parse_sse_body(backend, pieces));
}

fn sse_harness() -> Option<&'static (tokio::runtime::Runtime, RemoteBackend)> {
    static HARNESS: OnceLock<Option<(tokio::runtime::Runtime, RemoteBackend)>> = OnceLock::new();
    HARNESS
        .get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            // Never contacted: the parser only uses the backend to name the URL and redact the key.
            let config = RemoteConfig::new("http://127.0.0.1:9/v1", "fuzz").with_api_key("sk-fuzz-key");
            let backend = runtime.block_on(async { RemoteBackend::new(config) }).ok()?;
            Some((runtime, backend))
        })
        .as_ref()
}

/// A configuration file's text.
pub fn config_toml(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = crate::Config::from_toml_str(text);
    }
}

/// A GGUF file's bytes through the pre-flight check that runs before llama.cpp sees a model.
pub fn gguf(bytes: &[u8]) {
    let len = bytes.len() as u64;
    let _ = crate::local::gguf::check_gguf_bytes(Cursor::new(bytes), len, Path::new("fuzz.gguf"));
}

/// A model's answer through the tool-call parser, in both call syntaxes, with two tools known.
pub fn tool_calls(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let tools = fuzz_tools();
    for syntax in [ToolCallSyntax::Tagged, ToolCallSyntax::BareJson] {
        let _ = parse_tool_calls(&text, syntax, tools);
    }
}

fn fuzz_tools() -> &'static [Tool] {
    static TOOLS: OnceLock<Vec<Tool>> = OnceLock::new();
    TOOLS.get_or_init(|| {
        let tools = serde_json::json!([
            {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
            {"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}
        ]);
        serde_json::from_value(tools).unwrap_or_default()
    })
}
