//! `POST /v1/responses`: the core's Responses API subset, whole or as SSE events framed as
//! OpenAI frames them (`event: <type>` then `data: <json>`, no `[DONE]`). Same guards, key
//! and counters as chat completions.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use serde_json::json;
use slmkit::types::responses::{ResponseEventStream, ResponseRequest};
use slmkit::Error;

use super::{error_json, error_response, AppState};

pub(super) async fn responses(State(state): State<Arc<AppState>>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    state.requests.fetch_add(1, Ordering::Relaxed);
    let response = answer(&state, &headers, body).await;
    if !response.status().is_success() {
        state.errors.fetch_add(1, Ordering::Relaxed);
    }
    state.latency.observe(started.elapsed());
    response
}

async fn answer(state: &AppState, headers: &HeaderMap, body: Body) -> Response {
    let text = match super::read_body_text(state, body).await {
        Ok(text) => text,
        Err(response) => return response,
    };
    let mut request = match ResponseRequest::from_json(&text) {
        Ok(request) => request,
        Err(err) => return error_response(&err),
    };
    // The body's own fields and hints are checked before a header's hint may replace one.
    if let Err(err) = slmkit::client::to_chat_request(&request).and_then(|chat| slmkit::hints::check(&chat)) {
        return error_response(&err);
    }
    super::apply_header_hints(&mut request.extra, headers);
    if request.is_stream() {
        match state.client.respond_stream(&request).await {
            Ok(events) => sse_response(events),
            Err(err) => error_response(&err),
        }
    } else {
        match state.client.respond(&request).await {
            Ok(response) => Json(response).into_response(),
            Err(err) => error_response(&err),
        }
    }
}

/// One SSE frame: the event, or an `error` event (numbered next) for a failure mid-stream.
fn sse_frame(item: Result<slmkit::ResponseEvent, Error>, next_sequence: &mut u64) -> Bytes {
    let serialised = item.and_then(|event| {
        *next_sequence = event.sequence_number + 1;
        serde_json::to_string(&event)
            .map(|json| (event.event_type(), json))
            .map_err(|err| Error::Internal(format!("cannot serialise an event: {err}")))
    });
    let (kind, json) = match serialised {
        Ok(framed) => framed,
        Err(err) => {
            let body = error_json(&err);
            let event = json!({
                "type": "error",
                "code": err.kind(),
                "message": err.to_string(),
                "param": body["error"]["param"],
                "sequence_number": *next_sequence,
            });
            *next_sequence += 1;
            ("error", event.to_string())
        }
    };
    Bytes::from(format!("event: {kind}\ndata: {json}\n\n"))
}

fn sse_response(events: ResponseEventStream) -> Response {
    let mut next_sequence = 0;
    let frames = events.map(move |item| Ok::<Bytes, std::convert::Infallible>(sse_frame(item, &mut next_sequence)));
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(frames))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
