//! Bot operators' published address ranges, read from a directory (`BOT_RANGES_DIR`) and
//! re-read when its files change, so ranges are updated without a rebuild or a restart: drop
//! a newer `gptbot.json` in the directory and the next check (every 30 s) picks it up. A
//! directory that cannot be read keeps the last good ranges (and says so in the log).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::domain::bots::ranges::RangeBook;

/// How often the directory is checked for changes.
pub const CHECK_EVERY: Duration = Duration::from_secs(30);

/// Reads every `*.json` and `*.txt` file of `dir` (the file stem names the bot or operator).
pub fn load_dir(dir: &Path) -> anyhow::Result<RangeBook> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        let wanted = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "json" || e == "txt");
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()).filter(|_| wanted) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        files.push((stem.to_owned(), text));
    }
    Ok(RangeBook::from_files(files)?)
}

/// A fingerprint of the directory's files: names, sizes and modification times.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    let mut seen: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            Some((e.path(), meta.len(), meta.modified().ok()))
        })
        .collect();
    seen.sort();
    seen
}

/// The current ranges, shared by every request.
#[derive(Clone, Debug, Default)]
pub struct BotRanges {
    current: Arc<RwLock<Arc<RangeBook>>>,
}

impl BotRanges {
    /// Fixed ranges (tests, or no directory configured).
    pub fn fixed(book: RangeBook) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(book))),
        }
    }

    /// Loads `dir` now and keeps re-reading it when it changes until `shutdown`.
    pub fn watch(dir: PathBuf, shutdown: CancellationToken) -> anyhow::Result<Self> {
        // The fingerprint of what was loaded, taken now: a change before the task first runs
        // must not be missed.
        let mut last = fingerprint(&dir);
        let ranges = Self::fixed(load_dir(&dir)?);
        tracing::info!(dir = %dir.display(), lists = ?ranges.get().names(), "bot ranges loaded");
        let handle = ranges.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(CHECK_EVERY) => {}
                }
                let now = fingerprint(&dir);
                if now == last {
                    continue;
                }
                match load_dir(&dir) {
                    Ok(book) => {
                        tracing::info!(dir = %dir.display(), lists = ?book.names(), "bot ranges reloaded");
                        handle.set(book);
                        last = now;
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "bot ranges not reloaded; keeping the last good ones")
                    }
                }
            }
        });
        Ok(ranges)
    }

    /// The ranges now.
    pub fn get(&self) -> Arc<RangeBook> {
        self.current
            .read()
            .map_or_else(|poisoned| poisoned.into_inner().clone(), |g| g.clone())
    }

    /// Replaces the ranges.
    pub fn set(&self, book: RangeBook) {
        let mut guard = self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard = Arc::new(book);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_changed_file_is_picked_up_without_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("gptbot.txt"), "20.171.206.0/24\n").expect("write");
        std::fs::write(dir.path().join("notes.md"), "ignored").expect("write");
        let shutdown = CancellationToken::new();
        let ranges = BotRanges::watch(dir.path().to_owned(), shutdown.clone()).expect("load");
        let ip = "52.230.152.9".parse().expect("ip");
        assert!(
            !ranges
                .get()
                .lookup("GPTBot", None)
                .expect("list")
                .contains(ip)
        );
        std::fs::write(
            dir.path().join("gptbot.txt"),
            "20.171.206.0/24\n52.230.152.0/24\n",
        )
        .expect("write");
        for _ in 0..10 {
            tokio::time::sleep(CHECK_EVERY).await;
            if ranges
                .get()
                .lookup("GPTBot", None)
                .is_some_and(|l| l.contains(ip))
            {
                shutdown.cancel();
                return;
            }
        }
        panic!("the new range was not loaded");
    }
}
