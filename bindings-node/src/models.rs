//! `resolveModel(reference, { onProgress })`: the core's `models::resolve`, off the JS thread.

use std::sync::Arc;

use napi::bindgen_prelude::{FnArgs, Function, PromiseRaw, Unknown};
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Status};
use napi_derive::napi;
use slmkit::models::{resolve, Progress, ResolveOptions};

use super::to_napi;

type ProgressArgs = FnArgs<(String, f64, Option<f64>)>;
type ProgressCallback = ThreadsafeFunction<ProgressArgs, Unknown<'static>, ProgressArgs, Status, false>;

/// Resolves a model reference (a catalog name, `hf:ORG/REPO/FILE.gguf[@rev]`, an `https://`
/// URL or a path) to a local GGUF file, downloading it into the Hugging Face cache when
/// needed. `on_progress(file, done, total)` is called as bytes arrive (`total` may be null).
///
/// # Errors
/// `model_fetch` (download failed, or offline and not cached) or `model_load` (no such path).
#[napi(ts_return_type = "Promise<string>")]
pub fn resolve_model<'env>(
    env: &'env Env,
    reference: String,
    on_progress: Option<Function<'_, ProgressArgs, Unknown<'static>>>,
) -> napi::Result<PromiseRaw<'env, String>> {
    let callback: Option<Arc<ProgressCallback>> = match on_progress {
        Some(function) => Some(Arc::new(function.build_threadsafe_function().callee_handled::<false>().build()?)),
        None => None,
    };
    env.spawn_future(async move {
        let mut options = ResolveOptions::from_env();
        if let Some(callback) = callback {
            options.progress = Some(Arc::new(move |progress: Progress| {
                let args = (progress.file, progress.done as f64, progress.total.map(|total| total as f64));
                callback.call(FnArgs::from(args), ThreadsafeFunctionCallMode::NonBlocking);
            }));
        }
        let found = tokio::task::spawn_blocking(move || resolve(&reference, &options))
            .await
            .map_err(|err| napi::Error::from_reason(format!("the model download task failed: {err}")))?;
        found.map(|path| path.to_string_lossy().into_owned()).map_err(to_napi)
    })
}
