//! The Responses API subset: request mapping (and the features it refuses), whole and
//! streamed answers on the loopback test server as the LLM and on the tiny fixture SLM, a tool
//! round trip, `text.format` json_schema, and the ledger.

// Tests, benches and examples stop loudly on failure: the library code must not (workspace lints).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{json, Value};
use slmkit::client::to_chat_request;
use slmkit::types::responses::{ItemStatus, OutputItem, ResponseEvent, ResponseRequest, ResponseStatus};
use slmkit::types::{ResponseFormat, Role, ToolChoice, ToolChoiceMode};
use slmkit::{
    Backend, Client, EngineOptions, Error, LocalEngine, LocalModel, ModelOptions, Outcome, Pricing, RemoteBackend,
    RemoteConfig, Tier,
};
use slmkit_testserver::{Behavior, TestServer};

fn request(body: Value) -> ResponseRequest {
    serde_json::from_value(body).unwrap()
}

fn llm_only(server: &TestServer) -> Client {
    let mut config = RemoteConfig::new(server.base_url(), "big-model");
    config.request_timeout = Duration::from_secs(10);
    let pricing =
        Pricing::PerToken { input_usd_per_million: 2.5, output_usd_per_million: 10.0, joules_per_token: None };
    Client::builder().llm(Backend::Remote(RemoteBackend::new(config).unwrap()), pricing).build().unwrap()
}

fn fixture_slm() -> Client {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tiny-chatml.gguf");
    let model = LocalModel::load(path, &ModelOptions::default()).unwrap();
    let engine =
        LocalEngine::start(model, EngineOptions { context_per_slot: Some(1024), ..EngineOptions::default() }).unwrap();
    Client::builder().slm(Backend::Local(engine), Pricing::local_default()).build().unwrap()
}

fn invalid_param(err: Error) -> String {
    match err {
        Error::InvalidRequest { param: Some(param), .. } => param,
        other => panic!("expected an invalid-request error naming a field, got {other:?}"),
    }
}

async fn events(client: &Client, request: &ResponseRequest) -> Vec<ResponseEvent> {
    let stream = client.respond_stream(request).await.unwrap();
    stream.map(|event| event.unwrap()).collect().await
}

fn types(events: &[ResponseEvent]) -> Vec<&'static str> {
    events.iter().map(ResponseEvent::event_type).collect()
}

/// Sequence numbers count from 0 with no gaps, and the text deltas add up to the final text.
fn check_stream_invariants(events: &[ResponseEvent]) -> Value {
    for (index, event) in events.iter().enumerate() {
        assert_eq!(event.sequence_number, index as u64, "{:?}", types(events));
    }
    let json: Vec<Value> = events.iter().map(|event| serde_json::to_value(event).unwrap()).collect();
    let deltas: String = json
        .iter()
        .filter(|event| event["type"] == "response.output_text.delta")
        .map(|event| event["delta"].as_str().unwrap())
        .collect();
    let last = json.last().unwrap();
    let texts: String = last["response"]["output"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|item| item["type"] == "message")
        .flat_map(|item| item["content"].as_array().unwrap().clone())
        .map(|part| part["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(deltas, texts);
    last["response"].clone()
}

#[test]
fn requests_map_onto_chat_requests() {
    let chat = to_chat_request(&request(json!({
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "developer", "content": "house rules"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "weather?"}]},
            {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
             "content": [{"type": "output_text", "text": "checking", "annotations": []}]},
            {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Oslo\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "rain"}
        ],
        "tools": [{"type": "function", "name": "weather", "description": "d",
                   "parameters": {"type": "object"}, "strict": true}],
        "tool_choice": {"type": "function", "name": "weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
        "max_output_tokens": 40, "temperature": 0.2, "top_p": 0.9,
        "metadata": {"slmkit_route": "llm"}, "user": "u1", "store": false, "stream": true,
        "slmkit": {"task": "weather"}, "service_tier": "auto", "truncation": "disabled", "include": []
    })))
    .unwrap();
    let roles: Vec<Role> = chat.messages.iter().map(|message| message.role).collect();
    assert_eq!(roles, [Role::System, Role::Developer, Role::User, Role::Assistant, Role::Tool]);
    assert_eq!(chat.messages[0].text(), "be brief");
    assert_eq!(chat.messages[2].text(), "weather?");
    let assistant = &chat.messages[3];
    assert_eq!(assistant.text(), "checking");
    let calls = assistant.tool_calls.as_ref().unwrap();
    assert_eq!((calls[0].id.as_str(), calls[0].function.name.as_str()), ("call_1", "weather"));
    assert_eq!(chat.messages[4].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(chat.messages[4].text(), "rain");
    let tool = &chat.tools.as_ref().unwrap()[0].function;
    assert_eq!((tool.name.as_str(), tool.strict), ("weather", Some(true)));
    assert_eq!(chat.tool_choice, Some(ToolChoice::named("weather")));
    assert!(
        matches!(&chat.response_format, Some(ResponseFormat::JsonSchema { json_schema }) if json_schema.name == "w")
    );
    assert_eq!(chat.max_completion_tokens, Some(40));
    assert_eq!((chat.temperature, chat.top_p), (Some(0.2), Some(0.9)));
    assert_eq!(chat.metadata.as_ref().unwrap()["slmkit_route"], "llm");
    assert_eq!(chat.extra["slmkit"]["task"], "weather");
    assert!(!chat.extra.contains_key("service_tier"));
    assert_eq!(chat.stream_options.as_ref().and_then(|options| options.include_usage), Some(true));
    chat.validate().unwrap();

    let plain = to_chat_request(&request(json!({"input": "hi", "tool_choice": "none"}))).unwrap();
    assert_eq!(plain.messages.len(), 1);
    assert_eq!(plain.tool_choice, Some(ToolChoice::Mode(ToolChoiceMode::None)));
    assert_eq!(plain.stream, None);
}

