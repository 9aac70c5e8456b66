//! Helpers shared by the integration tests that need real models.

use std::path::PathBuf;

/// The local file of a catalog model, from the download cache only: `make models` (part of
/// `make test`) pulls them first, and a missing one is a test failure naming what to pull.
pub fn real_model_path(catalog_name: &str) -> PathBuf {
    // Until the catalog lands: SLMKIT_TEST_MODEL_DIR holds the files under their catalog names.
    let dir = std::env::var("SLMKIT_TEST_MODEL_DIR").unwrap_or_else(|_| "/work/scratch/models".into());
    let file = match catalog_name {
        "qwen2.5-coder-0.5b-instruct" => "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        "qwen2.5-coder-1.5b-instruct" => "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        "smollm2-135m-instruct" => "smollm2-135m-instruct-q4_1.gguf",
        "gemma-3-270m" => "gemma-3-270m-q4_k_m.gguf",
        other => panic!("no such test model {other}"),
    };
    PathBuf::from(dir).join(file)
}
