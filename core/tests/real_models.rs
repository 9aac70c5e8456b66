//! The engine and the client on real small instruct models: Qwen2.5-Coder-0.5B-Instruct
//! (Qwen template, `<tool_call>` tools), SmolLM2-135M-Instruct (ChatML without tool support)
//! and Gemma 3 270M (a base model whose GGUF has no template). `make test` pulls them first
//! (`make models`); a missing model fails these tests, it does not skip them.
//!
//! Answers are greedy, and the assertions are properties a correct model and engine give:
//! the capital of France is Paris, extracted fields are exact, the right tool is called with
//! the right arguments. Never exact wording.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;

use futures::StreamExt;
use serde_json::{json, Value};
use slmkit::types::{
    ChatCompletion, ChatCompletionChunk, ChatCompletionRequest, ChatMessage, FinishReason, JsonSchemaFormat,
    ResponseFormat, Stop, StreamOptions, Tool, ToolChoice, ToolChoiceMode,
};
use slmkit::{Backend, Client, EngineOptions, Error, LocalEngine, LocalModel, ModelOptions, Outcome, Pricing, Tier};

mod support;
use support::real_model_path;

fn engine(catalog_name: &str) -> LocalEngine {
    let model = LocalModel::load(real_model_path(catalog_name), &ModelOptions::default()).expect("model loads");
    LocalEngine::shared(
        model,
        EngineOptions { slots: 2, context_per_slot: Some(4096), threads: Some(2), ..EngineOptions::default() },
    )
    .expect("engine starts")
}

fn qwen() -> &'static LocalEngine {
    static ENGINE: OnceLock<LocalEngine> = OnceLock::new();
    ENGINE.get_or_init(|| engine("qwen2.5-coder-0.5b-instruct"))
}

fn smollm() -> &'static LocalEngine {
    static ENGINE: OnceLock<LocalEngine> = OnceLock::new();
    ENGINE.get_or_init(|| engine("smollm2-135m-instruct"))
}

fn gemma() -> &'static LocalEngine {
    static ENGINE: OnceLock<LocalEngine> = OnceLock::new();
    ENGINE.get_or_init(|| engine("gemma-3-270m"))
}

fn greedy(messages: Vec<ChatMessage>, max_tokens: u32) -> ChatCompletionRequest {
    let mut request = ChatCompletionRequest::new(messages);
    request.temperature = Some(0.0);
    request.max_tokens = Some(max_tokens);
    request
}

fn order_tools() -> Vec<Tool> {
    vec![
        Tool::function(
            "get_order_status",
            "Look up an order's status by its id.",
            json!({"type": "object", "properties": {"order_id": {"type": "string", "description": "e.g. A-1042"}},
                   "required": ["order_id"]}),
        ),
        Tool::function(
            "get_weather",
            "Current weather for a city.",
            json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}),
        ),
    ]
}

fn order_question(tool_choice: ToolChoice) -> ChatCompletionRequest {
    let mut request = greedy(
        vec![
            ChatMessage::system("You are a support agent for an online shop."),
            ChatMessage::user("Where is my order A-1042?"),
        ],
        96,
    );
    request.tools = Some(order_tools());
    request.tool_choice = Some(tool_choice);
    request
}

fn single_call(completion: &ChatCompletion) -> (String, Value) {
    let calls = completion.message().and_then(|message| message.tool_calls.clone()).unwrap_or_default();
    assert_eq!(calls.len(), 1, "expected one tool call, got {completion:?}");
    let arguments = serde_json::from_str(&calls[0].function.arguments).expect("arguments are JSON");
    (calls[0].function.name.clone(), arguments)
}

async fn collect(engine: &LocalEngine, request: &ChatCompletionRequest) -> Vec<ChatCompletionChunk> {
    let mut request = request.clone();
    request.stream = Some(true);
    request.stream_options = Some(StreamOptions { include_usage: Some(true), ..Default::default() });
    let stream = engine.create_stream(&request).await.expect("stream starts");
    stream.map(|chunk| chunk.expect("chunk")).collect().await
}

const MARKERS: [&str; 4] = ["<|im_end|>", "<|im_start|>", "<end_of_turn>", "<start_of_turn>"];