#[test]
fn features_outside_the_subset_are_refused_by_name() {
    let cases = [
        (json!({"input": "hi", "previous_response_id": "resp_1"}), "previous_response_id"),
        (json!({"input": "hi", "conversation": "conv_1"}), "conversation"),
        (json!({"input": "hi", "reasoning": {"effort": "low"}}), "reasoning"),
        (json!({"input": "hi", "background": true}), "background"),
        (json!({"input": "hi", "include": ["message.output_text.logprobs"]}), "include"),
        (json!({"input": "hi", "truncation": "auto"}), "truncation"),
        (json!({"input": "hi", "tools": [{"type": "web_search"}]}), "tools[0].type"),
        (json!({"input": "hi", "tools": [{"type": "function"}]}), "tools[0].name"),
        (json!({"input": "hi", "tool_choice": {"type": "file_search"}}), "tool_choice"),
        (json!({"input": "hi", "text": {"format": {"type": "grammar"}}}), "text.format.type"),
        (json!({"input": "hi", "text": {"verbosity": "low"}}), "text.verbosity"),
        (
            json!({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}]}),
            "input[0].content[0].type",
        ),
        (json!({"input": [{"type": "reasoning", "summary": []}]}), "input[0].type"),
        (json!({"input": [{"role": "tool", "content": "x"}]}), "input[0].role"),
        (json!({"input": [{"type": "function_call_output", "output": "x"}]}), "input[0].call_id"),
        (json!({"input": 7}), "input"),
        (json!({}), "input"),
    ];
    for (body, param) in cases {
        let err = to_chat_request(&request(body.clone())).unwrap_err();
        let message = err.to_string();
        assert_eq!(err.status_code(), 400, "{body}");
        assert_eq!(invalid_param(err), param, "{body}: {message}");
    }
    assert!(ResponseRequest::from_json("{\"input\": ").is_err());
}

#[tokio::test]
async fn a_whole_response_on_the_llm_tier_is_recorded() {
    let server = TestServer::start().await;
    let client = llm_only(&server);
    let response = client
        .respond(&request(json!({"input": "hello there", "instructions": "be kind", "metadata": {"team": "a"}})))
        .await
        .unwrap();
    assert_eq!(response.output_text(), "echo: hello there");
    assert!(response.id.starts_with("resp_"), "{}", response.id);
    assert_eq!(response.status, ResponseStatus::Completed);
    let usage = response.usage.unwrap();
    assert!(usage.input_tokens > 0 && usage.output_tokens > 0);
    assert_eq!(usage.total_tokens, usage.input_tokens + usage.output_tokens);
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json["object"], "response");
    assert_eq!(json["output"][0]["type"], "message");
    assert_eq!(json["output"][0]["content"][0]["type"], "output_text");
    assert_eq!(json["slmkit"]["tier"], "llm");
    assert_eq!(json["instructions"], "be kind");
    assert_eq!(json["metadata"]["team"], "a");
    let sent = &server.received()[0].body;
    assert_eq!(sent["messages"][0], json!({"role": "system", "content": "be kind"}));
    let records = client.ledger().records();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].tier, records[0].outcome), (Tier::Llm, Outcome::Ok));
    assert_eq!(records[0].call_id, json["slmkit"]["call_id"].as_str().unwrap());
}

