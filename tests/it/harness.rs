//! The test harness: real servers, started by the tests themselves.
//!
//! - One throwaway PostgreSQL cluster per test binary (fsync off), with a migrated template
//!   database; each test gets a fresh database copied from it.
//! - One nats-server per test (its own port and storage), so tests can stop and restart it.
//! - Helpers that wait for a condition (a checkpoint, a stream count) with a deadline instead
//!   of sleeping.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ai_cache::app::{self, Backbone, Role};
use ai_cache::infra::localstack::{self, Durability, LocalNats, LocalPostgres};
use async_nats::jetstream;
use sqlx::PgPool;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

const TEMPLATE_DB: &str = "aicache_template";

/// The shared cluster (port and admin URL); the process stays up until the test binary exits.
struct SharedPostgres {
    admin_url: String,
    url_prefix: String,
    _server: Mutex<LocalPostgres>,
}

pub fn temp_dir(prefix: &str) -> PathBuf {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temp dir")
        .keep()
}

async fn shared_postgres() -> &'static SharedPostgres {
    static PG: OnceCell<SharedPostgres> = OnceCell::const_new();
    PG.get_or_init(|| async {
        let dir = temp_dir("aicache-test-pg-");
        let server = tokio::task::spawn_blocking(move || {
            LocalPostgres::start(&dir, Durability::Throwaway, true)
        })
        .await
        .expect("join")
        .expect("postgres starts");
        let admin_url = server.url("postgres");
        localstack::ensure_database(&admin_url, TEMPLATE_DB)
            .await
            .expect("template db");
        let pool = ai_cache::infra::db::connect(&server.url(TEMPLATE_DB), 2)
            .await
            .expect("connect");
        ai_cache::infra::db::migrate(&pool)
            .await
            .expect("migrations");
        pool.close().await;
        let url_prefix = server.url("");
        SharedPostgres {
            admin_url,
            url_prefix,
            _server: Mutex::new(server),
        }
    })
    .await
}

