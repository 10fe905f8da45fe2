//! Wiring: connect to the backbone, prepare it (streams, migrations), and run roles.

use crate::infra::rdns::ReverseDns;
use crate::infra::robots_store::{RobotsRules, RobotsStore};
use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::commands::discovery::{Discovery, Importer};
use crate::commands::tenants::Tenants;
use crate::commands::visits::{IpHasher, Visits};
use crate::config::{ApiConfig, FetchConfig, PipelineConfig};
use crate::events::PageEvent;
use crate::infra::blobs::BlobStore;
use crate::infra::bot_ranges::BotRanges;
use crate::infra::http::HttpClient;
use crate::infra::nats::Nats;
use crate::infra::publish::Publisher;
use crate::infra::secrets::Secret;
use crate::infra::secrets::Secrets;
use crate::infra::{db, streams};
use crate::pipeline::kv_batch::KvBatcher;
use crate::pipeline::markdown::{Gemini, MarkdownStage};
use crate::pipeline::renderer::RendererStage;
use crate::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
use crate::pipeline::scheduler;
use crate::pipeline::scraper::{Scraper, ScraperConfig};
use crate::pipeline::uploader::{Cloudflare, Uploader};
use crate::projections::{self, runtime::ProjectionRunner};

/// A role a process can run. Any number of processes may run any subset of roles.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The HTTP API (`/health`, `/metrics`, `/api/v1/...`).
    Api,
    /// The projectors: every read model kept up to date from the streams.
    Projections,
    /// The scraper stage: fetches discovered and refresh-requested pages.
    Scraper,
    /// Asks for pages to be fetched again when they are due.
    Scheduler,
    /// The Markdown stage: changed content to Markdown.
    Markdown,
    /// The renderer stage: Markdown to minimal HTML.
    Renderer,
    /// Runs pages that need JavaScript in a browser (chromium) before extraction.
    RendererJs,
    /// The uploader stage: pages to the edge store, `pages.updated`.
    Uploader,
    /// Plans reprocessing runs: re-sends the selected pages' inputs to their first stage.
    Reprocessor,
    /// Delivers page events to the clients' webhooks.
    Webhooks,
}

impl Role {
    pub const ALL: [Role; 10] = [
        Role::Api,
        Role::Projections,
        Role::Scraper,
        Role::Scheduler,
        Role::Markdown,
        Role::Renderer,
        Role::RendererJs,
        Role::Uploader,
        Role::Reprocessor,
        Role::Webhooks,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_roles_means_every_role() {
        use clap::ValueEnum;
        let every = Role::value_variants();
        assert_eq!(Role::ALL.len(), every.len());
        assert!(
            every.iter().all(|r| Role::ALL.contains(r)),
            "`ai-cache dev` must run every role"
        );
    }
}

/// What the roles need besides the backbone.
pub struct Setup {
    /// The api role's listener and state.
    pub api: Option<(tokio::net::TcpListener, AppState)>,
    pub fetch: FetchConfig,
    pub pipeline: PipelineConfig,
    pub blob_max_bytes: u64,
    pub shutdown_grace: std::time::Duration,
    /// The Fernet keys, for the uploader to decrypt Cloudflare tokens (None: not configured).
    pub secrets: Option<Arc<Secrets>>,
}

/// Connections to NATS and Postgres.
#[derive(Clone)]
pub struct Backbone {
    pub db: PgPool,
    pub nats: Nats,
    /// Copies of every stream, the object store and the KV bucket (`NATS_STREAM_REPLICAS`).
    pub stream_replicas: usize,
}

impl Backbone {
    /// Connects to both services.
    pub async fn connect(
        database_url: &str,
        nats_url: &str,
        max_db_connections: u32,
    ) -> anyhow::Result<Self> {
        let nats = Nats::connect(nats_url, "ai-cache").await?;
        let db = db::connect(database_url, max_db_connections).await?;
        Ok(Self {
            db,
            nats,
            stream_replicas: 1,
        })
    }

    /// Streams applied with `replicas` copies each (a NATS cluster).
    pub fn with_stream_replicas(mut self, replicas: usize) -> Self {
        self.stream_replicas = replicas.max(1);
        self
    }

