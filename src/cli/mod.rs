//! The `ai-cache` command line: one binary, a subcommand for every role and tool.

mod bench;
pub mod bots;
mod deadletters;
mod demo;
mod dev;
mod dev_env;
mod extract;
mod ops;
mod sitemap;
mod status;
mod subscribers;
mod tenants;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

pub use dev_env::parse;

use crate::app::{self, Backbone, Role};
use crate::config::Config;
use crate::infra::streams::{self, Change};
use crate::projections::{self, runtime};

/// ai-cache: clean Markdown and minimal HTML of websites for AI crawlers, through an
/// event-sourced pipeline on NATS JetStream.
#[derive(Parser, Debug)]
#[command(name = "ai-cache", version, propagate_version = true)]
#[command(
    after_help = "Roles (for `run --roles`): api, projections, scraper, scheduler, markdown, renderer, uploader, reprocessor, webhooks.\n\
    Configuration comes from the environment (see .env.example); every variable is also a flag."
)]
pub struct Cli {
    #[command(flatten)]
    pub config: Config,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything in one process for local use: starts nats-server and PostgreSQL under
    /// DATA_DIR unless NATS_URL / DATABASE_URL are set, then every role.
    Dev,
    /// Run chosen roles against the configured NATS and Postgres (production).
    Run {
        /// Roles to run, comma-separated.
        #[arg(long, env = "ROLES", value_delimiter = ',', default_values = ["api", "projections", "scraper", "scheduler", "markdown", "renderer", "renderer-js", "uploader", "reprocessor", "webhooks"])]
        roles: Vec<Role>,
    },
    /// Apply the database migrations.
    Migrate,
    /// Stream and consumer definitions (`streams/`).
    Streams {
        #[command(subcommand)]
        command: StreamsCommand,
    },
    /// Rebuild read models from the streams.
    Replay {
        #[command(subcommand)]
        command: ReplayCommand,
    },
    /// Every client's pages by status and stage, what each stage holds, dead letters.
    Status {
        /// Only this client (id or domain).
        #[arg(long)]
        client: Option<String>,
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// Redraw every this many seconds until Ctrl-C.
        #[arg(long, value_name = "SECS")]
        watch: Option<u64>,
    },
    /// Event history: a page's whole history, or live events.
    Events {
        #[command(subcommand)]
        command: ops::EventsCommand,
    },
    /// Run a client's pages through the pipeline again from a stage.
    Reprocess {
        #[command(subcommand)]
        command: ops::ReprocessCommand,
    },
    /// Messages the stages gave up on: list, show, re-drive, discard.
    DeadLetters {
        #[command(subcommand)]
        command: deadletters::DeadLetterCommand,
    },
    /// Read sitemaps: preview one, or import it as a client's pages.
    Sitemap {
        #[command(subcommand)]
        command: sitemap::SitemapCommand,
    },
    /// Discover a client's pages by following its links from start pages (default: its home
    /// page) within a depth and a page budget; prints the run, then its progress with --watch.
    Crawl {
        /// The client, by id or domain.
        #[arg(long)]
        client: String,
        /// A start page (repeat for several).
        #[arg(long = "url")]
        urls: Vec<String>,
        /// Links followed from a start page (1 to 10).
        #[arg(long, default_value_t = 3)]
        max_depth: u32,
        /// Most pages the crawl finds (1 to 50,000).
        #[arg(long, default_value_t = 500)]
        max_pages: u32,
        /// Print the crawl's progress every 2 seconds until it stops growing.
        #[arg(long)]
        watch: bool,
    },
    /// Manage clients (tenants).
    Client {
        #[command(subcommand)]
        command: tenants::ClientCommand,
    },
    /// Manage per-client API keys.
    Key {
        #[command(subcommand)]
        command: tenants::KeyCommand,
    },
    /// NATS users: the service's own, and subscribers that may read one client's
    /// `pages.updated` events and nothing else.
    Subscriber {
        /// The auth directory (users.json and the auth.conf nats-server includes); default
        /// `<DATA_DIR>/nats-auth`.
        #[arg(long, env = "NATS_AUTH_DIR")]
        auth_dir: Option<PathBuf>,
        #[command(subcommand)]
        command: subscribers::SubscriberCommand,
    },
    /// Fernet keys: generate one, re-encrypt every stored secret with the first.
    Secrets {
        #[command(subcommand)]
        command: tenants::SecretsCommand,
    },
    /// Print the Markdown the local generator makes of an HTML file.
    Extract {
        /// The page's URL (links are made absolute against it).
        #[arg(long)]
        url: String,
        /// `markdown` (default) or `json` (Markdown plus metadata).
        #[arg(long, default_value = "markdown")]
        format: String,
        /// The HTML file.
        file: PathBuf,
    },
    /// Score the local generator over a corpus of pages with expected extractions and write the
    /// report (docs/EXTRACTION_QUALITY.md).
    ExtractReport {
        /// A directory of test pages, each with `source.html` and `expected.html`.
        #[arg(
            long,
            default_value = "../shared/data/readability-test-pages/test-pages"
        )]
        corpus: PathBuf,
        /// Where the report is written.
        #[arg(long, default_value = "docs/EXTRACTION_QUALITY.md")]
        out: PathBuf,
    },
    /// The bot catalogue (catalogue/bots.json) and the Worker's copy of it.
    Catalogue {
        #[command(subcommand)]
        command: bots::CatalogueCommand,
    },
    /// Classify user agents: one per line on stdin, one JSON object per line on stdout. With
    /// --ranges-dir, a line may be `<ip><TAB><user agent>` and the answer says how far the
    /// bot's identity was verified.
    ClassifyUa {
        /// Bot operators' published IP ranges (`gptbot.json`, `openai.txt`, ...).
        #[arg(long, env = "BOT_RANGES_DIR")]
        ranges_dir: Option<PathBuf>,
    },
    /// Measure the backbone on a throwaway local stack and print the figures.
    Bench {
        /// Events per measurement.
        #[arg(long, default_value_t = 100_000)]
        events: usize,
        /// Only the backbone ceiling and the edge figures (classification, visit ingestion,
        /// the built-in edge route).
        #[arg(long)]
        edge_only: bool,
        /// Also write every figure, with each ratio to its ceiling, as JSON to this file.
        #[arg(long, value_name = "PATH")]
        json: Option<PathBuf>,
    },
}