/// A fresh, migrated database.
pub async fn fresh_database() -> (String, PgPool) {
    let pg = shared_postgres().await;
    let name = format!("test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = localstack::connect_with_retry(&pg.admin_url, Duration::from_secs(10))
        .await
        .expect("admin");
    // Copying the template needs it idle ("source database is being accessed by other
    // users" while another test copies it): retry until our turn.
    let sql = format!("CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql.clone()))
        .execute(&mut admin)
        .await
    {
        assert!(
            Instant::now() < deadline,
            "cannot create a test database: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let url = format!("{}{name}", pg.url_prefix);
    let pool = ai_cache::infra::db::connect(&url, 10)
        .await
        .expect("connect");
    (url, pool)
}

/// A nats-server of its own, with its storage in a temp dir removed at exit.
pub fn start_nats() -> LocalNats {
    LocalNats::start(&temp_dir("aicache-test-nats-"), None, true).expect("nats-server starts")
}

/// The API, the projections and every stage a page goes through to be live.
pub const PIPELINE_ROLES: [Role; 6] = [
    Role::Api,
    Role::Projections,
    Role::Scraper,
    Role::Markdown,
    Role::Renderer,
    Role::Uploader,
];

/// The master key of every test app.
pub const MASTER_KEY: &str = "test-master-key-0123456789abcdef";

/// Settings a test may change.
#[derive(Clone, Debug)]
pub struct Options {
    pub rate_limit_per_minute: u32,
    pub max_body_bytes: usize,
    pub fernet_keys: Vec<String>,
    pub sitemap_max_urls: usize,
    pub allow_private_networks: bool,
    pub fetch_timeout_secs: u64,
    /// Where the uploader finds the Cloudflare API (a fake, in tests that use it).
    pub cloudflare_api_base: String,
    /// Where the Markdown stage finds Gemini (a fake, in tests that use it), and the operator's key.
    pub gemini_api_base: String,
    pub gemini_api_key: Option<String>,
    pub gemini_model: String,
    /// Host names the app's fetcher resolves to 127.0.0.1 (a test origin's domains).
    pub local_hosts: Vec<String>,
    /// Bot operators' IP ranges (BOT_RANGES_DIR).
    pub bot_ranges_dir: Option<PathBuf>,
    /// Reverse DNS (off unless a test serves its own DNS).
    pub rdns_resolver: ai_cache::infra::rdns::RdnsSource,
    /// When /health turns degraded.
    pub health: ai_cache::config::HealthThresholds,
    /// A PostgreSQL cluster of the test's own (to stop and restart it), not the shared one.
    pub own_postgres: bool,
    /// How long one sitemap run may take.
    pub sitemap_run_timeout_secs: u64,
    /// The API's header and body deadlines.
    pub header_timeout_secs: u64,
    pub body_timeout_secs: u64,
    /// The renderer-js role's page budget, and where its browsers keep their profiles (a
    /// test finds its own browser's processes by it).
    pub render_timeout_secs: u64,
    pub render_profile_dir: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            rate_limit_per_minute: 100_000,
            max_body_bytes: 64 * 1024,
            fernet_keys: vec![ai_cache::infra::secrets::Secrets::generate_key()],
            sitemap_max_urls: 10_000,
            allow_private_networks: true,
            fetch_timeout_secs: 5,
            cloudflare_api_base: "http://127.0.0.1:9/no-cloudflare-in-this-test".into(),
            gemini_api_base: "http://127.0.0.1:9/no-gemini-in-this-test".into(),
            gemini_api_key: None,
            gemini_model: "known-model".into(),
            local_hosts: vec!["site.test".into(), "other.test".into()],
            bot_ranges_dir: None,
            rdns_resolver: ai_cache::infra::rdns::RdnsSource::Off,
            health: ai_cache::config::HealthThresholds::default(),
            own_postgres: false,
            header_timeout_secs: 10,
            body_timeout_secs: 30,
            sitemap_run_timeout_secs: 120,
            render_timeout_secs: 10,
            render_profile_dir: None,
        }
    }
}

impl Options {
    /// Small, fast settings for the pipeline roles.
    pub fn pipeline_config(&self) -> ai_cache::config::PipelineConfig {
        ai_cache::config::PipelineConfig {
            stage_concurrency: 8,
            scraper_per_host_concurrency: 4,
            scraper_max_bytes: 1024 * 1024,
            robots_agent: "ai-cache".into(),
            robots_ttl_secs: 3600,
            scheduler_interval_secs: 1,
            scheduler_min_interval_secs: 3600,
            cloudflare_api_base: self.cloudflare_api_base.clone(),
            cloudflare_batch_ms: 100,
            cloudflare_requests_per_5_min: 1_000,
            gemini_api_key: self.gemini_api_key.clone(),
            gemini_model: self.gemini_model.clone(),
            gemini_api_base: self.gemini_api_base.clone(),
            chromium_bin: None,
            render_concurrency: 2,
            render_pages_per_minute: 600,
            render_timeout_secs: self.render_timeout_secs,
            render_profile_dir: self.render_profile_dir.clone(),
            render_memory_mb: 1024,
            render_no_sandbox: false,
        }
    }

    /// Tests fetch from their own origin on 127.0.0.1 (private networks allowed by default,
    /// and `local_hosts` resolving there).
    pub fn fetch_config(&self) -> ai_cache::config::FetchConfig {
        ai_cache::config::FetchConfig {
            allow_private_networks: self.allow_private_networks,
            fetch_resolve: self
                .local_hosts
                .iter()
                .map(|h| (h.clone(), std::net::Ipv4Addr::LOCALHOST.into()))
                .collect(),
            user_agent: ai_cache::infra::http::DEFAULT_USER_AGENT.into(),
            fetch_timeout_secs: self.fetch_timeout_secs,
            fetch_max_redirects: 5,
            sitemap_max_urls: self.sitemap_max_urls,
            sitemap_max_sitemaps: 100,
            sitemap_run_timeout_secs: self.sitemap_run_timeout_secs,
            sitemap_max_bytes: 8 * 1024 * 1024,
        }
    }

    pub fn api_config(&self) -> ai_cache::config::ApiConfig {
        ai_cache::config::ApiConfig {
            master_api_key: Some(MASTER_KEY.into()),
            fernet_keys: Some(self.fernet_keys.join(",")),
            fernet_key: None,
            rate_limit_per_minute: self.rate_limit_per_minute,
            max_body_bytes: self.max_body_bytes,
            write_timeout_secs: 10,
            header_timeout_secs: self.header_timeout_secs,
            body_timeout_secs: self.body_timeout_secs,
            max_connections: 4096,
            visits_ip_secret: Some("test-visits-ip-secret".into()),
            bot_ranges_dir: self.bot_ranges_dir.clone(),
            rdns_resolver: self.rdns_resolver.clone(),
            event_streams_per_key: 2,
            event_stream_heartbeat_secs: 1,
            health: self.health,
        }
    }
}

/// A running ai-cache: its own NATS, a fresh database, streams and migrations applied, and
/// the chosen roles running in this process.
pub struct TestApp {
    pub nats: LocalNats,
    pub backbone: Backbone,
    pub api: Option<String>,
    pub db_url: String,
    pub options: Options,
    /// The test's own cluster, with `Options::own_postgres`.
    pub postgres: Option<LocalPostgres>,
    shutdown: CancellationToken,
}

impl TestApp {
    /// Every role.
    pub async fn spawn() -> Self {
        Self::with_roles(&Role::ALL).await
    }

    pub async fn with_roles(roles: &[Role]) -> Self {
        Self::with_options(roles, Options::default()).await
    }

    pub async fn with_options(roles: &[Role], options: Options) -> Self {
        // Logs go to the test's captured output: shown only when the test fails.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "info".into()),
            )
            .with_test_writer()
            .try_init();
        let nats = tokio::task::spawn_blocking(start_nats).await.expect("join");
        let (db_url, postgres) = if options.own_postgres {
            let dir = temp_dir("aicache-test-own-pg-");
            let server = tokio::task::spawn_blocking(move || {
                LocalPostgres::start(&dir, Durability::Throwaway, true)
            })
            .await
            .expect("join")
            .expect("postgres starts");
            localstack::ensure_database(&server.url("postgres"), "aicache")
                .await
                .expect("database");
            (server.url("aicache"), Some(server))
        } else {
            (fresh_database().await.0, None)
        };
        let backbone = Backbone::connect(&db_url, &nats.url(), 10)
            .await
            .expect("connect");
        backbone.prepare().await.expect("streams and migrations");
        let server = if roles.contains(&Role::Api) {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let state = app::api_state(
                &backbone,
                &options.api_config(),
                &options.fetch_config(),
                &options.pipeline_config(),
            )
            .await
            .expect("api state");
            Some((listener, state))
        } else {
            None
        };
        let api = server
            .as_ref()
            .map(|(l, _)| format!("http://{}", l.local_addr().expect("addr")));
        let shutdown = CancellationToken::new();
        {
            let backbone = backbone.clone();
            let roles = roles.to_vec();
            let shutdown = shutdown.clone();
            let setup = app::Setup {
                api: server,
                fetch: options.fetch_config(),
                pipeline: options.pipeline_config(),
                blob_max_bytes: 16 * 1024 * 1024,
                shutdown_grace: std::time::Duration::from_secs(5),
                secrets: Some(std::sync::Arc::new(
                    ai_cache::infra::secrets::Secrets::new(&options.fernet_keys)
                        .expect("fernet keys"),
                )),
            };
            tokio::spawn(async move { app::run_roles(&backbone, &roles, setup, shutdown).await });
        }
        Self {
            nats,
            backbone,
            api,
            db_url,
            options,
            postgres,
            shutdown,
        }
    }

    /// Tenant commands with other Fernet keys (rotation tests).
    pub fn tenants_with(
        app: &TestApp,
        fernet_keys: Vec<String>,
    ) -> ai_cache::commands::tenants::Tenants {
        let options = Options {
            fernet_keys,
            ..app.options.clone()
        };
        app::tenants(&app.backbone, &options.api_config()).expect("tenants")
    }

    /// A request to the API with the master key.
    pub fn master(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.request(method, path).header("X-API-Key", MASTER_KEY)
    }

    /// Adds URLs as pages of `client` (by hand, through the API); panics unless accepted.
    pub async fn add_urls(&self, client: &str, urls: &[String]) {
        expect_ok(
            self.master(
                reqwest::Method::POST,
                &format!("/api/v1/clients/{client}/pages"),
            )
            .json(&serde_json::json!({ "urls": urls })),
        )
        .await;
    }

    /// Sets a client's crawl rate (requests a minute to one host); panics unless accepted.
    pub async fn crawl_rate(&self, client: &str, per_minute: u32) {
        expect_ok(
            self.master(reqwest::Method::PUT, &format!("/api/v1/clients/{client}"))
                .json(&serde_json::json!({"settings": {"crawl_rate_per_minute": per_minute}})),
        )
        .await;
    }

    /// A request to the API without a key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let base = self.api.as_deref().expect("the api role runs");
        reqwest::Client::new().request(method, format!("{base}{path}"))
    }

    pub fn js(&self) -> &jetstream::Context {
        &self.backbone.nats.js
    }

    pub fn db(&self) -> &PgPool {
        &self.backbone.db
    }

    /// Waits until projection `name` has applied stream sequence `seq`.
    pub async fn wait_for_checkpoint(&self, name: &str, seq: u64) {
        let db = self.db().clone();
        let name = name.to_owned();
        eventually(
            Duration::from_secs(30),
            &format!("projection {name} reaches {seq}"),
            || {
                let db = db.clone();
                let name = name.clone();
                async move {
                    let at: Option<i64> = sqlx::query_scalar(
                        "SELECT last_seq FROM projection_checkpoints WHERE name = $1",
                    )
                    .bind(&name)
                    .fetch_optional(&db)
                    .await
                    .ok()
                    .flatten();
                    at.is_some_and(|at| at >= i64::try_from(seq).unwrap_or(i64::MAX))
                }
            },
        )
        .await;
    }
}

