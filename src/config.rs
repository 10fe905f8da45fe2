//! Configuration from the environment (and the same names as command-line flags).
//! Every variable is documented in `.env.example`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

/// Where the backing services are and how the process behaves.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Services and process")]
pub struct Config {
    /// PostgreSQL URL. `ai-cache dev` starts its own cluster under DATA_DIR when unset.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// NATS URL, or the URLs of a cluster's servers comma-separated, with the service's user
    /// when the server requires one (`nats://ai-cache:<password>@host:4222`). `ai-cache dev`
    /// starts its own nats-server under DATA_DIR when unset.
    #[arg(long, env = "NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,

    /// Copies of every stream, the blob store and the edge store's bucket (3 on a 3-node NATS
    /// cluster). Applied at start-up and by `ai-cache streams apply`, which also scales
    /// existing streams up or down.
    #[arg(long, env = "NATS_STREAM_REPLICAS", default_value_t = 1)]
    pub nats_stream_replicas: usize,

    /// Address the HTTP API listens on.
    #[arg(long, env = "BIND_ADDR", default_value = "127.0.0.1:8080")]
    pub bind_addr: SocketAddr,

    /// Directory for the local stack's data (`ai-cache dev`).
    #[arg(long, env = "DATA_DIR", default_value = ".data")]
    pub data_dir: PathBuf,

    /// Largest blob (raw HTML, Markdown, rendered HTML) stored, in bytes.
    #[arg(long, env = "BLOB_MAX_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub blob_max_bytes: u64,

    /// Largest number of Postgres connections per process.
    #[arg(long, env = "DB_MAX_CONNECTIONS", default_value_t = 20)]
    pub db_max_connections: u32,

    /// Seconds in-flight work may take to finish on shutdown.
    #[arg(long, env = "SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    #[command(flatten)]
    pub api: ApiConfig,

    #[command(flatten)]
    pub fetch: FetchConfig,

    #[command(flatten)]
    pub pipeline: PipelineConfig,

    /// Log format: `pretty` for people, `json` for log pipelines.
    #[arg(
        long,
        env = "LOG_FORMAT",
        default_value = "pretty",
        help_heading = "Services and process"
    )]
    pub log_format: LogFormat,
}

/// How log lines are written.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

/// Access and limits of the HTTP API.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "API")]
pub struct ApiConfig {
    /// The master API key (all tenants, admin operations). `ai-cache dev` makes one when unset.
    #[arg(long, env = "MASTER_API_KEY", hide_env_values = true)]
    pub master_api_key: Option<String>,

    /// Fernet keys, comma-separated: the first encrypts, all decrypt (rotation).
    #[arg(long, env = "FERNET_KEYS", hide_env_values = true)]
    pub fernet_keys: Option<String>,

    /// One Fernet key (the original system's variable); FERNET_KEYS wins when both are set.
    #[arg(long, env = "FERNET_KEY", hide_env_values = true)]
    pub fernet_key: Option<String>,

    /// Requests per minute per API key (and per IP address without a valid key).
    #[arg(long, env = "RATE_LIMIT_PER_MINUTE", default_value_t = 600)]
    pub rate_limit_per_minute: u32,

    /// Largest request body accepted, in bytes.
    #[arg(long, env = "MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Seconds a write waits for its projection before answering 202 instead.
    #[arg(long, env = "WRITE_TIMEOUT_SECS", default_value_t = 10)]
    pub write_timeout_secs: u64,

    /// Seconds a client may take to send a request's headers, and to start the next request
    /// on a kept-alive connection; then the connection is closed.
    #[arg(long, env = "API_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a client may take to send a request's body (408 after that).
    #[arg(long, env = "API_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,

    /// Most connections the API serves at once; more wait in the listen queue.
    #[arg(long, env = "API_MAX_CONNECTIONS", default_value_t = 2048)]
    pub max_connections: usize,

    /// Secret of the HMAC-SHA256 that replaces visitors' IP addresses. When unset, one is
    /// derived from the first Fernet key (the hashes then change when that key rotates).
    #[arg(long, env = "VISITS_IP_SECRET", hide_env_values = true)]
    pub visits_ip_secret: Option<String>,

    /// Directory of bot operators' published IP ranges (`gptbot.json`, `openai.txt`, ...),
    /// re-read when it changes; without it every bot identity stays `claimed`.
    #[arg(long, env = "BOT_RANGES_DIR")]
    pub bot_ranges_dir: Option<PathBuf>,

    /// Forward-confirmed reverse DNS for the bots of operators that document it (Googlebot,
    /// Bingbot, Applebot...): `system` (the system's resolver), `off`, or one name server's
    /// address (`10.0.0.2:53`).
    #[arg(long, env = "RDNS_RESOLVER", default_value = "system")]
    pub rdns_resolver: crate::infra::rdns::RdnsSource,

    /// Server-Sent Event streams one key may hold open at once (per API process).
    #[arg(long, env = "EVENT_STREAMS_PER_KEY", default_value_t = 8)]
    pub event_streams_per_key: usize,

