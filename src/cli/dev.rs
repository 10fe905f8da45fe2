//! `ai-cache dev`: the local stack and every role in one process.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::dev_env;
use crate::app::{self, Backbone, Role};
use crate::config::Config;
use crate::infra::localstack::{self, Durability, LocalNats, LocalPostgres};
use crate::infra::secrets::Secrets;

/// `ai-cache dev`: the local stack and every role in one process.
pub(super) async fn run(config: &Config) -> anyhow::Result<()> {
    let data_dir = std::path::absolute(&config.data_dir).context("resolving DATA_DIR")?;
    let servers = LocalServers::start(config, &data_dir).await?;
    // Servers configured from outside may be down for now: wait for them.
    let shutdown = app::shutdown_on_signal();
    let Some(backbone) = Backbone::connect_waiting(
        &servers.db_url,
        &servers.nats_url,
        config.db_max_connections,
        &shutdown,
    )
    .await?
    else {
        return Ok(());
    };
    let backbone = backbone.with_stream_replicas(config.nats_stream_replicas);
    let Some(report) = backbone.prepare_waiting(&shutdown).await else {
        return Ok(());
    };
    super::print_report(&report);
    let mut config = with_dev_keys(config, &data_dir)?;
    let demo_port = if demo_wanted() {
        let port = super::demo::serve(&data_dir).await?;
        config.fetch.fetch_resolve.push((
            super::demo::HOST.to_owned(),
            std::net::Ipv4Addr::LOCALHOST.into(),
        ));
        Some(port)
    } else {
        None
    };
    let api_server = super::api_if_wanted(&config, &backbone, &Role::ALL).await?;
    let api = api_server.as_ref().and_then(|(l, _)| l.local_addr().ok());
    dev_env::write(&data_dir, &settings(&config, &servers))?;
    print_banner(api, &servers, &data_dir);
    let setup = super::setup(&config, api_server);
    let roles = {
        let (backbone, shutdown) = (backbone.clone(), shutdown.clone());
        tokio::spawn(async move { app::run_roles(&backbone, &Role::ALL, setup, shutdown).await })
    };
    if let Some(port) = demo_port {
        match super::demo::import(&backbone, &config, port).await {
            Ok(()) => {
                if let Some(api) = api {
                    let (db, data_dir) = (backbone.db.clone(), data_dir.clone());
                    tokio::spawn(async move {
                        if let Err(e) = super::demo::first_visits(&db, &data_dir, api, port).await {
                            eprintln!("the demo's first visits could not be sent: {e:#}");
                        }
                    });
                }
            }
            Err(e) => eprintln!("the demo site could not be imported: {e:#}"),
        }
    }
    roles.await?
}

/// The NATS and PostgreSQL servers of the dev stack: the configured ones, or servers started
/// here (in the data directory, stopped with this value).
struct LocalServers {
    nats_url: String,
    db_url: String,
    // Stopped in this order when dropped: PostgreSQL, then NATS.
    _pg: Option<LocalPostgres>,
    _nats: Option<LocalNats>,
}

impl LocalServers {
    async fn start(config: &Config, data_dir: &Path) -> anyhow::Result<Self> {
        let (nats_url, nats) = match &config.nats_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = data_dir.join("nats");
                let conf = Some(PathBuf::from("nats.conf")).filter(|p| p.exists());
                let port = localstack::port_or_free(dev_env::remembered_port(data_dir, "nats"))?;
                let nats = tokio::task::spawn_blocking(move || {
                    LocalNats::start_on(&dir, conf.as_deref(), false, port)
                })
                .await??;
                dev_env::remember_port(data_dir, "nats", port)?;
                (nats.url(), Some(nats))
            }
        };
        let (db_url, pg) = match &config.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = localstack::postgres_dir(&data_dir.join("postgres"));
                println!("PostgreSQL data: {}", dir.display());
                let port =
                    localstack::port_or_free(dev_env::remembered_port(data_dir, "postgres"))?;
                let pg = tokio::task::spawn_blocking(move || {
                    LocalPostgres::start_on(&dir, Durability::Durable, false, port)
                })
                .await??;
                dev_env::remember_port(data_dir, "postgres", port)?;
                localstack::ensure_database(&pg.url("postgres"), "aicache").await?;
                (pg.url("aicache"), Some(pg))
            }
        };
        Ok(Self {
            nats_url,
            db_url,
            _pg: pg,
            _nats: nats,
        })
    }
}

