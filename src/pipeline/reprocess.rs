//! Reprocessing in the pipeline: the [`Planner`] (the `reprocessor` role's step, a durable
//! consumer on CLIENTS) that turns a `clients.reprocess_requested` into each selected page's
//! input to the run's first stage, and the end of a page's part in a run,
//! `pages.reprocessed`, published by the stage where it ends (once per page and run).
//!
//! The planner selects the pages in page-id order and re-sends each page's input of the
//! chosen stage (its last `pages.content_changed`, `pages.markdown_generated` or
//! `pages.html_rendered`, or a `pages.refresh_requested` for `scrape`) marked with the run:
//! the normal stages do the work and publish the normal events. Each batch moves the run's
//! cursor, so a planner that dies resumes after the last page it sent; a batch sent twice is
//! deduplicated by its keys. How a run is requested and read: `commands::reprocess`; the rules
//! a stage applies to a run's input: `domain::reprocess`.

use sqlx::PgPool;

use super::history::PageHistory;
use super::runtime::{Delivery, Step, StepError};
use crate::domain::ids::PageId;
use crate::events::Event;
use crate::events::clients::{ClientEvent, ReprocessRequested};
use crate::events::pages::{
    PageEvent, RefreshReason, RefreshRequested, Reprocess, ReprocessOutcome, Reprocessed, Stage,
};
use crate::infra::publish::{Outgoing, Publisher};
use crate::projections::operations::{self as runs, NewRun, RunRow, Selection};

/// Pages sent per batch (one cursor update each).
const BATCH: i64 = 200;

/// The pages `r` selects.
fn selection<'a>(event: &Event<ClientEvent>, r: &'a ReprocessRequested) -> Selection<'a> {
    Selection {
        client: event.meta.client_id.as_uuid(),
        url_prefix: r.url_prefix.as_deref(),
        since: r.since,
        until: r.until,
    }
}

/// The `pages.reprocessed` ending `cause`'s page in `run`, keyed so a redelivery publishes it
/// once.
pub fn ended<C>(
    cause: &Event<C>,
    run: &Reprocess,
    ended_at: Stage,
    outcome: ReprocessOutcome,
) -> Outgoing<PageEvent> {
    let page = cause
        .meta
        .page_id
        .map(|p| p.to_string())
        .unwrap_or_default();
    Outgoing::keyed(
        Event::caused_by(
            cause,
            PageEvent::Reprocessed(Reprocessed {
                run_id: run.run_id,
                from_stage: run.from_stage,
                ended_at,
                outcome,
            }),
        ),
        format!("reprocessed:{}:{page}", run.run_id),
    )
}

/// Publishes [`ended`]: the stage's whole work for a page with nothing to redo.
pub async fn end<C>(
    publisher: &Publisher,
    cause: &Event<C>,
    run: &Reprocess,
    ended_at: Stage,
    outcome: ReprocessOutcome,
) -> Result<(), StepError> {
    publisher
        .publish(&ended(cause, run, ended_at, outcome))
        .await
        .map(|_| ())
        .map_err(StepError::transient)
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
        let new = NewRun {
            id: r.run_id,
            from_stage: r.from_stage.as_str(),
            selection: selection(event, r),
            force: r.force,
            at: event.meta.occurred_at,
        };
        runs::insert_run_if_absent(&self.db, new)
            .await
            .map_err(StepError::transient)?;
        runs::run(&self.db, r.run_id)
            .await
            .map_err(StepError::transient)?
            .ok_or_else(|| StepError::transient("the run's row is not there yet"))
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
                ended(&cause, run, run.from_stage, ReprocessOutcome::Skipped)
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
            return Err(StepError::unhandled("reprocessor", event.event_type()));
        };
        let row = self.run_row(&event, r).await?;
        if row.status == "planned" {
            return Ok(());
        }
        let selected = selection(&event, r);
        if row.total.is_none() {
            let total = runs::count_selected(&self.db, selected)
                .await
                .map_err(StepError::transient)?;
            runs::run_planning(&self.db, r.run_id, total)
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
            let pages = runs::next_selected(&self.db, selected, cursor, BATCH)
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
            runs::run_progress(&self.db, r.run_id, last, pages.len())
                .await
                .map_err(StepError::transient)?;
            cursor = Some(last);
        }
        runs::run_planned(&self.db, r.run_id)
            .await
            .map_err(StepError::transient)?;
        tracing::info!(run.id = %r.run_id, "reprocessing planned");
        Ok(())
    }
}