    /// Connects to both services, waiting for each while it is down (logging what it waits
    /// for, retrying with backoff) until it answers or `shutdown` is cancelled (`Ok(None)`).
    /// A NATS URL that cannot be right is an error at once: waiting would not help.
    pub async fn connect_waiting(
        database_url: &str,
        nats_url: &str,
        max_db_connections: u32,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<Option<Self>> {
        crate::infra::nats::servers(nats_url)?;
        let Some(nats) = until_up("NATS", shutdown, || Nats::connect(nats_url, "ai-cache")).await
        else {
            return Ok(None);
        };
        let Some(db) = until_up("PostgreSQL", shutdown, || {
            db::connect(database_url, max_db_connections)
        })
        .await
        else {
            return Ok(None);
        };
        Ok(Some(Self {
            db,
            nats,
            stream_replicas: 1,
        }))
    }

    /// [`Backbone::prepare`], retried while NATS or PostgreSQL is away (`None`: shut down
    /// while waiting).
    pub async fn prepare_waiting(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<Vec<streams::Applied>> {
        until_up("NATS and PostgreSQL", shutdown, || self.prepare()).await
    }

    /// Applies the stream definitions and the migrations; every role does this at start-up.
    pub async fn prepare(&self) -> anyhow::Result<Vec<streams::Applied>> {
        let defs = streams::replicated(streams::embedded()?, self.stream_replicas);
        let report = streams::apply(&self.nats.js, &defs).await?;
        db::migrate(&self.db).await?;
        Ok(report)
    }
}

/// Retries `attempt` with backoff (0.5 s doubling to 5 s) until it succeeds, logging each
/// failure as what the process waits for; `None` once `shutdown` is cancelled.
async fn until_up<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut attempt: F,
) -> Option<T>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut delay = std::time::Duration::from_millis(500);
    loop {
        let error = tokio::select! {
            _ = shutdown.cancelled() => return None,
            result = attempt() => match result {
                Ok(value) => return Some(value),
                Err(e) => e,
            },
        };
        tracing::warn!(waiting_for = what, error = %error, retry_in_ms = delay.as_millis() as u64, "waiting for {what}");
        tokio::select! {
            _ = shutdown.cancelled() => return None,
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(std::time::Duration::from_secs(5));
    }
}

/// The tenant commands, with the configured Fernet keys.
pub fn tenants(backbone: &Backbone, config: &ApiConfig) -> anyhow::Result<Tenants> {
    let secrets =
        Secrets::from_config(config.fernet_keys.as_deref(), config.fernet_key.as_deref())?;
    Ok(Tenants::new(
        backbone.db.clone(),
        backbone.nats.js.clone(),
        Arc::new(secrets),
        std::time::Duration::from_secs(config.write_timeout_secs),
    ))
}

/// Sitemap discovery with the configured fetching rules and limits.
pub fn discovery(fetch: &FetchConfig) -> anyhow::Result<Discovery> {
    Ok(Discovery::new(
        HttpClient::new(&fetch.http())?,
        fetch.discovery(),
    ))
}

/// Visit recording with the configured IP secret and bot ranges.
async fn visits(backbone: &Backbone, config: &ApiConfig) -> anyhow::Result<Visits> {
    let secret = match config.visits_ip_secret.as_deref().map(str::trim) {
        Some(s) if !s.is_empty() => s.as_bytes().to_vec(),
        _ => {
            let first = config
                .fernet_keys
                .as_deref()
                .or(config.fernet_key.as_deref())
                .and_then(|keys| keys.split(',').map(str::trim).find(|k| !k.is_empty()))
                .context("VISITS_IP_SECRET or a Fernet key is needed to hash visitors' IPs")?;
            IpHasher::new(b"ai-cache visits ip v1").hash_secret(first.as_bytes())
        }
    };
    let ranges = match &config.bot_ranges_dir {
        // The watcher lives as long as the process.
        Some(dir) => BotRanges::watch(dir.clone(), CancellationToken::new())?,
        None => BotRanges::default(),
    };
    Ok(Visits::new(
        Publisher::new(backbone.nats.js.clone()),
        ranges,
        IpHasher::new(&secret),
    )
    .with_robots(RobotsRules::new(
        RobotsStore::open(&backbone.nats.js).await?,
    ))
    .with_rdns(ReverseDns::new(&config.rdns_resolver).map_err(anyhow::Error::msg)?))
}

/// Everything the API role needs; refuses to start without a master key or a Fernet key.
pub async fn api_state(
    backbone: &Backbone,
    config: &ApiConfig,
    fetch: &FetchConfig,
    pipeline: &PipelineConfig,
) -> anyhow::Result<AppState> {
    let master = config
        .master_api_key
        .as_deref()
        .filter(|k| !k.trim().is_empty())
        .context("MASTER_API_KEY is not set: the API needs a master key")?;
    anyhow::ensure!(
        master.trim().len() >= 16,
        "MASTER_API_KEY must be at least 16 characters"
    );
    let visits = visits(backbone, config).await?;
    Ok(AppState::new(api::Services {
        db: backbone.db.clone(),
        nats: backbone.nats.clone(),
        tenants: tenants(backbone, config)?,
        auth: Arc::new(
            api::auth::Auth::new(master.trim(), config.rate_limit_per_minute)
                .with_shared(
                    crate::infra::limits::SharedRates::open(&backbone.nats.js, "api")
                        .await
                        .map_err(anyhow::Error::msg)?,
                )
                .with_key_cache(&backbone.nats),
        ),
        max_body_bytes: config.max_body_bytes,
        discovery: discovery(fetch)?,
        schedule_min_secs: pipeline.scheduler_min_interval_secs,
        blobs: BlobStore::open(
            &backbone.nats.js,
            pipeline.scraper_max_bytes.max(16 << 20) as u64,
        )
        .await?,
        visits: visits.clone(),
        edge: Arc::new(api::edge::Edge::new(
            crate::infra::edge_store::EdgeStore::open(&backbone.nats.js).await?,
            visits,
            crate::infra::key_directory::KeyDirectories::new(HttpClient::new(&fetch.http())?),
        )),
        health: config.health,
        webhook_allow_private: fetch.allow_private_networks,
        connections: api::server::ConnectionLimits::from_config(config),
        event_streams: Arc::new(api::event_stream::EventStreams::new(
            config.event_streams_per_key,
            std::time::Duration::from_secs(config.event_stream_heartbeat_secs),
        )),
        reprocessing: crate::commands::reprocess::Reprocessing::new(
            backbone.db.clone(),
            backbone.nats.js.clone(),
        ),
        importer: Importer::new(
            backbone.db.clone(),
            backbone.nats.js.clone(),
            std::time::Duration::from_secs(config.write_timeout_secs),
        ),
    }))
}

/// Runs `roles` until `shutdown` is cancelled or one of them fails; on the way out every
/// role gets to finish its in-flight work.
pub async fn run_roles(
    backbone: &Backbone,
    roles: &[Role],
    setup: Setup,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let api = setup.api;
    // Install the recorder before any role counts anything.
    crate::telemetry::metrics();
    let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
    if roles.contains(&Role::Api) {
        let (listener, state) = api.context("the api role needs a listener and its state")?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            api::serve(listener, state, shutdown)
                .await
                .context("api server")
        });
        tracing::info!(role = "api", "role started");
    }
    if roles.contains(&Role::Projections) {
        for projection in projections::all() {
            let runner = Arc::new(
                ProjectionRunner::new(projection, backbone.db.clone(), backbone.nats.js.clone())
                    .on_reconnect(backbone.nats.reconnects()),
            );
            let shutdown = shutdown.clone();
            tasks.spawn(async move { runner.run(shutdown).await.map_err(Into::into) });
        }
        tracing::info!(role = "projections", "role started");
    }
    let options = RuntimeOptions {
        concurrency: setup.pipeline.stage_concurrency,
        shutdown_grace: setup.shutdown_grace,
        ..RuntimeOptions::default()
    };
    if roles.contains(&Role::Scraper) {
        let config = ScraperConfig {
            max_body_bytes: setup.pipeline.scraper_max_bytes,
            per_host_concurrency: setup.pipeline.scraper_per_host_concurrency,
            robots_agent: setup.pipeline.robots_agent.clone(),
            robots_ttl: std::time::Duration::from_secs(setup.pipeline.robots_ttl_secs),
        };
        let blobs = BlobStore::open(&backbone.nats.js, setup.blob_max_bytes).await?;
        let http = HttpClient::new(&setup.fetch.http())?;
        let scraper = Arc::new(
            Scraper::new(&backbone.nats.js, http, backbone.db.clone(), blobs, &config)
                .await
                .map_err(|e| anyhow::anyhow!("starting the scraper: {e}"))?,
        );
        for durable in ["scraper-discovered", "scraper-refresh"] {
            spawn_stage(
                &mut tasks,
                backbone,
                durable,
                Arc::clone(&scraper),
                options.clone(),
                &shutdown,
            )
            .await?;
        }
        tracing::info!(role = "scraper", "role started");
    }
    if roles.contains(&Role::Markdown) {
        let blobs = BlobStore::open(&backbone.nats.js, setup.blob_max_bytes).await?;
        let gemini = Gemini {
            client: crate::infra::gemini::GeminiClient::new(
                &setup.pipeline.gemini_api_base,
                &setup.pipeline.gemini_model,
                std::time::Duration::from_secs(120),
            )?,
            secrets: setup.secrets.clone(),
            operator_key: setup
                .pipeline
                .gemini_api_key
                .clone()
                .filter(|k| !k.trim().is_empty())
                .map(Secret::new),
            db: backbone.db.clone(),
        };
        let stage = MarkdownStage::new(&backbone.nats.js, blobs, Some(gemini))
            .await
            .map_err(|e| anyhow::anyhow!("starting the markdown stage: {e}"))?;
        spawn_stage(
            &mut tasks,
            backbone,
            "markdown",
            stage,
            options.clone(),
            &shutdown,
        )
        .await?;
        tracing::info!(role = "markdown", "role started");
    }
    if roles.contains(&Role::Renderer) {
        let blobs = BlobStore::open(&backbone.nats.js, setup.blob_max_bytes).await?;
        let stage = RendererStage::new(&backbone.nats.js, blobs)
            .await
            .map_err(|e| anyhow::anyhow!("starting the renderer: {e}"))?;
        spawn_stage(
            &mut tasks,
            backbone,
            "renderer",
            stage,
            options.clone(),
            &shutdown,
        )
        .await?;
        tracing::info!(role = "renderer", "role started");
    }
    if roles.contains(&Role::RendererJs) {
        let p = &setup.pipeline;
        let blobs = BlobStore::open(&backbone.nats.js, setup.blob_max_bytes).await?;
        let http = HttpClient::new(&setup.fetch.http())?;
        // Started at the first page that needs it: a process with no such page never runs
        // a browser (nor needs one installed).
        let chromium = Arc::new(crate::infra::chromium::Chromium::new(
            crate::infra::chromium::ChromiumConfig {
                executable: p.chromium_bin.clone(),
                contexts: p.render_concurrency,
                memory_limit_bytes: p.render_memory_mb.saturating_mul(1 << 20),
                profile_root: p.render_profile_dir.clone(),
                no_sandbox: p.render_no_sandbox,
            },
        ));
        let config = crate::pipeline::renderer_js::RenderConfig {
            timeout: std::time::Duration::from_secs(p.render_timeout_secs.max(1)),
            pages_per_minute: p.render_pages_per_minute,
            max_resource_bytes: p.scraper_max_bytes,
            per_host_concurrency: p.scraper_per_host_concurrency,
        };
        let step = crate::pipeline::renderer_js::RendererJs::new(
            &backbone.nats.js,
            http,
            backbone.db.clone(),
            blobs,
            chromium,
            config,
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting the renderer-js role: {e}"))?;
        let options = RuntimeOptions {
            concurrency: p.render_concurrency.max(1),
            ..options.clone()
        };
        spawn_stage(
            &mut tasks,
            backbone,
            "renderer-js",
            step,
            options,
            &shutdown,
        )
        .await?;
        tracing::info!(role = "renderer-js", "role started");
    }
    if roles.contains(&Role::Uploader) {
        let blobs = BlobStore::open(&backbone.nats.js, setup.blob_max_bytes).await?;
        let kv = crate::infra::cloudflare::KvClient::new(
            &setup.pipeline.cloudflare_api_base,
            std::time::Duration::from_secs(60),
        )?
        .with_budget(
            crate::infra::limits::SharedRates::open(&backbone.nats.js, "cloudflare")
                .await
                .map_err(anyhow::Error::msg)?,
            setup.pipeline.cloudflare_requests_per_5_min,
        );
        let cloudflare = setup.secrets.clone().map(|secrets| Cloudflare {
            batcher: KvBatcher::start(
                kv,
                std::time::Duration::from_millis(setup.pipeline.cloudflare_batch_ms),
            ),
            secrets,
        });
        let uploader = Arc::new(
            Uploader::new(
                &backbone.nats.js,
                backbone.db.clone(),
                blobs,
                cloudflare.clone(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("starting the uploader: {e}"))?,
        );
        for durable in ["uploader", "uploader-removed"] {
            spawn_stage(
                &mut tasks,
                backbone,
                durable,
                Arc::clone(&uploader),
                options.clone(),
                &shutdown,
            )
            .await?;
        }
        let llms = crate::pipeline::llms::LlmsFiles::new(
            backbone.db.clone(),
            BlobStore::open(&backbone.nats.js, setup.blob_max_bytes).await?,
            Arc::clone(&uploader),
            RobotsStore::open(&backbone.nats.js).await?,
        );
        spawn_stage(
            &mut tasks,
            backbone,
            "llms",
            Arc::clone(&llms),
            options.clone(),
            &shutdown,
        )
        .await?;
        let settings = crate::pipeline::edge_settings::EdgeSettings::new(cloudflare.clone())
            .with_site_files(Arc::clone(&llms));
        let runtime = ConsumerRuntime::<crate::events::ClientEvent, _>::new(
            backbone.nats.js.clone(),
            "uploader-settings",
            settings,
            options.clone(),
        );
        runtime.check().await?;
        let stop = shutdown.clone();
        tasks.spawn(async move { runtime.run(stop).await.map_err(Into::into) });
        let stop = shutdown.clone();
        tasks.spawn(async move {
            llms.run(stop).await;
            Ok(())
        });
        tracing::info!(role = "uploader", "role started");
    }
    if roles.contains(&Role::Reprocessor) {
        let planner =
            crate::pipeline::reprocess::Planner::new(backbone.db.clone(), &backbone.nats.js)
                .await
                .map_err(|e| anyhow::anyhow!("starting the reprocessor: {e}"))?;
        let runtime = ConsumerRuntime::<crate::events::ClientEvent, _>::new(
            backbone.nats.js.clone(),
            "reprocessor",
            planner,
            options.clone(),
        );
        runtime.check().await?;
        let shutdown = shutdown.clone();
        tasks.spawn(async move { runtime.run(shutdown).await.map_err(Into::into) });
        tracing::info!(role = "reprocessor", "role started");
    }
    if roles.contains(&Role::Webhooks) {
        let secrets = setup
            .secrets
            .clone()
            .context("the webhooks role needs the Fernet keys to decrypt webhook secrets")?;
        let http = HttpClient::new(&setup.fetch.http())?;
        let deliverer =
            crate::pipeline::webhooks::WebhookDeliverer::new(backbone.db.clone(), http, secrets);
        spawn_stage(
            &mut tasks,
            backbone,
            "webhooks",
            deliverer,
            options.clone(),
            &shutdown,
        )
        .await?;
        tracing::info!(role = "webhooks", "role started");
    }
    if roles.contains(&Role::Scheduler) {
        let (db, js) = (backbone.db.clone(), backbone.nats.js.clone());
        let every = std::time::Duration::from_secs(setup.pipeline.scheduler_interval_secs.max(1));
        let min = setup.pipeline.scheduler_min_interval_secs;
        let shutdown = shutdown.clone();
        tasks.spawn(async move {
            scheduler::run(db, js, every, min, shutdown).await;
            Ok(())
        });
        tracing::info!(role = "scheduler", "role started");
    }
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(error = format!("{e:#}"), "role failed, stopping the others");
            shutdown.cancel();
            first_error.get_or_insert(e);
        } else if !shutdown.is_cancelled() {
            // A role that returns on its own is as bad as one that fails.
            shutdown.cancel();
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs `step` on the durable consumer `durable` of PAGES, after checking the consumer exists.
async fn spawn_stage<S: crate::pipeline::runtime::Step<PageEvent>>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    backbone: &Backbone,
    durable: &str,
    step: S,
    options: RuntimeOptions,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let runtime =
        ConsumerRuntime::<PageEvent, _>::new(backbone.nats.js.clone(), durable, step, options);
    runtime.check().await?;
    let shutdown = shutdown.clone();
    tasks.spawn(async move { runtime.run(shutdown).await.map_err(Into::into) });
    Ok(())
}

/// A token cancelled on Ctrl-C or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term => {}
        }
        tracing::info!("shutting down");
        cancel.cancel();
    });
    token
}
