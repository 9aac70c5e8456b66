//! The plain-URL source: any `https://` file, cached under `models--slmkit--url-<hash>`.

use std::path::{Path, PathBuf};

use super::{cache, download, ResolveOptions};
use crate::error::Result;

/// The cache folder and file name for a plain URL.
pub(crate) fn url_repo(url: &str, root: &Path) -> (cache::RepoDir, String) {
    use sha2::Digest;
    let digest = cache::hex(&sha2::Sha256::digest(url.as_bytes()));
    let file = reqwest::Url::parse(url)
        .ok()
        .and_then(|url| url.path_segments().and_then(|mut segments| segments.next_back().map(str::to_owned)))
        .filter(|name| !name.is_empty() && name != "." && name != ".." && !name.contains('\\'))
        .unwrap_or_else(|| "model.gguf".into());
    (cache::RepoDir::new(root, &format!("slmkit/url-{}", &digest[..16])), file)
}

pub(crate) async fn fetch_url(
    http: &download::Http,
    url: &str,
    reference: &str,
    options: &ResolveOptions,
) -> Result<PathBuf> {
    fetch_url_pinned(http, url, None, reference, options).await
}

pub(crate) async fn fetch_url_pinned(
    http: &download::Http,
    url: &str,
    pinned: Option<(u64, &str)>,
    reference: &str,
    options: &ResolveOptions,
) -> Result<PathBuf> {
    let root = cache::cache_root(options.cache_dir.as_deref());
    let (repo, file) = url_repo(url, &root);
    let snapshot = repo.snapshot("main", &file);
    let _lock = repo.lock("download")?;
    if snapshot.is_file() {
        return Ok(snapshot);
    }
    let staging = repo.path().join("downloads").join(&file);
    let expected =
        download::Expected { size: pinned.map(|(size, _)| size), sha256: pinned.map(|(_, sha)| sha.to_owned()) };
    let fetch = download::Fetch { reference, url, headers: Default::default(), dest: &staging, expected, label: &file };
    let done = download::download(http, &fetch, options).await?;
    let blob = repo.blob(&done.sha256);
    cache::create_parent(&blob)?;
    std::fs::rename(&staging, &blob).map_err(|source| {
        cache::io_error(format!("cannot move {} to {}", staging.display(), blob.display()), source)
    })?;
    let _ = std::fs::remove_dir(repo.path().join("downloads"));
    cache::link_snapshot(&blob, &snapshot)?;
    Ok(snapshot)
}
