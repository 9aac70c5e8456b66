//! What the CLI's integration tests share: a temporary folder, and a real `slmkit serve`
//! process started on a free port with a configuration the test writes.

// Each test file compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A temporary folder, removed with everything in it when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let path = std::env::temp_dir().join(format!("slmkit-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One `slmkit serve` process in a folder of its own, killed when dropped.
pub struct Serve {
    pub child: Child,
    /// `http://127.0.0.1:PORT/v1`.
    pub base: String,
    pub ledger: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl Serve {
    /// Starts `slmkit serve` with the configuration `config` writes for a ledger at the path it
    /// is given, and `env` added to its environment; `Err` with its stderr when it exits before
    /// listening.
    pub fn start(config: impl FnOnce(&Path) -> String, env: &[(&str, &str)]) -> Result<Serve, String> {
        let dir = TempDir::new("serve");
        let ledger = dir.0.join("ledger.jsonl");
        let config_path = dir.0.join("slmkit.toml");
        std::fs::write(&config_path, config(&ledger)).unwrap();
        let stderr = dir.0.join("stderr.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_slmkit"))
            .args(["serve", "--port", "0", "--host", "127.0.0.1", "--config"])
            .arg(&config_path)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(base) = line.strip_prefix("slmkit serve: listening on ") {
                        break base.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.wait();
                    return Err(std::fs::read_to_string(&stderr).unwrap_or_default());
                }
            }
        };
        // Keep reading stdout so the process never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Serve { child, base, ledger, stderr, _dir: dir })
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Stops it with SIGTERM (a clean shutdown flushes the ledger) and waits.
    pub fn stop(&mut self) {
        self.signal("-TERM");
    }

    pub fn kill_9(&mut self) {
        self.signal("-9");
    }

    fn signal(&mut self, signal: &str) {
        let _ = Command::new("kill").arg(signal).arg(self.child.id().to_string()).status();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