impl TestApp {
    /// Waits until each of `consumers` (durables on `stream`, in pipeline order) has nothing
    /// pending and nothing in flight. Checked in order, so a stage's output, published before
    /// it acked, is already counted by the next stage when that one is asked.
    pub async fn drained(&self, stream: &str, consumers: &[&str]) {
        let stream = self.js().get_stream(stream).await.expect("stream");
        eventually(
            Duration::from_secs(60),
            &format!("{consumers:?} are drained"),
            || {
                let stream = stream.clone();
                async move {
                    for name in consumers {
                        let Ok(info) = stream.consumer_info(*name).await else {
                            return false;
                        };
                        if info.num_pending > 0 || info.num_ack_pending > 0 {
                            return false;
                        }
                    }
                    true
                }
            },
        )
        .await;
    }

    /// Waits until projection `name` has applied everything on `stream` so far.
    pub async fn caught_up(&self, name: &str, stream: &str) {
        let last = self.last_seq(stream).await;
        self.wait_for_checkpoint(name, last).await;
    }

    /// The last sequence assigned on `stream`.
    pub async fn last_seq(&self, stream: &str) -> u64 {
        ai_cache::infra::nats::last_sequence(self.js(), stream)
            .await
            .expect("stream")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Sends `request`; panics with the body unless it is answered 200.
async fn expect_ok(request: reqwest::RequestBuilder) {
    let res = request.send().await.expect("request");
    // 202: done, its projection still applying it (a loaded machine).
    assert!(
        matches!(res.status().as_u16(), 200 | 202),
        "{}: {}",
        res.status(),
        res.text().await.unwrap_or_default()
    );
}

/// Messages stored on `stream` (all subjects, or those matching `filter`).
pub async fn stream_count(js: &jetstream::Context, stream: &str, filter: Option<&str>) -> u64 {
    let mut s = js.get_stream(stream).await.expect("stream");
    match filter {
        None => s.info().await.expect("info").state.messages,
        Some(filter) => {
            let info = s.info_with_subjects(filter).await.expect("info");
            futures::StreamExt::fold(info, 0u64, |acc, r| async move {
                acc + r.map(|(_, n)| n as u64).unwrap_or(0)
            })
            .await
        }
    }
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Retries `op` until it succeeds; panics with its last error after `timeout`.
pub async fn eventually_ok<F, Fut, T, E>(timeout: Duration, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    let deadline = Instant::now() + timeout;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("still failing after {timeout:?}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A shared list a test step records into.
pub type Recorder<T> = Arc<Mutex<Vec<T>>>;

pub fn recorder<T>() -> Recorder<T> {
    Arc::new(Mutex::new(Vec::new()))
}
