//! The end of a page's part in a reprocessing run: `pages.reprocessed`, published by the
//! stage where it ends (once per page and run).

use crate::events::Event;
use crate::events::pages::{PageEvent, Reprocess, ReprocessOutcome, Reprocessed, Stage};
use crate::infra::publish::{Outgoing, Publisher};

use super::runtime::StepError;

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