fn assert_no_markers(text: &str) {
    for marker in MARKERS {
        assert!(!text.contains(marker), "{marker} leaked into the answer: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_answers_plain_questions() {
    let request = greedy(vec![ChatMessage::user("What is the capital of France? Answer in one word.")], 16);
    let completion = qwen().create(&request).await.unwrap();
    assert!(completion.content().contains("Paris"), "{:?}", completion.content());
    assert_no_markers(completion.content());
    // The stream says the same, piece by piece.
    let chunks = collect(qwen(), &request).await;
    let streamed: String =
        chunks.iter().flat_map(|chunk| &chunk.choices).filter_map(|choice| choice.delta.content.as_deref()).collect();
    assert_eq!(streamed, completion.content());
    assert!(chunks.len() > 3, "a free-text answer streams in pieces");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_extracts_exact_fields_with_a_schema() {
    let mut request = greedy(
        vec![ChatMessage::user(
            "Extract the order: 'Hi, this is Maria Lopez. My order A-1042 had 3 items and one arrived broken.'",
        )],
        96,
    );
    request.response_format = Some(ResponseFormat::JsonSchema {
        json_schema: JsonSchemaFormat {
            name: "order".into(),
            schema: Some(json!({
                "type": "object",
                "properties": {
                    "customer": {"type": "string"},
                    "order_id": {"type": "string"},
                    "items": {"type": "integer"}
                },
                "required": ["customer", "order_id", "items"],
                "additionalProperties": false
            })),
            description: None,
            strict: None,
        },
    });
    let completion = qwen().create(&request).await.unwrap();
    let order: Value = serde_json::from_str(completion.content()).expect("the grammar makes it JSON");
    assert_eq!(order, json!({"customer": "Maria Lopez", "order_id": "A-1042", "items": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_calls_tools_when_required_named_or_auto() {
    for choice in [ToolChoice::Mode(ToolChoiceMode::Required), ToolChoice::named("get_order_status")] {
        let completion = qwen().create(&order_question(choice)).await.unwrap();
        assert_eq!(single_call(&completion), ("get_order_status".to_owned(), json!({"order_id": "A-1042"})));
        assert_eq!(completion.choices[0].finish_reason, FinishReason::ToolCalls);
    }
    // "auto", what agent frameworks send: Qwen2.5 often answers with a bare or fenced object
    // instead of its template's tags; either way it is a call.
    let auto = order_question(ToolChoice::Mode(ToolChoiceMode::Auto));
    let completion = qwen().create(&auto).await.unwrap();
    assert_eq!(single_call(&completion), ("get_order_status".to_owned(), json!({"order_id": "A-1042"})));
    assert_eq!(completion.choices[0].finish_reason, FinishReason::ToolCalls);
    assert_eq!(completion.content(), "");

    let chunks = collect(qwen(), &auto).await;
    let deltas: Vec<_> = chunks
        .iter()
        .flat_map(|chunk| &chunk.choices)
        .flat_map(|choice| choice.delta.tool_calls.clone().unwrap_or_default())
        .collect();
    assert_eq!(deltas.len(), 1, "{chunks:?}");
    let function = deltas[0].function.clone().unwrap();
    assert_eq!(function.name.as_deref(), Some("get_order_status"));
    let arguments: Value = serde_json::from_str(function.arguments.as_deref().unwrap()).unwrap();
    assert_eq!(arguments, json!({"order_id": "A-1042"}));
    let finish = chunks.iter().flat_map(|chunk| &chunk.choices).find_map(|choice| choice.finish_reason);
    assert_eq!(finish, Some(FinishReason::ToolCalls));

    // With tools offered but nothing to look up, the answer stays text.
    let mut chat = greedy(vec![ChatMessage::user("What is the capital of France? Answer in one word.")], 24);
    chat.tools = Some(order_tools());
    chat.tool_choice = Some(ToolChoice::Mode(ToolChoiceMode::Auto));
    let completion = qwen().create(&chat).await.unwrap();
    assert!(completion.message().unwrap().tool_calls.is_none(), "{completion:?}");
    assert!(completion.content().contains("Paris"), "{:?}", completion.content());
}

fn after_tool_result() -> ChatCompletionRequest {
    let mut request = order_question(ToolChoice::Mode(ToolChoiceMode::Auto));
    let mut call: ChatMessage = serde_json::from_value(json!({
        "role": "assistant", "content": null,
        "tool_calls": [{"id": "call_1", "type": "function",
            "function": {"name": "get_order_status", "arguments": "{\"order_id\": \"A-1042\"}"}}]
    }))
    .unwrap();
    call.content = None;
    request.messages.push(call);
    request
        .messages
        .push(ChatMessage::tool("call_1", r#"{"status": "shipped", "carrier": "DHL", "eta": "2026-12-03"}"#));
    request
}

/// The turn after a tool result either answers from it, or repeats the call; a repeat is a
/// failed attempt that the client retries and, with nothing left, reports as a typed error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_results_are_answered_or_repeats_rejected() {
    let client = Client::builder().slm(Backend::Local(qwen().clone()), Pricing::local_default()).build().unwrap();
    match client.create(&after_tool_result()).await {
        Ok(completion) => {
            let text = completion.content().to_lowercase();
            assert!(completion.message().unwrap().tool_calls.is_none(), "{completion:?}");
            assert!(text.contains("shipped") || text.contains("dhl") || text.contains("12-03"), "{text}");
        }
        Err(err) => {
            assert_eq!(err.kind(), "validation_failed", "{err}");
            assert!(err.to_string().contains("tool_call_repeated"), "{err}");
        }
    }
    for record in client.ledger().records() {
        if record.outcome == Outcome::ValidationFailed {
            assert!(record.reason.as_deref().unwrap_or_default().contains("repeats the call"), "{record:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_end_the_answer() {
    let mut request = greedy(vec![ChatMessage::user("Count from 1 to 10, separated by commas. Only the numbers.")], 48);
    request.stop = Some(Stop::One("5".into()));
    let completion = qwen().create(&request).await.unwrap();
    assert!(completion.content().contains('4'), "{:?}", completion.content());
    assert!(!completion.content().contains('5'), "{:?}", completion.content());
    assert_eq!(completion.choices[0].finish_reason, FinishReason::Stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_prefix_is_reused_and_reported() {
    let system = format!(
        "You are the Engineer of a software company. {}",
        "Write clean, tested, documented code that follows the project's style guide. ".repeat(20)
    );
    let ask = |question: &str| greedy(vec![ChatMessage::system(&system), ChatMessage::user(question)], 8);
    let first = qwen().create(&ask("Name one sorting algorithm.")).await.unwrap();
    let second = qwen().create(&ask("Name one search algorithm.")).await.unwrap();
    let cached = |completion: &ChatCompletion| {
        completion.usage.and_then(|usage| usage.prompt_tokens_details).map_or(0, |details| details.cached_tokens)
    };
    let prompt = second.usage.unwrap().prompt_tokens;
    assert!(cached(&second) >= 200, "second call reused {} of {prompt} prompt tokens", cached(&second));
    assert!(cached(&second) < prompt);
    assert!(cached(&second) > cached(&first));
}

/// SmolLM2's template drops `tools`; slmkit describes them in a system message instead and
/// reads the call back, so the model sees the tools and a forced call is a valid call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_without_tools_gets_them_by_prompt() {
    let model = smollm().model();
    assert_eq!(model.tool_support(), slmkit::local::ToolSupport::Prompt);
    let completion = smollm().create(&order_question(ToolChoice::named("get_order_status"))).await.unwrap();
    let (name, arguments) = single_call(&completion);
    assert_eq!(name, "get_order_status");
    assert!(arguments["order_id"].is_string(), "{arguments}");
    let without_tools =
        smollm().create(&greedy(order_question(ToolChoice::Mode(ToolChoiceMode::Auto)).messages, 1)).await;
    let with_tools = smollm()
        .create(&ChatCompletionRequest {
            max_tokens: Some(1),
            ..order_question(ToolChoice::Mode(ToolChoiceMode::Auto))
        })
        .await;
    let prompt = |result: Result<ChatCompletion, Error>| result.unwrap().usage.unwrap().prompt_tokens;
    assert!(prompt(with_tools) > prompt(without_tools) + 50, "the tools reach the prompt");

    // ChatML's markers are single tokens in SmolLM2's vocabulary: nothing to stop on by text.
    assert!(model.stop_markers().is_empty(), "{:?}", model.stop_markers());
    let request = greedy(vec![ChatMessage::user("Write one sentence about the sea.")], 48);
    let completion = smollm().create(&request).await.unwrap();
    assert!(!completion.content().trim().is_empty());
    assert_no_markers(completion.content());
}

/// Gemma 3 270M's GGUF has no template, so slmkit renders ChatML, whose markers its vocabulary
/// lacks: the model writes `<|im_end|>` as plain text, which must end the answer, not show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_template_never_leaks_chatml_markers() {
    let model = gemma().model();
    assert!(!model.has_chat_template());
    assert_eq!(model.stop_markers(), ["<|im_end|>", "<|im_start|>"], "Gemma's vocabulary lacks ChatML's markers");
    let mut stopped_early = 0;
    for question in ["What is the capital of France?", "Write a haiku about the sea.", "List three colours."] {
        let request = greedy(vec![ChatMessage::user(question)], 96);
        let completion = gemma().create(&request).await.unwrap();
        assert_no_markers(completion.content());
        if completion.choices[0].finish_reason == FinishReason::Stop {
            stopped_early += 1;
        }
        let chunks = collect(gemma(), &request).await;
        let streamed: String = chunks
            .iter()
            .flat_map(|chunk| &chunk.choices)
            .filter_map(|choice| choice.delta.content.as_deref())
            .collect();
        assert_no_markers(&streamed);
    }
    // A base model does not stop by itself: it ends its turn by writing the marker as text.
    assert!(stopped_early > 0, "no answer ended at a marker");
}

/// `json_object` with too small a budget is cut off: the retry gets a larger budget instead of
/// the same one, so the call ends in valid JSON or a typed error, never in a cut-off answer
/// that claims success.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_answer_is_retried_with_room_to_finish() {
    let client = Client::builder().slm(Backend::Local(qwen().clone()), Pricing::local_default()).build().unwrap();
    let mut request = greedy(
        vec![ChatMessage::user("Describe the order A-1042 (Maria Lopez, 3 items, shipped by DHL) as a JSON object.")],
        16,
    );
    request.response_format = Some(ResponseFormat::JsonObject);
    let completion = client.create(&request).await.unwrap();
    let value: Value = serde_json::from_str(completion.content()).expect("valid JSON");
    assert!(value.is_object());
    let records = client.ledger().records();
    assert!(records.len() >= 2, "the first answer, 16 tokens long, cannot close its JSON: {records:?}");
    assert_eq!(records[0].outcome, Outcome::ValidationFailed);
    assert!(records[0].reason.as_deref().unwrap_or_default().contains("cut off"), "{:?}", records[0].reason);
    assert!(records[0].completion_tokens <= 16);
    assert!(records.last().unwrap().completion_tokens > 16, "the retry had a larger budget");
}

/// A call the caller forced onto the SLM stays there: an oversized prompt is an error, not a
/// silent escalation to the paid tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_slm_call_never_escalates() {
    let server = slmkit_testserver::TestServer::start().await;
    let llm = slmkit::RemoteBackend::new(slmkit::RemoteConfig::new(server.base_url(), "big")).unwrap();
    let client = Client::builder()
        .slm(Backend::Local(qwen().clone()), Pricing::local_default())
        .llm(Backend::Remote(llm), Pricing::gpt_4o())
        .build()
        .unwrap();
    let mut request = greedy(vec![ChatMessage::user("word ".repeat(5000))], 16);
    request.extra.insert("slmkit".into(), json!({"route": "slm"}));
    let err = client.create(&request).await.unwrap_err();
    assert_eq!(err.kind(), "context_length_exceeded", "{err}");
    assert!(client.ledger().records().iter().all(|record| record.tier == Tier::Slm));
    // Naming the SLM's model forces it the same way; an unknown name is routed and served.
    request.extra.remove("slmkit");
    request.model = qwen().model().id().to_owned();
    let err = client.create(&request).await.unwrap_err();
    assert_eq!(err.kind(), "context_length_exceeded", "{err}");
    assert!(client.ledger().records().iter().all(|record| record.tier == Tier::Slm));
    request.model = "gpt-4o".into();
    let served = client.create(&request).await.unwrap();
    assert_eq!(served.extra["slmkit"]["tier"], "llm");
}

#[test]
fn real_models_report_what_they_are() {
    let path: PathBuf = real_model_path("qwen2.5-coder-0.5b-instruct");
    let model = LocalModel::load(path, &ModelOptions::default()).unwrap();
    assert_eq!(model.quantization(), Some("Q4_K_M"));
    assert_eq!(model.context_length(), 32768);
    assert_eq!(model.tool_support(), slmkit::local::ToolSupport::Template);
    assert!(model.has_chat_template());
}

/// A one-slot 0.5B engine of its own, on the fast sampling path or the full-grammar one (every
/// candidate masked first). Not the shared `qwen()`: batched with another test's request, a
/// decode step's logits differ in the last bits, enough to flip a near tie.
fn qwen_alone(full_grammar: bool) -> LocalEngine {
    let model = LocalModel::load(real_model_path("qwen2.5-coder-0.5b-instruct"), &ModelOptions::default())
        .expect("model loads");
    let options = EngineOptions {
        slots: 1,
        context_per_slot: Some(4096),
        threads: Some(2),
        full_grammar,
        ..EngineOptions::default()
    };
    LocalEngine::start(model, options).expect("engine starts")
}

fn ticket_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": ["refund", "billing", "bug", "other"]},
            "urgent": {"type": "boolean"},
            "priority": {"type": "integer", "minimum": 1, "maximum": 5},
            "summary": {"type": "string", "maxLength": 80}
        },
        "required": ["intent", "urgent", "priority", "summary"],
        "additionalProperties": false
    })
}

fn ticket_question(max_tokens: u32) -> ChatCompletionRequest {
    greedy(
        vec![ChatMessage::user(
            "A customer writes: 'I was charged twice for order 4411, fix it now!' Describe the ticket as JSON.",
        )],
        max_tokens,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_fast_sampling_gives_the_full_grammar_greedy_output() {
    let mut schema = ticket_question(120);
    schema.response_format = Some(ResponseFormat::json_schema("ticket", ticket_schema()));
    let mut object = ticket_question(120);
    object.response_format = Some(ResponseFormat::JsonObject);
    let cases = [
        ("json_schema", schema),
        ("json_object", object),
        ("named tool", order_question(ToolChoice::named("get_order_status"))),
        ("required tool", order_question(ToolChoice::Mode(ToolChoiceMode::Required))),
    ];
    let (fast_engine, full_engine) = (qwen_alone(false), qwen_alone(true));
    for (name, request) in cases {
        let fast = fast_engine.create(&request).await.unwrap();
        let full = full_engine.create(&request).await.unwrap();
        assert_eq!(fast.choices[0].message.content, full.choices[0].message.content, "{name}");
        assert_eq!(
            serde_json::to_value(fast.choices[0].message.tool_calls.as_ref().map(|calls| {
                calls.iter().map(|call| (&call.function.name, &call.function.arguments)).collect::<Vec<_>>()
            }))
            .unwrap(),
            serde_json::to_value(full.choices[0].message.tool_calls.as_ref().map(|calls| {
                calls.iter().map(|call| (&call.function.name, &call.function.arguments)).collect::<Vec<_>>()
            }))
            .unwrap(),
            "{name}"
        );
        assert_eq!(fast.usage.unwrap().completion_tokens, full.usage.unwrap().completion_tokens, "{name}");
        if name == "json_schema" {
            let value: Value = serde_json::from_str(fast.content()).unwrap();
            assert!(jsonschema::validator_for(&ticket_schema()).unwrap().is_valid(&value), "{value}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qwen_sampled_schema_answers_validate() {
    let validator = jsonschema::validator_for(&ticket_schema()).unwrap();
    for seed in 0..5 {
        let mut request = ticket_question(160);
        request.temperature = Some(1.0);
        request.top_p = Some(0.95);
        request.seed = Some(seed);
        request.response_format = Some(ResponseFormat::json_schema("ticket", ticket_schema()));
        let completion = qwen().create(&request).await.unwrap();
        assert_eq!(completion.choices[0].finish_reason, FinishReason::Stop, "seed {seed}: {}", completion.content());
        let value: Value = serde_json::from_str(completion.content()).unwrap();
        assert!(validator.is_valid(&value), "seed {seed}: {value}");
    }
}
