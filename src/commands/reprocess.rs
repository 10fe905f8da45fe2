//! Reprocessing: run a client's pages through the pipeline again from a chosen stage, e.g.
//! after a prompt, extractor or template change.
//!
//! A request becomes a `reprocess_runs` row and a `clients.reprocess_requested` event. The
//! [`Planner`] (role `reprocessor`, a durable consumer on CLIENTS) selects the pages in page-id
//! order and re-sends each page's input of the chosen stage (its last
//! `pages.content_changed`, `pages.markdown_generated` or `pages.html_rendered`, or a
//! `pages.refresh_requested` for `scrape`) marked with the run: the normal stages do the work
//! and publish the normal events. Each batch moves the run's cursor in the same place, so a
//! planner that dies resumes after the last page it sent (the redelivered request finds the
//! cursor); a batch sent twice is deduplicated by its keys. The stages skip what would come
//! out the same (same input, same version), do not upload what the edge store holds, and the
//! stage where a page's run ends publishes `pages.reprocessed` with the outcome: progress is
//! the count of those in the pages projection.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::domain::ids::{ClientId, PageId};
use crate::events::clients::{ClientEvent, ReprocessRequested};
use crate::events::pages::{
    PageEvent, RefreshReason, RefreshRequested, Reprocess, ReprocessOutcome, Stage,
};
use crate::events::{Event, envelope::now};
use crate::infra::publish::{Outgoing, Publisher};
use crate::pipeline::history::PageHistory;
use crate::pipeline::reprocess;
use crate::pipeline::runtime::{Delivery, Step, StepError};
use crate::projections::sql;

/// Pages sent per batch (one cursor update each).
const BATCH: i64 = 200;

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

