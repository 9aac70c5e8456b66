//! The Hugging Face Hub source: `{endpoint}/{repo}/resolve/{revision}/{file}`, cached in the
//! hub layout so that files are shared with `huggingface_hub`.

use std::path::{Path, PathBuf};

use reqwest::header::{HeaderMap, CONTENT_LENGTH, ETAG, LOCATION};

use super::cache::{cache_root, link_snapshot, RepoDir};
use super::download::{describe, download, status_error, Expected, Fetch, Http};
use super::{fetch_error, ResolveOptions};
use crate::error::Result;

/// A file on the Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubFile {
    /// `ORG/REPO`.
    pub repo: String,
    /// The path in the repository.
    pub file: String,
    /// A branch, tag or commit; `main` when `None`.
    pub revision: Option<String>,
}

impl HubFile {
    fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or("main")
    }
}

fn is_commit(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// The cached file, if this revision has been fetched before (no network).
pub fn cached(hub: &HubFile, root: &Path) -> Option<PathBuf> {
    let repo = RepoDir::new(root, &hub.repo);
    let revision = hub.revision();
    let commit = if is_commit(revision) { revision.to_owned() } else { repo.read_ref(revision)? };
    let path = repo.snapshot(&commit, &hub.file);
    path.is_file().then_some(path)
}

/// The file's metadata as the Hub sends it on the `resolve` URL (before its redirect).
struct Metadata {
    commit: Option<String>,
    etag: Option<String>,
    size: Option<u64>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|value| value.to_str().ok()).map(str::trim).filter(|value| !value.is_empty())
}

/// `W/"abc"` → `abc`.
fn normalize_etag(etag: &str) -> String {
    etag.trim_start_matches("W/").trim_matches('"').to_owned()
}

async fn metadata(http: &Http, url: &str, endpoint: &str, reference: &str) -> Result<Metadata> {
    let mut url = url.to_owned();
    for _ in 0..5 {
        let response = http
            .no_redirect
            .head(&url)
            .headers(http.auth(&url, endpoint))
            .send()
            .await
            .map_err(|err| fetch_error(reference, describe(&url, &err)))?;
        let status = response.status();
        let headers = response.headers();
        if status.is_redirection() {
            // A relative redirect is a renamed repository: follow it. An absolute one is the
            // CDN holding the file; the metadata is on this response.
            if let Some(location) = header(headers, LOCATION.as_str()).filter(|location| location.starts_with('/')) {
                url = format!("{}{location}", endpoint.trim_end_matches('/'));
                continue;
            }
        } else if !status.is_success() {
            return Err(status_error(reference, &url, status, http.token.is_some()));
        }
        let etag = header(headers, "x-linked-etag").or_else(|| header(headers, ETAG.as_str())).map(normalize_etag);
        let size = header(headers, "x-linked-size")
            .or_else(|| status.is_success().then(|| header(headers, CONTENT_LENGTH.as_str())).flatten())
            .and_then(|size| size.parse().ok());
        return Ok(Metadata { commit: header(headers, "x-repo-commit").map(str::to_owned), etag, size });
    }
    Err(fetch_error(reference, format!("too many redirects from {url}")))
}

/// Fetches `hub` into the cache (or finds it there) and returns the snapshot path.
/// `pinned` is the size and sha256 the file must have, when known (catalog entries).
pub(crate) async fn fetch(
    http: &Http,
    hub: &HubFile,
    pinned: Option<(u64, &str)>,
    reference: &str,
    options: &ResolveOptions,
) -> Result<PathBuf> {
    let root = cache_root(options.cache_dir.as_deref());
    if let Some(path) = cached(hub, &root) {
        return Ok(path);
    }
    let endpoint = options.hub_endpoint.trim_end_matches('/');
    let url = format!("{endpoint}/{}/resolve/{}/{}", hub.repo, hub.revision(), hub.file);
    let meta = metadata(http, &url, endpoint, reference).await?;
    let commit = meta.commit.unwrap_or_else(|| hub.revision().to_owned());
    let sha_etag = meta.etag.clone().filter(|etag| etag.len() == 64 && etag.bytes().all(|b| b.is_ascii_hexdigit()));
    let expected_sha = pinned.map(|(_, sha)| sha.to_owned()).or(sha_etag);
    if let (Some(pinned), Some(etag)) = (pinned.map(|(_, sha)| sha), meta.etag.as_deref()) {
        if etag.len() == 64 && !etag.eq_ignore_ascii_case(pinned) {
            return Err(fetch_error(
                reference,
                format!("{url} is a different file (sha256 {etag}) from the pinned one ({pinned})"),
            ));
        }
    }
    let blob_name = match meta.etag.or_else(|| expected_sha.clone()) {
        Some(name) if !name.contains(['/', '\\']) && name != "." && name != ".." => name,
        _ => return Err(fetch_error(reference, format!("{url} sent no usable ETag to name the file by"))),
    };
    let repo = RepoDir::new(&root, &hub.repo);
    let blob = repo.blob(&blob_name);
    let snapshot = repo.snapshot(&commit, &hub.file);
    let _lock = repo.lock(&blob_name)?;
    if !blob.is_file() {
        let expected = Expected { size: pinned.map(|(size, _)| size).or(meta.size), sha256: expected_sha };
        let fetch =
            Fetch { reference, url: &url, headers: http.auth(&url, endpoint), dest: &blob, expected, label: &hub.file };
        download(http, &fetch, options).await?;
    }
    link_snapshot(&blob, &snapshot)?;
    repo.write_ref(hub.revision(), &commit)?;
    Ok(snapshot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_lose_their_quotes() {
        assert_eq!(normalize_etag("W/\"abc\""), "abc");
        assert_eq!(normalize_etag("\"abc\""), "abc");
        assert!(is_commit("0123456789abcdef0123456789abcdef01234567"));
        assert!(!is_commit("main"));
    }
}