#[tokio::test]
async fn a_streamed_response_sends_the_events_in_order() {
    let server = TestServer::start().await;
    let client = llm_only(&server);
    let events = events(&client, &request(json!({"input": "stream me please", "stream": true}))).await;
    let kinds = types(&events);
    let deltas = kinds.iter().filter(|kind| **kind == "response.output_text.delta").count();
    assert!(deltas >= 1, "{kinds:?}");
    let mut expected =
        vec!["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added"];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(kinds, expected);
    let response = check_stream_invariants(&events);
    assert_eq!(response["status"], "completed");
    assert_eq!(response["output"][0]["content"][0]["text"], "echo: stream me please");
    assert!(response["usage"]["output_tokens"].as_u64().unwrap() > 0, "{response}");
    assert_eq!(response["slmkit"]["tier"], "llm");
    let created = serde_json::to_value(&events[0]).unwrap();
    assert_eq!(created["response"]["status"], "in_progress");
    assert_eq!(created["response"]["id"], response["id"]);
    assert_eq!(client.ledger().records().len(), 1);
}

#[tokio::test]
async fn a_cut_off_response_is_incomplete() {
    let server = TestServer::start().await;
    let client = llm_only(&server);
    server.push([
        Behavior::reply_text("partial").finishing("length"),
        Behavior::reply_text("partial").finishing("length"),
    ]);
    let response = client.respond(&request(json!({"input": "go", "max_output_tokens": 3}))).await.unwrap();
    assert_eq!(response.status, ResponseStatus::Incomplete);
    assert_eq!(response.incomplete_details.unwrap().reason, "max_output_tokens");
    let events = events(&client, &request(json!({"input": "go on", "max_output_tokens": 3, "stream": true}))).await;
    assert_eq!(types(&events).last(), Some(&"response.incomplete"));
    let response = check_stream_invariants(&events);
    assert_eq!(response["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(response["output"][0]["status"], "incomplete");
}

fn tool_reply(call_id: &str, arguments: &str) -> Behavior {
    Behavior::Reply {
        content: None,
        tool_calls: Some(json!([{"id": call_id, "type": "function",
                                 "function": {"name": "weather", "arguments": arguments}}])),
        prompt_tokens: None,
        completion_tokens: None,
        delay_ms: 0,
        cut_after_chunks: None,
        finish_reason: None,
    }
}

#[tokio::test]
async fn a_tool_round_trip_sends_the_result_back() {
    let server = TestServer::start().await;
    let client = llm_only(&server);
    let tools = json!([{"type": "function", "name": "weather", "description": "the weather in a city",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                       "required": ["city"]}}]);
    server.push([tool_reply("call_9", "{\"city\":\"Oslo\"}")]);
    let first = client
        .respond(&request(json!({"input": "weather in Oslo?", "tools": tools, "tool_choice": "required"})))
        .await
        .unwrap();
    assert_eq!(first.function_calls(), vec![("call_9", "weather", "{\"city\":\"Oslo\"}")]);
    assert_eq!(first.output.len(), 1, "no empty message beside the call: {:?}", first.output);
    let OutputItem::FunctionCall { id, status, .. } = &first.output[0] else { panic!("{:?}", first.output) };
    assert!(id.starts_with("fc_"));
    assert_eq!(*status, ItemStatus::Completed);
    assert_eq!(server.received()[0].body["tool_choice"], "required");
    assert_eq!(server.received()[0].body["tools"][0]["function"]["name"], "weather");

    // The agent runs the tool and sends the call and its output back as input items.
    let mut input = vec![json!({"role": "user", "content": "weather in Oslo?"})];
    input.extend(first.output.iter().map(|item| serde_json::to_value(item).unwrap()));
    input.push(json!({"type": "function_call_output", "call_id": "call_9", "output": "rain, 4 C"}));
    server.push([Behavior::reply_text("Rain in Oslo.")]);
    let second = client.respond(&request(json!({"input": input, "tools": tools}))).await.unwrap();
    assert_eq!(second.output_text(), "Rain in Oslo.");
    let sent = &server.received()[1].body["messages"];
    assert_eq!(sent[1]["role"], "assistant");
    assert_eq!(sent[1]["tool_calls"][0]["id"], "call_9");
    assert_eq!(sent[2], json!({"role": "tool", "content": "rain, 4 C", "tool_call_id": "call_9"}));

    // Streamed, the call comes as function-call events.
    server.push([tool_reply("call_10", "{\"city\":\"Bergen\"}")]);
    let events =
        events(&client, &request(json!({"input": "weather in Bergen?", "tools": tools, "stream": true}))).await;
    let kinds = types(&events);
    let arguments: String = events
        .iter()
        .map(|event| serde_json::to_value(event).unwrap())
        .filter(|event| event["type"] == "response.function_call_arguments.delta")
        .map(|event| event["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(arguments, "{\"city\":\"Bergen\"}");
    let first_delta = kinds.iter().position(|kind| *kind == "response.function_call_arguments.delta").unwrap();
    assert_eq!(kinds[..first_delta], ["response.created", "response.in_progress", "response.output_item.added"]);
    assert_eq!(
        kinds[kinds.len() - 3..],
        ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    );
    let response = check_stream_invariants(&events);
    assert_eq!(response["output"][0]["type"], "function_call");
    assert_eq!(response["output"][0]["call_id"], "call_10");
    assert_eq!(response["output"][0]["arguments"], "{\"city\":\"Bergen\"}");
    assert_eq!(client.ledger().records().len(), 3);
}

#[tokio::test]
async fn an_invalid_request_fails_before_any_attempt() {
    let server = TestServer::start().await;
    let client = llm_only(&server);
    let err = client.respond(&request(json!({"input": "hi", "previous_response_id": "resp_x"}))).await.unwrap_err();
    assert!(err.to_string().contains("previous_response_id"), "{err}");
    assert!(client.respond_stream(&request(json!({"input": "hi", "stream": true, "background": true}))).await.is_err());
    assert!(server.received().is_empty());
    assert!(client.ledger().records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fixture_slm_answers_whole_streamed_and_in_a_json_schema() {
    let client = fixture_slm();
    let response = client.respond(&request(json!({"input": "say hi", "max_output_tokens": 12}))).await.unwrap();
    let json = serde_json::to_value(&response).unwrap();
    assert_eq!(json["slmkit"]["tier"], "slm");
    assert_eq!(json["output"][0]["type"], "message");
    assert!(response.usage.unwrap().output_tokens > 0);

    let events = events(&client, &request(json!({"input": "say more", "max_output_tokens": 12, "stream": true}))).await;
    let kinds = types(&events);
    assert_eq!(kinds[..2], ["response.created", "response.in_progress"]);
    assert!(matches!(kinds.last(), Some(&"response.completed") | Some(&"response.incomplete")), "{kinds:?}");
    let streamed = check_stream_invariants(&events);
    assert_eq!(streamed["slmkit"]["tier"], "slm");

    // Random weights, but the schema's grammar constrains what they can say.
    let schema = json!({"type": "object", "properties": {"label": {"type": "string", "enum": ["spam", "ham"]}},
                        "required": ["label"], "additionalProperties": false});
    let labelled = client
        .respond(&request(json!({"input": "classify: win a prize now", "max_output_tokens": 40,
                                 "text": {"format": {"type": "json_schema", "name": "label", "schema": schema,
                                                     "strict": true}}})))
        .await
        .unwrap();
    let parsed: Value = serde_json::from_str(&labelled.output_text()).unwrap();
    assert!(["spam", "ham"].contains(&parsed["label"].as_str().unwrap()), "{parsed}");
    let records = client.ledger().records();
    assert!(records.len() >= 3);
    assert!(records.iter().all(|record| record.tier == Tier::Slm));
}
