//! `ai-cache dead-letters`: list, show, re-drive and discard what the stages gave up on.

use anyhow::Context;
use clap::Subcommand;
use uuid::Uuid;

use super::tenants::print_json;
use crate::commands::deadletters::{DeadLetters, Filter};
use crate::config::Config;
use crate::infra::nats::Nats;

#[derive(Subcommand, Debug)]
pub enum DeadLetterCommand {
    /// List dead letters, oldest first (one line each; --json for everything).
    List {
        /// Only those of this stage consumer (markdown, uploader, ...).
        #[arg(long)]
        consumer: Option<String>,
        /// Only those of this client.
        #[arg(long)]
        client: Option<Uuid>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter with its original event.
    Show {
        /// The dead letter's id (its sequence on DEADLETTER).
        seq: u64,
    },
    /// Hand dead letters back to the stage that gave up on them (after fixing the cause).
    Redrive {
        /// The dead letter's id; or --all.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        seq: Option<u64>,
        /// Every dead letter (of --consumer / --client when given).
        #[arg(long)]
        all: bool,
        /// Only those of this consumer (stage), e.g. `uploader`.
        #[arg(long, requires = "all")]
        consumer: Option<String>,
        /// Only those of this client.
        #[arg(long, requires = "all")]
        client: Option<Uuid>,
    },
    /// Remove a dead letter without handling it again.
    Discard {
        /// The dead letter's id.
        seq: u64,
    },
}

pub async fn run(config: &Config, command: DeadLetterCommand) -> anyhow::Result<()> {
    let url = config.nats_url.as_deref().context("NATS_URL is not set")?;
    let nats = Nats::connect(url, "ai-cache-cli").await?;
    let dead_letters = DeadLetters::new(nats.js.clone());
    match command {
        DeadLetterCommand::List {
            consumer,
            client,
            json,
        } => {
            let filter = Filter {
                consumer,
                client_id: client,
            };
            let mut after = 0;
            let mut all = Vec::new();
            loop {
                let page = dead_letters.list(&filter, after, 1000).await?;
                all.extend(page.items);
                match page.next_after {
                    Some(next) => after = next,
                    None => break,
                }
            }
            if json {
                return print_json(&all);
            }
            for dl in &all {
                println!(
                    "{:>8}  {}  {:<20} {:<26} {}  {}",
                    dl.seq,
                    dl.dead_lettered_at.format("%Y-%m-%d %H:%M:%S"),
                    dl.consumer,
                    dl.event_type.as_deref().unwrap_or("?"),
                    dl.page_id.map(|p| p.to_string()).unwrap_or_default(),
                    dl.error
                );
            }
            println!("{} dead letters", all.len());
            Ok(())
        }
        DeadLetterCommand::Show { seq } => print_json(&dead_letters.show(seq).await?),
        DeadLetterCommand::Redrive {
            seq: Some(seq),
            all: false,
            ..
        } => {
            let dl = dead_letters.redrive(seq).await?;
            println!("dead letter {seq} handed back to {}", dl.consumer);
            Ok(())
        }
        DeadLetterCommand::Redrive {
            consumer, client, ..
        } => {
            let filter = Filter {
                consumer,
                client_id: client,
            };
            let done = dead_letters.redrive_all(&filter).await?;
            println!("{} dead letters handed back", done.len());
            Ok(())
        }
        DeadLetterCommand::Discard { seq } => {
            let dl = dead_letters.discard(seq).await?;
            println!("dead letter {seq} of {} discarded", dl.consumer);
            Ok(())
        }
    }
}
