//! Debian's `chromium`, driven over the DevTools protocol (`chromiumoxide`): one browser
//! process per renderer, started when the first page needs it, a bounded number of pages at
//! once, each in a fresh browser context (no cookies, storage or cache shared between pages)
//! that is thrown away after the page.
//!
//! The browser never reaches the network itself: it runs behind a proxy address nothing
//! listens on (loopback included), and the renderer answers every request a page makes
//! (`pipeline::renderer_js`) through the guarded client. It has no persistent profile (a
//! temporary directory, removed with the process), no downloads, and runs sandboxed unless
//! the process is root (chromium's sandbox needs an unprivileged user: run the `renderer-js`
//! role as one in production) or `RENDER_NO_SANDBOX` is set (containers without user
//! namespaces, where the container is the boundary).
//!
//! A browser that crashed (its connection closed) or hung (a page overran its budget and
//! the grace after it) is killed and replaced at the next page; so is one whose processes
//! use more memory than allowed, once its pages are done.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use futures::StreamExt;
use tokio::sync::{Mutex, OwnedSemaphorePermit, Semaphore};

/// Settings of the browser.
#[derive(Clone, Debug)]
pub struct ChromiumConfig {
    /// The executable (`CHROMIUM_BIN`); else `chromium` (Debian's) or Chrome, found on PATH.
    pub executable: Option<PathBuf>,
    /// Pages rendered at once (each in its own context).
    pub contexts: usize,
    /// The memory the browser's processes may use together; past it, the browser is
    /// replaced once its pages are done.
    pub memory_limit_bytes: u64,
    /// Without chromium's sandbox (`RENDER_NO_SANDBOX`: containers without user namespaces).
    pub no_sandbox: bool,
    /// Where each browser's throwaway profile is made (`RENDER_PROFILE_DIR`; default: the
    /// system's temporary directory).
    pub profile_root: Option<PathBuf>,
}

/// Why the browser could not be used.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(
        "chromium cannot be started ({0}): install Debian's chromium (scripts/ensure-services --render) or set CHROMIUM_BIN"
    )]
    Launch(String),
    #[error("the browser failed: {0}")]
    Protocol(String),
}

/// A running browser.
pub struct Instance {
    /// Always there until the instance is dropped (then killed).
    browser: Option<Browser>,
    /// Set when the connection to the browser ended (it crashed or was killed).
    dead: Arc<AtomicBool>,
    /// Set when it is to be replaced (hung, or over its memory).
    retired: AtomicBool,
    pid: Option<u32>,
    profile: PathBuf,
}

impl Instance {
    fn usable(&self) -> bool {
        !self.dead.load(Ordering::Relaxed) && !self.retired.load(Ordering::Relaxed)
    }

    /// Whether the browser died (its connection ended).
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Relaxed)
    }

    /// The browser.
    pub fn browser(&self) -> Result<&Browser, BrowserError> {
        self.browser
            .as_ref()
            .ok_or_else(|| BrowserError::Protocol("the browser is gone".into()))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let browser = self.browser.take();
        let profile = self.profile.clone();
        if let (Some(mut browser), Ok(runtime)) = (browser, tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                let _ = browser.kill().await;
                let _ = browser.wait().await;
                let _ = tokio::fs::remove_dir_all(&profile).await;
            });
        } else {
            let _ = std::fs::remove_dir_all(&profile);
        }
    }
}

/// The renderer's browser: started on first use, replaced when it dies, hangs or grows.
pub struct Chromium {
    config: ChromiumConfig,
    current: Mutex<Option<Arc<Instance>>>,
    pages: Arc<Semaphore>,
    launches: AtomicU64,
}

/// A page's place in the browser: hold it while the page renders.
pub struct Lease {
    pub instance: Arc<Instance>,
    _page: OwnedSemaphorePermit,
}

impl Chromium {
    pub fn new(config: ChromiumConfig) -> Self {
        Self {
            pages: Arc::new(Semaphore::new(config.contexts.max(1))),
            config,
            current: Mutex::new(None),
            launches: AtomicU64::new(0),
        }
    }

    /// A place for one page, in a browser that works (started or replaced as needed).
    pub async fn lease(&self) -> Result<Lease, BrowserError> {
        let page = Arc::clone(&self.pages)
            .acquire_owned()
            .await
            .map_err(|e| BrowserError::Launch(e.to_string()))?;
        let mut current = self.current.lock().await;
        if let Some(instance) = current.as_ref().filter(|i| i.usable()) {
            return Ok(Lease {
                instance: Arc::clone(instance),
                _page: page,
            });
        }
        // The old browser (if any) goes when its last page lets go of it.
        *current = None;
        let instance = Arc::new(self.launch().await?);
        *current = Some(Arc::clone(&instance));
        Ok(Lease {
            instance,
            _page: page,
        })
    }

