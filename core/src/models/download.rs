//! One HTTP download into the cache: into `<dest>.incomplete`, resumed with a `Range` request
//! when a partial file is there, checked against the size and sha256 when they are known, and
//! renamed to `dest` only when complete.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_RANGE, RANGE};
use reqwest::StatusCode;
use sha2::{Digest, Sha256};

use super::cache::{create_parent, hash_prefix, hex, io_error};
use super::{fetch_error, Progress, ResolveOptions};
use crate::error::{Error, Result};

/// How many times a download that broke after making progress is resumed before giving up.
const RESUMES: u32 = 5;

/// The HTTP clients of one resolve.
pub(crate) struct Http {
    /// Follows redirects (file bodies).
    pub client: reqwest::Client,
    /// Does not (the Hub's metadata is on the redirect itself).
    pub no_redirect: reqwest::Client,
    pub token: Option<String>,
}

impl Http {
    pub fn new(options: &ResolveOptions) -> Result<Http> {
        let builder = || {
            reqwest::Client::builder()
                .connect_timeout(options.connect_timeout)
                .read_timeout(options.read_timeout)
                .user_agent(concat!("slmkit/", env!("CARGO_PKG_VERSION")))
        };
        let build = |builder: reqwest::ClientBuilder| {
            builder.build().map_err(|err| Error::Config(format!("cannot build the HTTP client: {err}")))
        };
        Ok(Http {
            client: build(builder())?,
            no_redirect: build(builder().redirect(reqwest::redirect::Policy::none()))?,
            token: options.token.clone().filter(|token| !token.is_empty()),
        })
    }

    /// `Authorization: Bearer …` when a token is set and `url` is on `endpoint`'s host.
    pub fn auth(&self, url: &str, endpoint: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let host = |text: &str| reqwest::Url::parse(text).ok().and_then(|url| url.host_str().map(str::to_owned));
        if let (Some(token), Some(a), Some(b)) = (&self.token, host(url), host(endpoint)) {
            if a == b {
                if let Ok(value) = format!("Bearer {token}").parse() {
                    headers.insert(AUTHORIZATION, value);
                }
            }
        }
        headers
    }
}

/// What is known about the file before it is fetched.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expected {
    pub size: Option<u64>,
    pub sha256: Option<String>,
}

/// One file to fetch.
pub(crate) struct Fetch<'a> {
    /// The reference being resolved, for errors.
    pub reference: &'a str,
    pub url: &'a str,
    pub headers: HeaderMap,
    pub dest: &'a Path,
    pub expected: Expected,
    /// The name progress reports carry.
    pub label: &'a str,
}

/// The file a download ended with.
#[derive(Debug, Clone)]
pub(crate) struct Downloaded {
    pub sha256: String,
}

/// `dest` with `.incomplete` appended.
pub(crate) fn incomplete_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().map(|name| name.to_os_string()).unwrap_or_default();
    name.push(".incomplete");
    dest.with_file_name(name)
}

enum Failure {
    /// The connection broke after progress; resume.
    Retry(String),
    /// Give up; the partial file has been removed where it cannot be resumed.
    Final(Error),
}

