//! Generates with a local GGUF model: plain text, streamed text, a JSON-schema answer and a
//! forced tool call. Until the router lands, this is the project's main job.
//!
//! ```sh
//! cargo run --example generate -- [MODEL.gguf]
//! ```
//! Without an argument it uses the tiny random-weight test model, whose output is gibberish
//! by design: what this shows is the shape of the answers, which the grammars guarantee.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use futures::StreamExt;
use serde_json::json;
use slmkit::types::{ChatCompletionRequest, ChatMessage, ResponseFormat, Tool, ToolChoice};
use slmkit::{EngineOptions, LocalEngine, LocalModel, ModelOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-chatml.gguf").to_owned());
    let model = LocalModel::load(&path, &ModelOptions::default())?;
    println!("model: {} ({path})", model.name());
    let engine = LocalEngine::start(model, EngineOptions { context_per_slot: Some(2048), ..Default::default() })?;

    let mut request = ChatCompletionRequest::new(vec![
        ChatMessage::system("You route customer tickets."),
        ChatMessage::user("Ticket: 'I was charged twice for order 1234.'"),
    ]);
    request.max_tokens = Some(32);
    request.seed = Some(42);

    let completion = engine.create(&request).await?;
    println!("\n# plain\n{}", serde_json::to_string_pretty(&completion)?);

    println!("\n# streamed (same seed, same text)");
    let mut stream = engine.create_stream(&ChatCompletionRequest { stream: Some(true), ..request.clone() }).await?;
    while let Some(chunk) = stream.next().await {
        if let Some(text) = chunk?.choices.first().and_then(|choice| choice.delta.content.clone()) {
            print!("{text}");
            std::io::stdout().flush()?;
        }
    }
    println!();

    let schema = json!({
        "type": "object",
        "properties": {
            "intent": {"enum": ["refund", "billing", "bug", "other"]},
            "order_id": {"type": "integer", "minimum": 1, "maximum": 99999}
        },
        "required": ["intent", "order_id"],
        "additionalProperties": false
    });
    let structured = ChatCompletionRequest {
        response_format: Some(ResponseFormat::json_schema("ticket", schema)),
        max_tokens: Some(64),
        ..request.clone()
    };
    println!("\n# json_schema\n{}", engine.create(&structured).await?.content());

    let tools = vec![Tool::function(
        "refund_order",
        "Refund an order",
        json!({"type": "object", "properties": {"order_id": {"type": "integer", "minimum": 1, "maximum": 99999}}, "required": ["order_id"]}),
    )];
    let call = ChatCompletionRequest {
        tools: Some(tools),
        tool_choice: Some(ToolChoice::named("refund_order")),
        max_tokens: Some(160),
        ..request
    };
    let answer = engine.create(&call).await?;
    println!(
        "\n# forced tool call (finish_reason {:?})\n{}",
        answer.choices[0].finish_reason,
        serde_json::to_string_pretty(&answer.choices[0].message.tool_calls)?
    );
    Ok(())
}