    /// Seconds between heartbeats (comment lines) on an idle event stream.
    #[arg(long, env = "EVENT_STREAM_HEARTBEAT_SECS", default_value_t = 15)]
    pub event_stream_heartbeat_secs: u64,

    #[command(flatten)]
    pub health: HealthThresholds,
}

/// When `/health` turns degraded (503) although every service answers.
#[derive(Args, Clone, Copy, Debug)]
#[command(next_help_heading = "Health thresholds")]
pub struct HealthThresholds {
    /// Dead letters waiting above which the service is degraded (0: any).
    #[arg(long, env = "HEALTH_MAX_DEAD_LETTERS", default_value_t = 100)]
    pub max_dead_letters: u64,

    /// Events a projection may be behind its stream before the service is degraded.
    #[arg(long, env = "HEALTH_MAX_PROJECTION_LAG", default_value_t = 10_000)]
    pub max_projection_lag: u64,

    /// Messages a stage consumer may have waiting before the service is degraded.
    #[arg(long, env = "HEALTH_MAX_CONSUMER_PENDING", default_value_t = 50_000)]
    pub max_consumer_pending: u64,

    /// Seconds a stage's oldest waiting message may wait while the stage delivers nothing
    /// (nobody pulls, or its pullers are stuck), and a projection's oldest unapplied event
    /// may wait, before the service is degraded.
    #[arg(long, env = "HEALTH_MAX_STALL_SECS", default_value_t = 30)]
    pub max_stall_secs: u64,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        Self {
            max_dead_letters: 100,
            max_projection_lag: 10_000,
            max_consumer_pending: 50_000,
            max_stall_secs: 30,
        }
    }
}

/// Outbound fetching (sitemaps, pages) and discovery limits.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Fetching and sitemaps")]
pub struct FetchConfig {
    /// Allow fetching from private, loopback and link-local addresses (tests and local demos
    /// only: it lets API callers make ai-cache reach internal services).
    #[arg(long, env = "ALLOW_PRIVATE_NETWORKS", default_value_t = false)]
    pub allow_private_networks: bool,

    /// The User-Agent of every outbound request.
    #[arg(long, env = "USER_AGENT", default_value = crate::infra::http::DEFAULT_USER_AGENT)]
    pub user_agent: String,

    /// Seconds a whole request may take (connecting gets a third of it, at most 10 s).
    #[arg(long, env = "FETCH_TIMEOUT_SECS", default_value_t = 30)]
    pub fetch_timeout_secs: u64,

    /// Redirects followed per request.
    #[arg(long, env = "FETCH_MAX_REDIRECTS", default_value_t = 5)]
    pub fetch_max_redirects: usize,

    /// Fixed addresses for host names, comma-separated `host=ip` (like curl's --resolve): for
    /// staging and local demos. Those hosts skip DNS and the private-address rule.
    #[arg(long, env = "FETCH_RESOLVE", value_delimiter = ',', value_parser = parse_resolve)]
    pub fetch_resolve: Vec<(String, std::net::IpAddr)>,

    /// Most URLs one sitemap import takes (the safety limit).
    #[arg(long, env = "SITEMAP_MAX_URLS", default_value_t = 10_000)]
    pub sitemap_max_urls: usize,

    /// Most sitemap documents one import reads.
    #[arg(long, env = "SITEMAP_MAX_SITEMAPS", default_value_t = 500)]
    pub sitemap_max_sitemaps: usize,

    /// Seconds one sitemap run (a preview, an import, a scheduled re-read) may take in all;
    /// sitemaps not read by then are left out (`truncated`).
    #[arg(long, env = "SITEMAP_RUN_TIMEOUT_SECS", default_value_t = 120)]
    pub sitemap_run_timeout_secs: u64,

    /// Largest sitemap document, in bytes, compressed or inflated.
    #[arg(long, env = "SITEMAP_MAX_BYTES", default_value_t = 52_428_800)]
    pub sitemap_max_bytes: usize,
}

impl FetchConfig {
    pub fn http(&self) -> crate::infra::http::HttpConfig {
        let timeout = std::time::Duration::from_secs(self.fetch_timeout_secs.max(1));
        crate::infra::http::HttpConfig {
            user_agent: self.user_agent.clone(),
            allow_private_networks: self.allow_private_networks,
            connect_timeout: (timeout / 3).min(std::time::Duration::from_secs(10)),
            timeout,
            max_redirects: self.fetch_max_redirects,
            resolve: self.fetch_resolve.clone(),
        }
    }

    pub fn discovery(&self) -> crate::commands::discovery::DiscoveryLimits {
        crate::commands::discovery::DiscoveryLimits {
            max_urls: self.sitemap_max_urls,
            max_sitemaps: self.sitemap_max_sitemaps,
            run_timeout: std::time::Duration::from_secs(self.sitemap_run_timeout_secs.max(1)),
            document: crate::domain::sitemap::Limits {
                max_body_bytes: self.sitemap_max_bytes,
                max_inflated_bytes: self.sitemap_max_bytes,
                ..crate::domain::sitemap::Limits::default()
            },
        }
    }
}

