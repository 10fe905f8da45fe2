//! `ai-cache status`: where every client's pages are, what the stages hold and what they
//! gave up on, read from the projections and the consumers; `--watch` redraws it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use uuid::Uuid;

use crate::app::Backbone;
use crate::config::Config;
use crate::events::StreamName;
use crate::infra::streams;
use crate::projections::clients as clients_read;
use crate::projections::pages::{self as pages_read, StatusCount};

/// One client's pages.
#[derive(Debug, Serialize)]
struct ClientStatus {
    id: Uuid,
    name: String,
    domain: String,
    active: bool,
    pages: i64,
    by_status: BTreeMap<String, i64>,
    by_stage: BTreeMap<String, i64>,
}

/// One stage's consumer.
#[derive(Debug, Serialize)]
struct StageStatus {
    consumer: String,
    /// Messages not delivered yet.
    waiting: u64,
    /// Delivered, not settled yet.
    in_flight: u64,
}

/// The whole picture.
#[derive(Debug, Serialize)]
struct Status {
    clients: Vec<ClientStatus>,
    stages: Vec<StageStatus>,
    /// Dead letters waiting, by the consumer that gave up.
    dead_letters: BTreeMap<String, u64>,
}

pub async fn run(
    config: &Config,
    client: Option<String>,
    json: bool,
    watch: Option<u64>,
) -> anyhow::Result<()> {
    let backbone = super::connect(config).await?;
    let client = match client {
        Some(c) => Some(super::tenants::resolve(&backbone.db, &c).await?.id),
        None => None,
    };
    loop {
        let status = read(&backbone, client).await?;
        if json {
            println!("{}", serde_json::to_string(&status)?);
        } else {
            if watch.is_some() {
                // Clear the screen, cursor home.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&status));
        }
        let Some(every) = watch else { return Ok(()) };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(every.max(1))) => {}
        }
    }
}

async fn read(backbone: &Backbone, client: Option<Uuid>) -> anyhow::Result<Status> {
    let counts = pages_read::counts_by_status_and_stage(&backbone.db, client).await?;
    let (rows, _) = clients_read::list(&backbone.db, i64::MAX, 0).await?;
    let clients = rows
        .into_iter()
        .filter(|row| client.is_none_or(|c| c == row.id))
        .map(|row| client_status(row, &counts))
        .collect();
    Ok(Status {
        clients,
        stages: stages(backbone).await?,
        dead_letters: dead_letters(backbone).await?,
    })
}

fn client_status(row: clients_read::ClientRow, counts: &[StatusCount]) -> ClientStatus {
    let mut status = ClientStatus {
        id: row.id,
        name: row.name,
        domain: row.domain,
        active: row.is_active,
        pages: 0,
        by_status: BTreeMap::new(),
        by_stage: BTreeMap::new(),
    };
    for count in counts.iter().filter(|c| c.client_id == row.id) {
        status.pages += count.pages;
        *status.by_status.entry(count.status.clone()).or_default() += count.pages;
        *status.by_stage.entry(count.stage.clone()).or_default() += count.pages;
    }
    status
}

/// Every durable consumer of the stream definitions: what waits and what is in flight.
async fn stages(backbone: &Backbone) -> anyhow::Result<Vec<StageStatus>> {
    let mut stages = Vec::new();
    for def in streams::embedded()? {
        let Ok(stream) = backbone.nats.js.get_stream(&def.config.name).await else {
            continue;
        };
        for consumer in &def.consumers {
            let name = consumer.config.durable_name.clone().unwrap_or_default();
            if let Ok(info) = stream.consumer_info(&name).await {
                stages.push(StageStatus {
                    consumer: name,
                    waiting: info.num_pending,
                    in_flight: info.num_ack_pending as u64,
                });
            }
        }
    }
    Ok(stages)
}

/// Dead letters by the consumer that gave up (`deadletter.<consumer>`).
async fn dead_letters(backbone: &Backbone) -> anyhow::Result<BTreeMap<String, u64>> {
    use futures::StreamExt;
    let stream = backbone
        .nats
        .js
        .get_stream(StreamName::DeadLetter.name())
        .await?;
    let mut subjects = stream.info_with_subjects("deadletter.>").await?;
    let mut counts = BTreeMap::new();
    while let Some(entry) = subjects.next().await {
        let (subject, count) = entry?;
        let consumer = subject.trim_start_matches("deadletter.").to_owned();
        counts.insert(consumer, count as u64);
    }
    Ok(counts)
}

fn render(status: &Status) -> String {
    let line = |counts: &BTreeMap<String, i64>| {
        counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(" · ")
    };
    let mut out = String::new();
    if status.clients.is_empty() {
        out.push_str("no clients yet\n");
    }
    for c in &status.clients {
        let active = if c.active { "active" } else { "inactive" };
        out.push_str(&format!(
            "{} ({}, {active}): {} page(s)\n",
            c.domain, c.name, c.pages
        ));
        if c.pages > 0 {
            out.push_str(&format!("  status  {}\n", line(&c.by_status)));
            out.push_str(&format!("  stage   {}\n", line(&c.by_stage)));
        }
    }
    out.push_str("\nstages (waiting · in flight)\n");
    for s in &status.stages {
        out.push_str(&format!(
            "  {:<28} {} · {}\n",
            s.consumer, s.waiting, s.in_flight
        ));
    }
    let dead: u64 = status.dead_letters.values().sum();
    if dead == 0 {
        out.push_str("\ndead letters: none\n");
    } else {
        let by: Vec<String> = status
            .dead_letters
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push_str(&format!(
            "\ndead letters: {dead} ({}); see `ai-cache dead-letters list`\n",
            by.join(", ")
        ));
    }
    out
}
