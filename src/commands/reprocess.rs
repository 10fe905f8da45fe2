//! Reprocessing: run a client's pages through the pipeline again from a chosen stage, e.g.
//! after a prompt, extractor or template change.
//!
//! A request becomes a `reprocess_runs` row and a `clients.reprocess_requested` event; the
//! planner (`pipeline::reprocess`, role `reprocessor`) sends each selected page's input of
//! the chosen stage again, marked with the run. The stages skip what would come out the same
//! (same input, same version), do not upload what the edge store holds, and the stage where a
//! page's run ends publishes `pages.reprocessed` with the outcome: progress is the count of
//! those in the pages projection.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::ids::ClientId;
use crate::events::clients::{ClientEvent, ReprocessRequested};
use crate::events::pages::Stage;
use crate::events::{Event, envelope::now};
use crate::infra::publish::{Outgoing, Publisher};
use crate::projections::operations::{self as runs, NewRun, RunRow, Selection};

/// What to reprocess.
#[derive(Clone, Debug)]
pub struct RunSpec {
    pub from_stage: Stage,
    pub url_prefix: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    pub force: bool,
}

/// Why a reprocessing request failed.
#[derive(Debug, thiserror::Error)]
pub enum ReprocessError {
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    #[error("no client {0}")]
    UnknownClient(Uuid),
    #[error("publishing the request failed: {0}")]
    Publish(String),
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// A run and how far it got.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct RunView {
    pub id: Uuid,
    pub client_id: Uuid,
    pub from_stage: Stage,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url_prefix: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    pub force: bool,
    /// `requested` (not planned yet), `planning` (sending pages), `running` (all sent, some
    /// not finished) or `done`.
    pub status: &'static str,
    /// Pages the run selected (known once planning started).
    pub total: Option<i64>,
    /// Pages sent through the pipeline so far.
    pub requested: i64,
    /// Pages whose run ended (`pages.reprocessed`).
    pub finished: i64,
    /// Finished pages by outcome: updated, unchanged, skipped, removed, failed.
    pub outcomes: BTreeMap<String, i64>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub planned_at: Option<DateTime<Utc>>,
}

/// Requests and reads reprocessing runs (API and CLI).
#[derive(Clone)]
pub struct Reprocessing {
    db: PgPool,
    publisher: Publisher,
}

impl Reprocessing {
    pub fn new(db: PgPool, js: async_nats::jetstream::Context) -> Self {
        Self {
            db,
            publisher: Publisher::new(js),
        }
    }

    /// Records the run and publishes its request; the reprocessor role takes it from there.
    pub async fn request(&self, client: Uuid, spec: RunSpec) -> Result<RunView, ReprocessError> {
        if let (Some(since), Some(until)) = (spec.since, spec.until)
            && since >= until
        {
            return Err(ReprocessError::Invalid {
                field: "until",
                message: "must be after since".into(),
            });
        }
        if spec.url_prefix.as_ref().is_some_and(|p| p.len() > 2048) {
            return Err(ReprocessError::Invalid {
                field: "url_prefix",
                message: "at most 2048 bytes".into(),
            });
        }
        if spec.url_prefix.as_ref().is_some_and(|p| p.contains('\0')) {
            return Err(ReprocessError::Invalid {
                field: "url_prefix",
                message: "must not contain NUL characters".into(),
            });
        }
        if !runs::client_exists(&self.db, client).await? {
            return Err(ReprocessError::UnknownClient(client));
        }
        let run = Uuid::now_v7();
        let at = now();
        let selection = Selection {
            client,
            url_prefix: spec.url_prefix.as_deref(),
            since: spec.since,
            until: spec.until,
        };
        let new = NewRun {
            id: run,
            from_stage: spec.from_stage.as_str(),
            selection,
            force: spec.force,
            at,
        };
        runs::insert_run(&self.db, new).await?;
        let event = Event::new(
            ClientId::from_uuid(client),
            None,
            ClientEvent::ReprocessRequested(ReprocessRequested {
                run_id: run,
                from_stage: spec.from_stage,
                url_prefix: spec.url_prefix,
                since: spec.since,
                until: spec.until,
                force: spec.force,
            }),
        );
        if let Err(e) = self
            .publisher
            .publish(&Outgoing::keyed(event, format!("reprocess:{run}")))
            .await
        {
            // Nothing will plan it: do not leave a run that looks pending forever.
            runs::delete_run(&self.db, run).await?;
            return Err(ReprocessError::Publish(e.to_string()));
        }
        tracing::info!(run.id = %run, client.id = %client, from = spec.from_stage.as_str(), "reprocessing requested");
        self.get(run)
            .await?
            .ok_or_else(|| ReprocessError::Db(sqlx::Error::RowNotFound))
    }

    /// One run with its progress.
    pub async fn get(&self, run: Uuid) -> Result<Option<RunView>, sqlx::Error> {
        let Some(row) = runs::run(&self.db, run).await? else {
            return Ok(None);
        };
        Ok(Some(self.view(row).await?))
    }

    /// A client's runs, newest first.
    pub async fn list(&self, client: Uuid, limit: i64) -> Result<Vec<RunView>, sqlx::Error> {
        let rows = runs::client_runs(&self.db, client, limit).await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.view(row).await?);
        }
        Ok(views)
    }

    async fn view(&self, row: RunRow) -> Result<RunView, sqlx::Error> {
        let counts = runs::run_outcomes(&self.db, row.id).await?;
        let finished = counts.iter().map(|(_, n)| n).sum();
        let status = match row.status.as_str() {
            "planned" if row.total.is_some_and(|t| finished >= t) => "done",
            "planned" => "running",
            "planning" => "planning",
            _ => "requested",
        };
        Ok(RunView {
            id: row.id,
            client_id: row.client_id,
            from_stage: row.from_stage.parse().unwrap_or(Stage::Scrape),
            url_prefix: row.url_prefix,
            since: row.since,
            until: row.until,
            force: row.force,
            status,
            total: row.total,
            requested: row.requested,
            finished,
            outcomes: counts.into_iter().collect(),
            created_at: row.created_at,
            planned_at: row.planned_at,
        })
    }
}