/// `config` with the dev stack's master key and Fernet key (kept in the data directory, made
/// on the first run) where the environment gives none.
fn with_dev_keys(config: &Config, data_dir: &Path) -> anyhow::Result<Config> {
    let mut config = config.clone();
    config.api.master_api_key = Some(dev_secret(
        data_dir,
        "master_api_key",
        config.api.master_api_key.take(),
        random_master_key,
    )?);
    if config.api.fernet_keys.is_none() {
        config.api.fernet_key = Some(dev_secret(
            data_dir,
            "fernet_key",
            config.api.fernet_key.take(),
            Secrets::generate_key,
        )?);
    }
    Ok(config)
}

/// What the commands run beside the dev stack need: its servers, its keys, its fetch settings.
fn settings(config: &Config, servers: &LocalServers) -> Vec<(&'static str, String)> {
    let mut settings = vec![
        ("DATABASE_URL", servers.db_url.clone()),
        ("NATS_URL", servers.nats_url.clone()),
    ];
    if let Some(key) = &config.api.master_api_key {
        settings.push(("MASTER_API_KEY", key.clone()));
    }
    match (&config.api.fernet_keys, &config.api.fernet_key) {
        (Some(keys), _) => settings.push(("FERNET_KEYS", keys.clone())),
        (None, Some(key)) => settings.push(("FERNET_KEY", key.clone())),
        (None, None) => {}
    }
    if !config.fetch.fetch_resolve.is_empty() {
        let resolve: Vec<String> = config
            .fetch
            .fetch_resolve
            .iter()
            .map(|(host, ip)| format!("{host}={ip}"))
            .collect();
        settings.push(("FETCH_RESOLVE", resolve.join(",")));
    }
    if config.fetch.allow_private_networks {
        settings.push(("ALLOW_PRIVATE_NETWORKS", "true".into()));
    }
    settings
}

/// Where everything is, once it runs.
fn print_banner(api: Option<std::net::SocketAddr>, servers: &LocalServers, data_dir: &Path) {
    println!();
    println!("ai-cache dev is running (Ctrl-C stops it and the servers it started)");
    if let Some(api) = api {
        // The dev master key rides in the fragment, which the browser never sends: the
        // dashboard keeps it in the tab's session storage and drops it from the address bar.
        let key = std::fs::read_to_string(data_dir.join("master_api_key"))
            .ok()
            .filter(|_| std::env::var_os("MASTER_API_KEY").is_none())
            .map(|k| {
                let k = percent_encoding::utf8_percent_encode(
                    k.trim(),
                    percent_encoding::NON_ALPHANUMERIC,
                );
                format!("#key={k}")
            })
            .unwrap_or_default();
        println!("  dashboard  http://{api}/dashboard{key}");
        println!(
            "  API        http://{api}   (docs: http://{api}/docs, health: http://{api}/health, metrics: http://{api}/metrics)"
        );
    }
    println!(
        "  NATS       {}",
        crate::infra::nats::redacted(&servers.nats_url)
    );
    println!("  Postgres   {}", servers.db_url);
    println!("  data       {}", data_dir.display());
    if std::env::var_os("MASTER_API_KEY").is_none() {
        println!(
            "  master key {}/master_api_key   (X-API-Key for /api/v1)",
            data_dir.display()
        );
    }
}

/// Whether to serve and import the demo site (`DEMO=false` skips it).
fn demo_wanted() -> bool {
    std::env::var("DEMO").map_or(true, |v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "false" | "0" | "no" | "off"
        )
    })
}

/// A secret `ai-cache dev` needs and the user did not set: kept in DATA_DIR (mode 600) so it
/// stays the same from one run to the next.
fn dev_secret(
    data_dir: &Path,
    name: &str,
    given: Option<String>,
    make: fn() -> String,
) -> anyhow::Result<String> {
    if let Some(given) = given {
        return Ok(given);
    }
    let path = data_dir.join(name);
    if let Ok(existing) = std::fs::read_to_string(&path) {
        return Ok(existing.trim().to_owned());
    }
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let value = make();
    std::fs::write(&path, &value).with_context(|| format!("writing {}", path.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(value)
}

fn random_master_key() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}
