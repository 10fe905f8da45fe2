//! `ai-cache sitemap parse|import`.

use std::path::Path;

use anyhow::Context;
use clap::Subcommand;

use crate::app;
use crate::commands::discovery::{ImportOptions, Importer, import_sitemap};
use crate::config::Config;
use crate::domain::sitemap::{self, Entry};

#[derive(Subcommand, Debug)]
pub enum SitemapCommand {
    /// Print a sitemap's entries as JSON, one object per line (loc, lastmod, changefreq,
    /// priority). A URL follows sitemap indexes; a file is read as it is. Problems go to
    /// stderr; the exit code is not 0 when the document could not be (fully) read.
    Parse {
        /// A URL (http/https) or a file.
        source: String,
        /// Do not follow sitemap indexes (URLs only).
        #[arg(long)]
        no_recursive: bool,
        /// How many levels of sitemap indexes to follow.
        #[arg(long, default_value_t = 3)]
        max_depth: u32,
    },
    /// Import a sitemap's URLs as pages of a client, with a progress bar, and print the summary.
    Import {
        /// The client, by id or domain.
        #[arg(long)]
        client: String,
        /// A sitemap, sitemap index or site URL.
        url: String,
        /// Do not follow sitemap indexes.
        #[arg(long)]
        no_recursive: bool,
        /// How many levels of sitemap indexes to follow.
        #[arg(long, default_value_t = 3)]
        max_depth: u32,
        /// Update the sitemap metadata of known pages.
        #[arg(long)]
        overwrite: bool,
        /// Report what would happen; create nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub async fn run(config: &Config, command: SitemapCommand) -> anyhow::Result<()> {
    match command {
        SitemapCommand::Parse {
            source,
            no_recursive,
            max_depth,
        } => parse(config, &source, !no_recursive, max_depth).await,
        SitemapCommand::Import {
            client,
            url,
            no_recursive,
            max_depth,
            overwrite,
            dry_run,
        } => {
            let backbone = super::connect(config).await?;
            let row = super::tenants::resolve(&backbone.db, &client).await?;
            let discovery = app::discovery(&config.fetch)?;
            let bar = indicatif::ProgressBar::new_spinner().with_message("reading sitemaps");
            let on_progress = |n: usize| bar.set_message(format!("{n} URLs found"));
            let importer = Importer::new(
                backbone.db.clone(),
                backbone.nats.js.clone(),
                std::time::Duration::from_secs(config.api.write_timeout_secs),
            );
            let options = ImportOptions {
                recursive: !no_recursive,
                max_depth,
                create_pages: !dry_run,
                overwrite,
            };
            let done =
                import_sitemap(&discovery, &importer, &row, &url, options, &on_progress).await?;
            bar.finish_and_clear();
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "summary": done.summary,
                    "client": {"id": row.id, "name": row.name, "domain": row.domain},
                    "sitemaps": done.sitemaps,
                }))?
            );
            Ok(())
        }
    }
}

async fn parse(
    config: &Config,
    source: &str,
    recursive: bool,
    max_depth: u32,
) -> anyhow::Result<()> {
    let is_url = source.starts_with("http://") || source.starts_with("https://");
    let (entries, problems): (Vec<Entry>, Vec<String>) = if is_url {
        let found = app::discovery(&config.fetch)?
            .discover(source, recursive, max_depth, &|_| {})
            .await?;
        let problems = found
            .issues
            .iter()
            .map(|i| format!("{}: {}", i.url, i.reason))
            .chain(found.warnings)
            .collect();
        (
            found.entries.into_iter().map(|(e, _)| e).collect(),
            problems,
        )
    } else {
        let bytes =
            std::fs::read(Path::new(source)).with_context(|| format!("cannot read {source}"))?;
        let parsed = sitemap::parse(&bytes, &config.fetch.discovery().document)?;
        let mut problems = parsed.warnings.clone();
        if let Some(e) = &parsed.error {
            problems.push(format!("error: {e} (entries before it are printed)"));
        }
        (parsed.entries, problems)
    };
    for entry in &entries {
        println!("{}", serde_json::to_string(entry)?);
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if problems.iter().any(|p| p.starts_with("error: ")) {
        anyhow::bail!("{source}: the document broke off");
    }
    Ok(())
}

/// `ai-cache crawl`: starts a crawl and, with `watch`, prints its progress until it stops
/// growing (no new page for 10 seconds).
pub async fn crawl(
    config: &Config,
    client: &str,
    request: crate::commands::crawl::CrawlRequest,
    watch: bool,
) -> anyhow::Result<()> {
    use crate::projections::pages as pages_read;
    let backbone = super::connect(config).await?;
    let row = super::tenants::resolve(&backbone.db, client).await?;
    anyhow::ensure!(row.is_active, "the client is inactive");
    let publisher = crate::infra::publish::Publisher::new(backbone.nats.js.clone());
    let started = crate::commands::crawl::start(&publisher, &backbone.db, &row, request).await?;
    println!("{}", serde_json::to_string_pretty(&started)?);
    if !watch {
        return Ok(());
    }
    let mut last = None;
    let mut quiet = 0;
    while quiet < 5 {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let progress = pages_read::crawl_progress(&backbone.db, row.id, started.run_id).await?;
        println!("{}", serde_json::to_string(&progress)?);
        quiet = if last.as_ref() == Some(&progress) {
            quiet + 1
        } else {
            0
        };
        last = Some(progress);
    }
    Ok(())
}
