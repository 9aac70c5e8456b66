//! The cache on disk: the Hugging Face hub layout, a lock per file, and links from snapshots
//! to blobs. See the module documentation of [`crate::models`] for the layout.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};

use fs4::FileExt;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The cache root: `override_dir`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` (as `huggingface_hub`).
pub fn cache_root(override_dir: Option<&Path>) -> PathBuf {
    if let Some(dir) = override_dir {
        return dir.to_owned();
    }
    let var = |name: &str| std::env::var_os(name).filter(|value| !value.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("HF_HUB_CACHE") {
        return dir;
    }
    if let Some(home) = var("HF_HOME") {
        return home.join("hub");
    }
    let cache = var("XDG_CACHE_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache.join("huggingface").join("hub")
}

/// A model repository's folder in the cache: `models--ORG--REPO`.
#[derive(Debug, Clone)]
pub struct RepoDir {
    root: PathBuf,
    folder: String,
}

impl RepoDir {
    /// The folder for `repo` (`ORG/REPO`) under `root`.
    pub fn new(root: &Path, repo: &str) -> RepoDir {
        RepoDir { root: root.to_owned(), folder: format!("models--{}", repo.replace('/', "--")) }
    }

    /// `models--ORG--REPO` itself.
    pub fn path(&self) -> PathBuf {
        self.root.join(&self.folder)
    }

    /// `blobs/<name>`.
    pub fn blob(&self, name: &str) -> PathBuf {
        self.path().join("blobs").join(name)
    }

    /// `snapshots/<revision>/<file>`.
    pub fn snapshot(&self, revision: &str, file: &str) -> PathBuf {
        self.path().join("snapshots").join(revision).join(file)
    }

    /// The commit `refs/<revision>` points at, if recorded.
    pub fn read_ref(&self, revision: &str) -> Option<String> {
        let text = std::fs::read_to_string(self.path().join("refs").join(revision)).ok()?;
        Some(text.trim().to_owned()).filter(|commit| !commit.is_empty())
    }

    /// Records that `revision` points at `commit` (only when they differ, as the hub does).
    pub fn write_ref(&self, revision: &str, commit: &str) -> Result<()> {
        if revision == commit {
            return Ok(());
        }
        let path = self.path().join("refs").join(revision);
        write_atomic(&path, commit.as_bytes())
    }

    /// Takes the lock for `name` (a blob), waiting for another process that holds it.
    /// The lock files live in `.locks/models--ORG--REPO/`, where `huggingface_hub` keeps its own.
    pub fn lock(&self, name: &str) -> Result<FileLock> {
        let path = self.root.join(".locks").join(&self.folder).join(format!("{name}.lock"));
        FileLock::acquire(&path)
    }
}

/// An exclusive lock on a file, held until dropped (closing the file releases it).
#[derive(Debug)]
pub struct FileLock {
    _file: File,
}

impl FileLock {
    /// Locks `path` (created if missing), blocking until no other process holds it.
    pub fn acquire(path: &Path) -> Result<FileLock> {
        create_parent(path)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|source| io_error(format!("cannot open lock file {}", path.display()), source))?;
        FileExt::lock(&file).map_err(|source| io_error(format!("cannot lock {}", path.display()), source))?;
        Ok(FileLock { _file: file })
    }
}

/// Makes `link` point at `blob`: a relative symlink as the hub cache uses, else a hard link,
/// else a copy (file systems without links).
pub fn link_snapshot(blob: &Path, link: &Path) -> Result<()> {
    create_parent(link)?;
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).map_err(|source| io_error(format!("cannot replace {}", link.display()), source))?;
    }
    #[cfg(unix)]
    {
        if let Some(relative) = relative_path(blob, link) {
            if std::os::unix::fs::symlink(&relative, link).is_ok() {
                return Ok(());
            }
        }
    }
    if std::fs::hard_link(blob, link).is_ok() {
        return Ok(());
    }
    std::fs::copy(blob, link)
        .map(|_| ())
        .map_err(|source| io_error(format!("cannot copy {} to {}", blob.display(), link.display()), source))
}

/// `target` relative to `link`'s folder, when both are under a common ancestor.
fn relative_path(target: &Path, link: &Path) -> Option<PathBuf> {
    let from = link.parent()?;
    let common = from.ancestors().find(|ancestor| target.starts_with(ancestor))?;
    let ups = from.strip_prefix(common).ok()?.components().count();
    let mut relative: PathBuf = std::iter::repeat_n("..", ups).collect();
    relative.push(target.strip_prefix(common).ok()?);
    Some(relative)
}

/// Writes a small file through a temporary file and a rename, so readers never see half of it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    create_parent(path)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|source| io_error(format!("cannot write {}", tmp.display()), source))?;
    std::fs::rename(&tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(&tmp);
        io_error(format!("cannot rename {} to {}", tmp.display(), path.display()), source)
    })
}

/// Creates `path`'s parent folder.
pub fn create_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) => std::fs::create_dir_all(parent)
            .map_err(|source| io_error(format!("cannot create {}", parent.display()), source)),
        None => Ok(()),
    }
}

/// The sha256 of a file's first `len` bytes, with the hasher to continue from.
pub fn hash_prefix(path: &Path, len: u64) -> Result<Sha256> {
    let file = File::open(path).map_err(|source| io_error(format!("cannot read {}", path.display()), source))?;
    let mut hasher = Sha256::new();
    let mut reader = file.take(len);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read =
            reader.read(&mut buffer).map_err(|source| io_error(format!("cannot read {}", path.display()), source))?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher)
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

pub(crate) fn io_error(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_links_are_relative_to_the_blob() {
        let root = Path::new("/c/hub");
        let repo = RepoDir::new(root, "Org/Repo");
        let blob = repo.blob("abc");
        let link = repo.snapshot("0123", "sub/f.gguf");
        assert_eq!(relative_path(&blob, &link), Some(PathBuf::from("../../../blobs/abc")));
        assert_eq!(repo.path(), PathBuf::from("/c/hub/models--Org--Repo"));
    }
}