fn parse_resolve(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (host, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected host=ip"))?;
    let ip = ip
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: {ip:?} is not an IP address"))?;
    Ok((host.trim().to_ascii_lowercase(), ip))
}

/// The scraper and the scheduler.
#[derive(Args, Clone, Debug)]
#[command(next_help_heading = "Pipeline")]
pub struct PipelineConfig {
    /// Messages each stage handles at once (per process).
    #[arg(long, env = "STAGE_CONCURRENCY", default_value_t = 16)]
    pub stage_concurrency: usize,

    /// Fetches at once to one host (per process).
    #[arg(long, env = "SCRAPER_PER_HOST_CONCURRENCY", default_value_t = 2)]
    pub scraper_per_host_concurrency: usize,

    /// Largest page body fetched, in bytes.
    #[arg(long, env = "SCRAPER_MAX_BYTES", default_value_t = 10 * 1024 * 1024)]
    pub scraper_max_bytes: usize,

    /// The product token matched against robots.txt `User-agent:` lines.
    #[arg(long, env = "ROBOTS_AGENT", default_value = "ai-cache")]
    pub robots_agent: String,

    /// Seconds a host's robots.txt is kept before it is fetched again.
    #[arg(long, env = "ROBOTS_TTL_SECS", default_value_t = 3600)]
    pub robots_ttl_secs: u64,

    /// Seconds between two scheduler passes.
    #[arg(long, env = "SCHEDULER_INTERVAL_SECS", default_value_t = 30)]
    pub scheduler_interval_secs: u64,

    /// The operator's Gemini API key, for clients with `use_gemini` and no key of their own.
    #[arg(long, env = "GEMINI_API_KEY", hide_env_values = true)]
    pub gemini_api_key: Option<String>,

    /// The Gemini model id (configuration, not code: models are retired).
    #[arg(long, env = "GEMINI_MODEL", default_value = "gemini-3.1-flash-lite")]
    pub gemini_model: String,

    /// The Gemini API root (tests and proxies point it elsewhere).
    #[arg(
        long,
        env = "GEMINI_API_BASE",
        default_value = "https://generativelanguage.googleapis.com/v1beta"
    )]
    pub gemini_api_base: String,

    /// The Cloudflare API root (tests and proxies point it elsewhere).
    #[arg(
        long,
        env = "CLOUDFLARE_API_BASE",
        default_value = "https://api.cloudflare.com/client/v4"
    )]
    pub cloudflare_api_base: String,

    /// Cloudflare API requests per account per five minutes, shared by every uploader process
    /// (Cloudflare's limit is 1,200; the default leaves room for the account's other tools).
    #[arg(long, env = "CLOUDFLARE_REQUESTS_PER_5_MIN", default_value_t = 1_000)]
    pub cloudflare_requests_per_5_min: u32,

    /// Milliseconds a Cloudflare write waits for other pages' writes to share its request.
    #[arg(long, env = "CLOUDFLARE_BATCH_MS", default_value_t = 200)]
    pub cloudflare_batch_ms: u64,

    /// Shortest refresh interval a sitemap changefreq can bring (seconds).
    #[arg(long, env = "SCHEDULER_MIN_INTERVAL_SECS", default_value_t = 3600)]
    pub scheduler_min_interval_secs: i64,

    /// The browser the renderer-js role drives (default: Debian's /usr/bin/chromium).
    #[arg(long, env = "CHROMIUM_BIN")]
    pub chromium_bin: Option<std::path::PathBuf>,

    /// Pages the renderer-js role renders at once (per process; each in its own context).
    #[arg(long, env = "RENDER_CONCURRENCY", default_value_t = 2)]
    pub render_concurrency: usize,

    /// Pages the renderer-js role renders a minute at most (per process).
    #[arg(long, env = "RENDER_PAGES_PER_MINUTE", default_value_t = 60)]
    pub render_pages_per_minute: u32,

    /// Seconds a page may render; then it is taken as it is.
    #[arg(long, env = "RENDER_TIMEOUT_SECS", default_value_t = 20)]
    pub render_timeout_secs: u64,

    /// Runs chromium without its sandbox: for containers without user namespaces, where the
    /// container is the boundary (chromium's sandbox is always off as root).
    #[arg(long, env = "RENDER_NO_SANDBOX", default_value_t = false)]
    pub render_no_sandbox: bool,

    /// Where the browser's throwaway profiles are made (default: the temporary directory).
    #[arg(long, env = "RENDER_PROFILE_DIR")]
    pub render_profile_dir: Option<std::path::PathBuf>,

    /// Memory (MiB) the browser's processes may use together before it is replaced.
    #[arg(long, env = "RENDER_MEMORY_MB", default_value_t = 1024)]
    pub render_memory_mb: u64,
}

#[cfg(test)]
mod tests {
    use clap::{Args, Command};

    use super::Config;

    #[test]
    fn every_variable_is_documented_in_env_example() {
        let example = include_str!("../.env.example");
        let command = Config::augment_args(Command::new("ai-cache"));
        let missing: Vec<String> = command
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .filter(|env| !example.contains(&format!("{env}=")))
            .collect();
        assert!(missing.is_empty(), "not in .env.example: {missing:?}");
    }
}
