//! `ai-cache events` (a page's history, live events) and `ai-cache reprocess` (run a client's
//! pages through the pipeline again, with a progress bar).

use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use futures::StreamExt;
use uuid::Uuid;

use super::tenants::{print_json, resolve};
use crate::commands::event_log::{self, StoredEvent};
use crate::commands::reprocess::{Reprocessing, RunSpec, RunView};
use crate::config::Config;
use crate::domain::ids::{ClientId, PageId};
use crate::domain::url::NormalizedUrl;
use crate::events::pages::Stage;
use crate::projections::sql;

#[derive(Subcommand, Debug)]
pub enum EventsCommand {
    /// Print a page's whole history from the PAGES stream, oldest first.
    Page {
        /// The page's id, or its URL.
        page: String,
        /// Print JSON (one object per event) instead of lines.
        #[arg(long)]
        json: bool,
    },
    /// Follow events as they are published (Ctrl-C stops).
    Tail {
        /// Only this client's events.
        #[arg(long)]
        client: Option<Uuid>,
        /// Only this event type, e.g. `pages.updated`.
        #[arg(long = "type")]
        event_type: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ReprocessCommand {
    /// Run a client's pages through the pipeline again from a stage, and follow the run
    /// (the `reprocessor` role and the stages must be running somewhere).
    Start {
        /// The client's id or domain.
        #[arg(long)]
        client: String,
        /// scrape, markdown, render or upload.
        #[arg(long = "from")]
        from_stage: Stage,
        /// Only pages whose URL starts with this.
        #[arg(long)]
        url_prefix: Option<String>,
        /// Only pages whose Markdown was last made at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<DateTime<Utc>>,
        /// Only pages whose Markdown was last made before this time (RFC 3339).
        #[arg(long)]
        until: Option<DateTime<Utc>>,
        /// Make every output again even where input and version did not change.
        #[arg(long)]
        force: bool,
        /// Print the run and return instead of following it.
        #[arg(long)]
        no_wait: bool,
    },
    /// Show a run (and follow it with --wait).
    Status {
        /// The run's id.
        run: Uuid,
        /// Follow it with a progress bar until it ends.
        #[arg(long)]
        wait: bool,
    },
}

pub async fn events(config: &Config, command: EventsCommand) -> anyhow::Result<()> {
    let backbone = super::connect(config).await?;
    match command {
        EventsCommand::Page { page, json } => {
            let (client, page) = page_ids(&backbone.db, &page).await?;
            let mut after = 0;
            loop {
                let chunk =
                    event_log::page_events(&backbone.nats.js, client, page, after, 1000).await?;
                for event in &chunk.items {
                    if json {
                        println!("{}", serde_json::to_string(event)?);
                    } else {
                        println!("{}", line(event));
                    }
                }
                match chunk.next_after {
                    Some(next) => after = next,
                    None => return Ok(()),
                }
            }
        }
        EventsCommand::Tail { client, event_type } => {
            if let Some(t) = &event_type {
                anyhow::ensure!(
                    event_log::known_type(t),
                    "unknown event type {t:?}; known: {}",
                    event_log::all_types().join(", ")
                );
            }
            let subjects = match &event_type {
                Some(t) => vec![format!("{t}.>")],
                None => ["pages.>", "clients.>", "visits.>"]
                    .map(String::from)
                    .to_vec(),
            };
            let nats = &backbone.nats.client;
            let mut subscriptions = Vec::new();
            for subject in subjects {
                subscriptions.push(nats.subscribe(subject).await?);
            }
            let mut messages = futures::stream::select_all(subscriptions);
            eprintln!("following events (Ctrl-C stops)");
            while let Some(msg) = messages.next().await {
                let (event_client, _) = event_log::subject_ids(&msg.subject);
                if client.is_some_and(|c| event_client != Some(c)) {
                    continue;
                }
                let event = event_log::stored(0, Utc::now(), &msg.subject, &msg.payload);
                println!("{}", line(&event));
            }
            Ok(())
        }
    }
}

/// A page's client and id, from its id or its URL (looked up in the pages projection).
async fn page_ids(db: &sqlx::PgPool, page: &str) -> anyhow::Result<(ClientId, PageId)> {
    let row: Option<(Uuid, Uuid)> = if let Ok(id) = page.parse::<Uuid>() {
        sqlx::query_as(sql::pages::IDS_BY_ID)
            .bind(id)
            .fetch_optional(db)
            .await?
    } else {
        let url = NormalizedUrl::parse(page).map_err(|e| anyhow::anyhow!("{page:?}: {e}"))?;
        sqlx::query_as(sql::pages::IDS_BY_URL)
            .bind(url.as_str())
            .fetch_optional(db)
            .await?
    };
    let (client, id) = row.with_context(|| format!("no page {page:?}"))?;
    Ok((ClientId::from_uuid(client), PageId::from_uuid(id)))
}

/// `time  type  client/page  summary`.
fn line(event: &StoredEvent) -> String {
    let occurred = event
        .event
        .get("occurred_at")
        .and_then(|t| t.as_str())
        .unwrap_or("?");
    let (client, page) = event_log::subject_ids(&event.subject);
    let ids = match (client, page) {
        (Some(c), Some(p)) => format!("{c}/{p}"),
        (Some(c), None) => c.to_string(),
        _ => String::new(),
    };
    format!(
        "{occurred:<27} {:<28} {ids}  {}",
        event.event_type, event.summary
    )
}

pub async fn reprocess(config: &Config, command: ReprocessCommand) -> anyhow::Result<()> {
    let backbone = super::connect(config).await?;
    let runs = Reprocessing::new(backbone.db.clone(), backbone.nats.js.clone());
    let (run, wait) = match command {
        ReprocessCommand::Start {
            client,
            from_stage,
            url_prefix,
            since,
            until,
            force,
            no_wait,
        } => {
            let client = resolve(&backbone.db, &client).await?;
            let spec = RunSpec {
                from_stage,
                url_prefix,
                since,
                until,
                force,
            };
            let run = runs.request(client.id, spec).await?;
            eprintln!("run {} requested", run.id);
            (run, !no_wait)
        }
        ReprocessCommand::Status { run, wait } => (
            runs.get(run)
                .await?
                .with_context(|| format!("no reprocessing run {run}"))?,
            wait,
        ),
    };
    if !wait {
        return print_json(&run);
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>9} [{bar:40}] {pos}/{len} pages ({per_sec}, {eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut view: RunView = run;
    loop {
        bar.set_length(u64::try_from(view.total.unwrap_or(0)).unwrap_or(0));
        bar.set_position(u64::try_from(view.finished).unwrap_or(0));
        bar.set_message(view.status);
        if view.status == "done" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        view = runs.get(view.id).await?.context("the run disappeared")?;
    }
    bar.finish();
    print_json(&view)
}