    /// Marks the browser for replacement (it hung): its pages fail, the next page starts a
    /// new one.
    pub fn retire(&self, instance: &Instance, why: &str) {
        if !instance.retired.swap(true, Ordering::Relaxed) {
            tracing::warn!(pid = ?instance.pid, "chromium replaced: {why}");
            metrics::counter!("aicache_render_browser_restarts_total").increment(1);
        }
        // Killing it now ends the pages stuck in it.
        if let Some(pid) = instance.pid {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// After a page: a browser over its memory is replaced once its pages are done.
    pub fn check_memory(&self, instance: &Instance) {
        let Some(pid) = instance.pid else { return };
        let used = tree_rss_bytes(pid);
        metrics::gauge!("aicache_render_browser_memory_bytes").set(used as f64);
        if used > self.config.memory_limit_bytes && !instance.retired.swap(true, Ordering::Relaxed)
        {
            tracing::info!(
                pid,
                used_mb = used / (1 << 20),
                "chromium over its memory limit: replaced after its pages"
            );
            metrics::counter!("aicache_render_browser_restarts_total").increment(1);
        }
    }

    async fn launch(&self) -> Result<Instance, BrowserError> {
        let n = self.launches.fetch_add(1, Ordering::Relaxed);
        let root = self
            .config
            .profile_root
            .clone()
            .unwrap_or_else(std::env::temp_dir);
        let profile = root.join(format!("ai-cache-chromium-{}-{n}", std::process::id()));
        let mut builder = BrowserConfig::builder()
            .user_data_dir(&profile)
            .launch_timeout(Duration::from_secs(30))
            .request_timeout(Duration::from_secs(30))
            .args(LAUNCH_ARGS);
        if let Some(path) = self.config.executable.clone().or_else(default_executable) {
            builder = builder.chrome_executable(path);
        }
        if nix::unistd::geteuid().is_root() {
            tracing::warn!(
                "running as root: chromium runs without its sandbox (run the renderer-js role as an unprivileged user to keep it)"
            );
            builder = builder.no_sandbox();
        } else if self.config.no_sandbox {
            tracing::info!("chromium runs without its sandbox (RENDER_NO_SANDBOX)");
            builder = builder.no_sandbox();
        }
        let config = builder.build().map_err(BrowserError::Launch)?;
        let (mut browser, mut handler) = Browser::launch(config)
            .await
            .map_err(|e| BrowserError::Launch(e.to_string()))?;
        let pid = browser.get_mut_child().and_then(|c| c.as_mut_inner().id());
        let dead = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&dead);
        tokio::spawn(async move {
            // The handler drives the connection; it ends when the browser goes away. Errors
            // on single messages are not the end of it.
            while handler.next().await.is_some() {}
            flag.store(true, Ordering::Relaxed);
        });
        tracing::info!(?pid, "chromium started");
        Ok(Instance {
            browser: Some(browser),
            dead,
            retired: AtomicBool::new(false),
            pid,
            profile,
        })
    }
}

/// chromium's flags beyond chromiumoxide's defaults: every request the browser would send
/// itself goes to a proxy address nothing listens on (loopback too: `<-loopback>` removes
/// its default exemption), so only what the renderer answers reaches a page; no popups, no
/// background services, a bounded script heap, `/tmp` instead of a small `/dev/shm`.
const LAUNCH_ARGS: [(&str, &str); 8] = [
    ("proxy-server", "http://127.0.0.1:9"),
    ("proxy-bypass-list", "<-loopback>"),
    ("js-flags", "--max-old-space-size=256"),
    (
        "disable-features",
        "Translate,OptimizationHints,MediaRouter",
    ),
    ("block-new-web-contents", "true"),
    ("disable-dev-shm-usage", "true"),
    ("disable-gpu", "true"),
    ("no-first-run", "true"),
];

/// Debian's `chromium`, else whatever chromiumoxide finds.
pub fn default_executable() -> Option<PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The resident memory of a process and its descendants, from `/proc` (0 where there is no
/// `/proc`).
fn tree_rss_bytes(root: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let page = 4096u64;
    let mut parents = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`: the name may hold spaces, so read after its `)`.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ppid = fields
            .get(1)
            .and_then(|f| f.parse::<u32>().ok())
            .unwrap_or(0);
        let rss = fields
            .get(21)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
        parents.push((pid, ppid, rss * page));
    }
    let mut tree = vec![root];
    let mut total = 0;
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        for (pid, ppid, rss) in &parents {
            if *pid == parent {
                total += rss;
            }
            if *ppid == parent && !tree.contains(pid) {
                tree.push(*pid);
            }
        }
        i += 1;
    }
    total
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_memory_by_proc() {
        let used = super::tree_rss_bytes(std::process::id());
        assert!(used > 1 << 20, "{used}");
    }
}