impl Command {
    /// The default log level: what the services do is worth a line; a tool's output is its
    /// answer, so only its warnings go to the terminal.
    pub fn log_level(&self) -> &'static str {
        match self {
            Self::Dev | Self::Run { .. } | Self::Bench { .. } => "info",
            _ => "warn",
        }
    }
}

#[derive(Subcommand, Debug)]
pub enum StreamsCommand {
    /// Create or update every stream and durable consumer; reports what changed.
    Apply {
        /// Apply the definitions in this directory instead of the built-in ones.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReplayCommand {
    /// Empty projections and rebuild them from sequence 1 of their streams; with --verify,
    /// rebuild them beside the live tables instead and compare row for row.
    Projections {
        /// Only this projection (clients, pages, visits).
        #[arg(long)]
        name: Option<String>,
        /// Leave the live tables alone: rebuild into a scratch schema, compare with the live
        /// rows at the same stream position, report, and fail if anything differs.
        #[arg(long)]
        verify: bool,
    },
}

impl Cli {
    pub async fn run(self) -> anyhow::Result<()> {
        let config = self.config;
        match self.command {
            Command::Dev => dev::run(&config).await,
            Command::Run { roles } => {
                // A role started while NATS or PostgreSQL is down waits for them.
                let shutdown = app::shutdown_on_signal();
                let Some(backbone) = connect_waiting(&config, &shutdown).await? else {
                    return Ok(());
                };
                if backbone.prepare_waiting(&shutdown).await.is_none() {
                    return Ok(());
                }
                let api = api_if_wanted(&config, &backbone, &roles).await?;
                app::run_roles(&backbone, &roles, setup(&config, api), shutdown).await
            }
            Command::Sitemap { command } => sitemap::run(&config, command).await,
            Command::Crawl {
                client,
                urls,
                max_depth,
                max_pages,
                watch,
            } => {
                let request = crate::commands::crawl::CrawlRequest {
                    seeds: urls,
                    max_depth,
                    max_pages,
                };
                sitemap::crawl(&config, &client, request, watch).await
            }
            Command::DeadLetters { command } => deadletters::run(&config, command).await,
            Command::Events { command } => ops::events(&config, command).await,
            Command::Status {
                client,
                json,
                watch,
            } => status::run(&config, client, json, watch).await,
            Command::Reprocess { command } => ops::reprocess(&config, command).await,
            Command::Client { command } => tenants::client(&config, command).await,
            Command::Key { command } => tenants::key(&config, command).await,
            Command::Secrets { command } => tenants::secrets(&config, command).await,
            Command::Subscriber { auth_dir, command } => {
                subscribers::run(&config, auth_dir, command).await
            }
            Command::Migrate => {
                let url = config
                    .database_url
                    .as_deref()
                    .context("DATABASE_URL is not set")?;
                let db = crate::infra::db::connect(url, 2).await?;
                crate::infra::db::migrate(&db).await?;
                println!("migrations applied");
                Ok(())
            }
            Command::Streams {
                command: StreamsCommand::Apply { dir },
            } => {
                let url = config.nats_url.as_deref().context("NATS_URL is not set")?;
                let nats = crate::infra::nats::Nats::connect(url, "ai-cache-cli").await?;
                let defs = match dir {
                    Some(dir) => streams::from_dir(&dir)?,
                    None => streams::embedded()?,
                };
                let defs = streams::replicated(defs, config.nats_stream_replicas);
                print_report(&streams::apply(&nats.js, &defs).await?);
                Ok(())
            }
            Command::Replay {
                command: ReplayCommand::Projections { name, verify },
            } => {
                let backbone = connect(&config).await?;
                backbone.prepare().await?;
                replay_projections(&backbone, name.as_deref(), verify).await
            }
            Command::Extract { url, format, file } => {
                anyhow::ensure!(
                    matches!(format.as_str(), "markdown" | "json"),
                    "--format is markdown or json"
                );
                extract::extract(&file, &url, format == "json")
            }
            Command::ExtractReport { corpus, out } => extract::report(&corpus, &out),
            Command::Catalogue { command } => bots::catalogue(command),
            Command::ClassifyUa { ranges_dir } => bots::classify_ua(ranges_dir.as_deref()),
            Command::Bench {
                events,
                edge_only,
                json,
            } => bench::run(events, edge_only, json.as_deref()).await,
        }
    }
}

/// Connects to the configured services, waiting while they are down; `None` when shut down
/// while waiting.
pub(crate) async fn connect_waiting(
    config: &Config,
    shutdown: &tokio_util::sync::CancellationToken,
) -> anyhow::Result<Option<Backbone>> {
    let db = config
        .database_url
        .as_deref()
        .context("DATABASE_URL is not set")?;
    let nats = config.nats_url.as_deref().context("NATS_URL is not set")?;
    Ok(
        Backbone::connect_waiting(db, nats, config.db_max_connections, shutdown)
            .await?
            .map(|b| b.with_stream_replicas(config.nats_stream_replicas)),
    )
}

pub(crate) async fn connect(config: &Config) -> anyhow::Result<Backbone> {
    let db = config
        .database_url
        .as_deref()
        .context("DATABASE_URL is not set")?;
    let nats = config.nats_url.as_deref().context("NATS_URL is not set")?;
    Ok(Backbone::connect(db, nats, config.db_max_connections)
        .await?
        .with_stream_replicas(config.nats_stream_replicas))
}

/// Everything the roles need, from the configuration.
pub(crate) fn setup(
    config: &Config,
    api: Option<(tokio::net::TcpListener, crate::api::AppState)>,
) -> app::Setup {
    app::Setup {
        api,
        fetch: config.fetch.clone(),
        pipeline: config.pipeline.clone(),
        blob_max_bytes: config.blob_max_bytes,
        shutdown_grace: std::time::Duration::from_secs(config.shutdown_grace_secs),
        secrets: crate::infra::secrets::Secrets::from_config(
            config.api.fernet_keys.as_deref(),
            config.api.fernet_key.as_deref(),
        )
        .ok()
        .map(std::sync::Arc::new),
    }
}

/// The api role's listener and state, when the api role is wanted.
async fn api_if_wanted(
    config: &Config,
    backbone: &Backbone,
    roles: &[Role],
) -> anyhow::Result<Option<(tokio::net::TcpListener, crate::api::AppState)>> {
    if !roles.contains(&Role::Api) {
        return Ok(None);
    }
    let state = app::api_state(backbone, &config.api, &config.fetch, &config.pipeline).await?;
    let listener = tokio::net::TcpListener::bind(config.bind_addr)
        .await
        .with_context(|| format!("cannot listen on {}", config.bind_addr))?;
    Ok(Some((listener, state)))
}

pub(crate) fn print_report(report: &[streams::Applied]) {
    for line in report {
        let change = match line.change {
            Change::Created => "created",
            Change::Updated => "updated",
            Change::Unchanged => "unchanged",
        };
        println!("{:<10} {}", change, line.what);
    }
    let changed = report
        .iter()
        .filter(|l| l.change != Change::Unchanged)
        .count();
    println!("{changed} of {} definitions changed", report.len());
}

async fn replay_projections(
    backbone: &Backbone,
    name: Option<&str>,
    verify: bool,
) -> anyhow::Result<()> {
    let selected: Vec<_> = projections::all()
        .into_iter()
        .filter(|p| name.is_none_or(|n| n == p.name()))
        .collect();
    if selected.is_empty() {
        anyhow::bail!(
            "no projection named {:?}; known: clients, pages, visits",
            name.unwrap_or_default()
        );
    }
    let mut differences = false;
    for projection in selected {
        let name = projection.name();
        let bar = indicatif::ProgressBar::new(0).with_message(name);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:>8} [{bar:40}] {pos}/{len} events ({per_sec})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        let progress = |position: u64, end: u64| {
            bar.set_length(end);
            bar.set_position(position);
        };
        if verify {
            let report =
                projections::verify::verify(&backbone.db, &backbone.nats.js, projection, &progress)
                    .await?;
            bar.finish();
            for t in &report.tables {
                println!(
                    "{name}: {:<10} {:>9} rows, {} only live, {} only rebuilt",
                    t.table, t.rows, t.only_live, t.only_rebuilt
                );
            }
            println!(
                "{name}: rebuilt up to stream sequence {} in {:.1} s: {}",
                report.position,
                report.seconds,
                if report.equal() {
                    "equal to the live rows"
                } else {
                    "DIFFERENT"
                }
            );
            differences |= !report.equal();
            continue;
        }
        let position =
            runtime::rebuild(&backbone.db, &backbone.nats.js, projection, &progress).await?;
        bar.finish();
        println!("{name}: rebuilt up to stream sequence {position}");
    }
    anyhow::ensure!(
        !differences,
        "a rebuilt projection differs from the live one"
    );
    Ok(())
}

#[cfg(test)]
mod help_tests {
    use clap::CommandFactory;

    fn missing(command: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" || arg.is_hide_set() {
                continue;
            }
            if arg.get_help().is_none() && arg.get_long_help().is_none() {
                out.push(format!("{path} {id}"));
            }
        }
        for sub in command.get_subcommands() {
            if sub.get_about().is_none() {
                out.push(format!("{path} {} (no about)", sub.get_name()));
            }
            missing(sub, &format!("{path} {}", sub.get_name()), out);
        }
    }

    #[test]
    fn every_command_and_option_says_what_it_is_for() {
        let mut out = Vec::new();
        missing(&super::Cli::command(), "ai-cache", &mut out);
        assert!(out.is_empty(), "without help text: {out:#?}");
    }
}