#[derive(sqlx::FromRow)]
struct RunRow {
    id: Uuid,
    client_id: Uuid,
    from_stage: String,
    url_prefix: Option<String>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    force: bool,
    status: String,
    total: Option<i64>,
    requested: i64,
    cursor: Option<Uuid>,
    created_at: DateTime<Utc>,
    planned_at: Option<DateTime<Utc>>,
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
        let known: bool = sqlx::query_scalar(sql::operations::CLIENT_EXISTS)
            .bind(client)
            .fetch_one(&self.db)
            .await?;
        if !known {
            return Err(ReprocessError::UnknownClient(client));
        }
        let run = Uuid::now_v7();
        let at = now();
        sqlx::query(sql::operations::INSERT_RUN)
            .bind(run)
            .bind(client)
            .bind(spec.from_stage.as_str())
            .bind(&spec.url_prefix)
            .bind(spec.since)
            .bind(spec.until)
            .bind(spec.force)
            .bind(at)
            .execute(&self.db)
            .await?;
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
            sqlx::query(sql::operations::DELETE_RUN)
                .bind(run)
                .execute(&self.db)
                .await?;
            return Err(ReprocessError::Publish(e.to_string()));
        }
        tracing::info!(run.id = %run, client.id = %client, from = spec.from_stage.as_str(), "reprocessing requested");
        self.get(run)
            .await?
            .ok_or_else(|| ReprocessError::Db(sqlx::Error::RowNotFound))
    }

    /// One run with its progress.
    pub async fn get(&self, run: Uuid) -> Result<Option<RunView>, sqlx::Error> {
        let Some(row) = sqlx::query_as::<_, RunRow>(sql::operations::RUN)
            .bind(run)
            .fetch_optional(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(Some(self.view(row).await?))
    }

    /// A client's runs, newest first.
    pub async fn list(&self, client: Uuid, limit: i64) -> Result<Vec<RunView>, sqlx::Error> {
        let rows = sqlx::query_as::<_, RunRow>(sql::operations::CLIENT_RUNS)
            .bind(client)
            .bind(limit)
            .fetch_all(&self.db)
            .await?;
        let mut views = Vec::with_capacity(rows.len());
        for row in rows {
            views.push(self.view(row).await?);
        }
        Ok(views)
    }

    async fn view(&self, row: RunRow) -> Result<RunView, sqlx::Error> {
        let counts: Vec<(String, i64)> = sqlx::query_as(sql::operations::RUN_OUTCOMES)
            .bind(row.id)
            .fetch_all(&self.db)
            .await?;
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

/// Plans runs: the step of the `reprocessor` consumer.
pub struct Planner {
    db: PgPool,
    publisher: Publisher,
    history: PageHistory,
}

impl Planner {
    pub async fn new(db: PgPool, js: &async_nats::jetstream::Context) -> Result<Self, String> {
        Ok(Self {
            db,
            publisher: Publisher::new(js.clone()),
            history: PageHistory::open(js).await?,
        })
    }

    /// The run's row, created from the event when the API did not (a request published by
    /// another tool).
    async fn run_row(
        &self,
        event: &Event<ClientEvent>,
        r: &ReprocessRequested,
    ) -> Result<RunRow, StepError> {
        sqlx::query(sql::operations::INSERT_RUN_IF_ABSENT)
            .bind(r.run_id)
            .bind(event.meta.client_id.as_uuid())
            .bind(r.from_stage.as_str())
            .bind(&r.url_prefix)
            .bind(r.since)
            .bind(r.until)
            .bind(r.force)
            .bind(event.meta.occurred_at)
            .execute(&self.db)
            .await
            .map_err(StepError::transient)?;
        sqlx::query_as::<_, RunRow>(sql::operations::RUN)
            .bind(r.run_id)
            .fetch_one(&self.db)
            .await
            .map_err(StepError::transient)
    }

    /// The next pages of the run after `cursor`.
    async fn next_pages(
        &self,
        client: Uuid,
        r: &ReprocessRequested,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Uuid>, sqlx::Error> {
        sqlx::query_scalar(sql::operations::RUN_NEXT_PAGES)
            .bind(client)
            .bind(&r.url_prefix)
            .bind(r.since)
            .bind(r.until)
            .bind(cursor)
            .bind(limit)
            .fetch_all(&self.db)
            .await
    }

    /// The page's input to the run's first stage, marked with the run; or, when the page has
    /// none (never got that far), the end of its run.
    async fn input(
        &self,
        request: &Event<ClientEvent>,
        run: &Reprocess,
        page: PageId,
    ) -> Result<Outgoing<PageEvent>, StepError> {
        let client = request.meta.client_id;
        let marked = |payload: PageEvent| {
            let mut event = Event::caused_by(request, payload);
            event.meta.page_id = Some(page);
            Outgoing::keyed(event, format!("reprocess:{}:{page}", run.run_id))
        };
        let input = match run.from_stage {
            Stage::Scrape => Some(PageEvent::RefreshRequested(RefreshRequested {
                reason: RefreshReason::Reprocess,
                reprocess: Some(run.clone()),
            })),
            Stage::Markdown => match self
                .history
                .last("pages.content_changed", client, page)
                .await?
            {
                Some(PageEvent::ContentChanged(mut c)) => {
                    c.reprocess = Some(run.clone());
                    Some(PageEvent::ContentChanged(c))
                }
                _ => None,
            },
            Stage::Render => match self
                .history
                .last("pages.markdown_generated", client, page)
                .await?
            {
                Some(PageEvent::MarkdownGenerated(mut m)) => {
                    m.reprocess = Some(run.clone());
                    Some(PageEvent::MarkdownGenerated(m))
                }
                _ => None,
            },
            Stage::Upload => match self
                .history
                .last("pages.html_rendered", client, page)
                .await?
            {
                Some(PageEvent::HtmlRendered(mut h)) => {
                    h.reprocess = Some(run.clone());
                    Some(PageEvent::HtmlRendered(h))
                }
                _ => None,
            },
        };
        Ok(match input {
            Some(payload) => marked(payload),
            None => {
                let mut cause = Event::caused_by(
                    request,
                    PageEvent::RefreshRequested(RefreshRequested {
                        reason: RefreshReason::Reprocess,
                        reprocess: None,
                    }),
                );
                cause.meta.page_id = Some(page);
                reprocess::ended(&cause, run, run.from_stage, ReprocessOutcome::Skipped)
            }
        })
    }
}

impl Step<ClientEvent> for Planner {
    async fn handle(
        &self,
        event: Event<ClientEvent>,
        _delivery: &Delivery,
    ) -> Result<(), StepError> {
        let ClientEvent::ReprocessRequested(r) = &event.payload else {
            return Err(StepError::permanent(format!(
                "the reprocessor does not handle {}",
                event.event_type()
            )));
        };
        let row = self.run_row(&event, r).await?;
        if row.status == "planned" {
            return Ok(());
        }
        let client = event.meta.client_id.as_uuid();
        if row.total.is_none() {
            let total: i64 = sqlx::query_scalar(sql::operations::RUN_COUNT_PAGES)
                .bind(client)
                .bind(&r.url_prefix)
                .bind(r.since)
                .bind(r.until)
                .fetch_one(&self.db)
                .await
                .map_err(StepError::transient)?;
            sqlx::query(sql::operations::RUN_PLANNING)
                .bind(r.run_id)
                .bind(total)
                .execute(&self.db)
                .await
                .map_err(StepError::transient)?;
        }
        let run = Reprocess {
            run_id: r.run_id,
            from_stage: r.from_stage,
            force: r.force,
        };
        let mut cursor = row.cursor;
        loop {
            let pages = self
                .next_pages(client, r, cursor, BATCH)
                .await
                .map_err(StepError::transient)?;
            let Some(&last) = pages.last() else { break };
            let mut batch = Vec::with_capacity(pages.len());
            for page in &pages {
                batch.push(self.input(&event, &run, PageId::from_uuid(*page)).await?);
            }
            self.publisher
                .publish_all(&batch)
                .await
                .map_err(StepError::transient)?;
            sqlx::query(sql::operations::RUN_PROGRESS)
                .bind(r.run_id)
                .bind(last)
                .bind(i64::try_from(pages.len()).unwrap_or(i64::MAX))
                .execute(&self.db)
                .await
                .map_err(StepError::transient)?;
            cursor = Some(last);
        }
        sqlx::query(sql::operations::RUN_PLANNED)
            .bind(r.run_id)
            .execute(&self.db)
            .await
            .map_err(StepError::transient)?;
        tracing::info!(run.id = %r.run_id, "reprocessing planned");
        Ok(())
    }
}
