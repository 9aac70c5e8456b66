//! Helpers shared by the integration tests that need real models.

use std::path::PathBuf;

use slmkit::models::{resolve, ResolveOptions};

/// The local file of a catalog model, from the download cache only: `make models` (part of
/// `make test`) pulls them first, and a missing one fails the test with what to pull.
pub fn real_model_path(catalog_name: &str) -> PathBuf {
    let options = ResolveOptions { offline: true, ..ResolveOptions::from_env() };
    match resolve(catalog_name, &options) {
        Ok(path) => path,
        Err(err) => panic!("{catalog_name} is not in the model cache ({err}); run `make models`"),
    }
}
