//! `slmkit pull` and `slmkit models`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use slmkit::models::{cache_root, cached_entry, resolve, Progress, ResolveOptions};

/// Fetches each reference into the cache (a progress bar on stderr; plain lines every 10% when
/// stderr is not a terminal) and returns the files' paths, in order.
///
/// # Errors
/// The first reference that fails.
pub fn pull(references: &[String]) -> slmkit::Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for reference in references {
        let mut options = ResolveOptions::from_env();
        let bar = Arc::new(Mutex::new(Bar::default()));
        let sink = Arc::clone(&bar);
        options.progress = Some(Arc::new(move |progress: Progress| {
            if let Ok(mut bar) = sink.lock() {
                bar.update(&progress);
            }
        }));
        options.notes = Some(Arc::new(|note: &str| eprintln!("note: {note}")));
        let started = Instant::now();
        let result = resolve(reference, &options);
        if let Ok(mut bar) = bar.lock() {
            bar.finish();
        }
        let path = result?;
        eprintln!("{reference}: {} ({:.1} s)", path.display(), started.elapsed().as_secs_f64());
        paths.push(path);
    }
    Ok(paths)
}

#[derive(Default)]
struct Bar {
    current: Option<(String, ProgressBar)>,
    /// Tenths of the file reported so far (when stderr is not a terminal).
    tenths: u64,
}

impl Bar {
    fn update(&mut self, progress: &Progress) {
        let same = self.current.as_ref().is_some_and(|(file, _)| *file == progress.file);
        if !same {
            self.finish();
            let bar = ProgressBar::new(progress.total.unwrap_or(0));
            let template = "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}";
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(progress.file.clone());
            self.current = Some((progress.file.clone(), bar));
            self.tenths = 0;
            if !std::io::stderr().is_terminal() {
                eprintln!("downloading {} ({})", progress.file, mib(progress.total));
            }
        }
        if let Some((_, bar)) = &self.current {
            if let Some(total) = progress.total {
                bar.set_length(total);
                let tenths = progress.done.saturating_mul(10) / total.max(1);
                if !std::io::stderr().is_terminal() && tenths > self.tenths {
                    self.tenths = tenths;
                    eprintln!("  {}: {}%", progress.file, tenths * 10);
                }
            }
            bar.set_position(progress.done);
        }
    }

    fn finish(&mut self) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish_and_clear();
        }
    }
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "size unknown".into(), |bytes| format!("{:.1} MiB", bytes as f64 / 1_048_576.0))
}

/// The catalog as a table, with where each model is cached.
pub fn list() -> String {
    let options = ResolveOptions::from_env();
    let catalog = options.catalog();
    let mut out = format!(
        "{:<29} {:>6} {:<7} {:>6} {:<6} {:>9} {:<11} {}\n",
        "NAME", "PARAMS", "QUANT", "CTX", "TOOLS", "SIZE", "LICENCE", "CACHED"
    );
    for entry in &catalog.entries {
        let cached = cached_entry(entry, &options).map_or_else(|| "no".into(), |path| path.display().to_string());
        out.push_str(&format!(
            "{:<29} {:>6} {:<7} {:>6} {:<6} {:>9} {:<11} {}\n",
            entry.name,
            entry.parameters,
            entry.quantisation,
            entry.context_length,
            if entry.tools { "yes" } else { "no" },
            format!("{:.0} MiB", entry.size as f64 / 1_048_576.0),
            entry.licence,
            cached
        ));
    }
    out.push_str(&format!("cache: {}\n", cache_root(options.cache_dir.as_deref()).display()));
    out
}