/// Fetches `fetch.url` into `fetch.dest`. The caller holds the lock for `dest`.
pub(crate) async fn download(http: &Http, fetch: &Fetch<'_>, options: &ResolveOptions) -> Result<Downloaded> {
    let partial = incomplete_path(fetch.dest);
    create_parent(&partial)?;
    let mut resumes = 0;
    loop {
        let before = file_len(&partial);
        match attempt(http, fetch, &partial, options).await {
            Ok(done) => return Ok(done),
            Err(Failure::Final(err)) => return Err(err),
            Err(Failure::Retry(reason)) => {
                let progressed = file_len(&partial) > before;
                if resumes >= RESUMES || !progressed {
                    return Err(fetch_error(
                        fetch.reference,
                        format!("download of {} broke: {reason}; run the pull again to resume it", fetch.url),
                    ));
                }
                resumes += 1;
                tracing::info!(url = fetch.url, reason, "download broke, resuming");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

async fn attempt(
    http: &Http,
    fetch: &Fetch<'_>,
    partial: &Path,
    options: &ResolveOptions,
) -> Result<Downloaded, Failure> {
    let discard = |err: Error| {
        let _ = std::fs::remove_file(partial);
        Failure::Final(err)
    };
    let mut have = file_len(partial);
    if let Some(size) = fetch.expected.size {
        if have > size {
            let _ = std::fs::remove_file(partial);
            have = 0;
        }
    }
    let mut request = http.client.get(fetch.url).headers(fetch.headers.clone());
    if have > 0 {
        request = request.header(RANGE, format!("bytes={have}-"));
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(err) => {
            // Nothing was received: a failure to connect is final (the caller may try another
            // source), and the partial file stays for a later resume.
            return Err(Failure::Final(fetch_error(fetch.reference, describe(fetch.url, &err))));
        }
    };
    let status = response.status();
    let append = if have > 0 && status == StatusCode::PARTIAL_CONTENT {
        let start = response
            .headers()
            .get(CONTENT_RANGE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("bytes "))
            .and_then(|value| value.split('-').next())
            .and_then(|value| value.parse::<u64>().ok());
        if start.is_some_and(|start| start != have) {
            let _ = std::fs::remove_file(partial);
            return Err(Failure::Retry(format!("the server resumed at the wrong offset ({start:?}, not {have})")));
        }
        true
    } else if status == StatusCode::RANGE_NOT_SATISFIABLE && fetch.expected.size == Some(have) {
        // The partial file is already whole; check it below.
        return finish(fetch, partial, have, hash_prefix(partial, have).map_err(discard)?).map_err(discard);
    } else if status.is_success() {
        false
    } else {
        return Err(discard(status_error(fetch.reference, fetch.url, status, http.token.is_some())));
    };
    let mut hasher = if append { hash_prefix(partial, have).map_err(discard)? } else { Sha256::new() };
    let mut done = if append { have } else { 0 };
    let total = if append { response.content_length().map(|rest| rest + have) } else { response.content_length() }
        .or(fetch.expected.size);
    if let (Some(total), Some(size)) = (total, fetch.expected.size) {
        if total != size {
            return Err(discard(fetch_error(
                fetch.reference,
                format!("{} is {total} bytes, expected {size}", fetch.url),
            )));
        }
    }
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .append(append)
        .truncate(!append)
        .open(partial)
        .map_err(|source| discard(io_error(format!("cannot write {}", partial.display()), source)))?;
    let report = |done: u64| {
        if let Some(progress) = &options.progress {
            progress(Progress { file: fetch.label.to_owned(), done, total });
        }
    };
    report(done);
    let mut reported = done;
    loop {
        match response.chunk().await {
            Ok(Some(bytes)) => {
                file.write_all(&bytes).map_err(|source| {
                    Failure::Final(io_error(format!("cannot write {}", partial.display()), source))
                })?;
                hasher.update(&bytes);
                done += bytes.len() as u64;
                if done - reported >= 1 << 20 {
                    report(done);
                    reported = done;
                }
            }
            Ok(None) => break,
            Err(err) => {
                let _ = file.flush();
                return Err(Failure::Retry(describe(fetch.url, &err)));
            }
        }
    }
    file.sync_all()
        .map_err(|source| Failure::Final(io_error(format!("cannot write {}", partial.display()), source)))?;
    drop(file);
    report(done);
    if total.is_some_and(|total| done < total) {
        return Err(Failure::Retry(format!("the connection closed after {done} of {total:?} bytes")));
    }
    finish(fetch, partial, done, hasher).map_err(discard)
}

/// Checks the whole partial file and renames it into place.
fn finish(fetch: &Fetch<'_>, partial: &Path, size: u64, hasher: Sha256) -> Result<Downloaded> {
    if let Some(expected) = fetch.expected.size {
        if size != expected {
            return Err(fetch_error(
                fetch.reference,
                format!("{} gave {size} bytes, expected {expected}; the partial file was deleted", fetch.url),
            ));
        }
    }
    let sha256 = hex(&hasher.finalize());
    if let Some(expected) = &fetch.expected.sha256 {
        if !sha256.eq_ignore_ascii_case(expected) {
            return Err(sha_mismatch(fetch.reference, fetch.url, expected, &sha256));
        }
    }
    std::fs::rename(partial, fetch.dest).map_err(|source| {
        io_error(format!("cannot rename {} to {}", partial.display(), fetch.dest.display()), source)
    })?;
    Ok(Downloaded { sha256 })
}

pub(crate) fn sha_mismatch(reference: &str, what: &str, expected: &str, got: &str) -> Error {
    fetch_error(
        reference,
        format!("sha256 mismatch for {what}: expected {expected}, got {got}; the downloaded file was deleted"),
    )
}

/// The error for an HTTP error status, with a hint where one helps.
pub(crate) fn status_error(reference: &str, url: &str, status: StatusCode, token_set: bool) -> Error {
    let reason = match status.as_u16() {
        404 => format!("not found at {url} (HTTP 404)"),
        401 | 403 if token_set => format!(
            "access denied at {url} (HTTP {}): the token in HF_TOKEN has no access to it (gated or private?)",
            status.as_u16()
        ),
        401 | 403 => format!(
            "access denied at {url} (HTTP {}): set HF_TOKEN to a token with access (the repository may be gated or private)",
            status.as_u16()
        ),
        code => format!("{url} answered HTTP {code}"),
    };
    fetch_error(reference, reason)
}

/// A transport error with its causes.
pub(crate) fn describe(url: &str, err: &reqwest::Error) -> String {
    let mut text = if err.is_connect() {
        format!("cannot connect to {url}")
    } else if err.is_timeout() {
        format!("{url} timed out")
    } else {
        format!("request to {url} failed")
    };
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
