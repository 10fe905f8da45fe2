//! Order: the newest content of a page always wins, whatever is redelivered or replayed late.
//!
//! A page's version is counted by the scraper: each real change of content is published as
//! `pages.content_changed` with the next version, and only if no other change of the page was
//! published since the scraper read the last one (a conditional publish on the page's own
//! subject), so versions are unique and grow in the order of the stream. Every later stage's
//! input carries the version it was made from. An input older than the page's current version
//! is **superseded**: the stage acks it without doing anything, counts it in
//! `aicache_superseded_total{stage}` and, for a reprocessing run, ends the page's run as
//! `skipped`. It is never retried and never dead-lettered.
//!
//! The uploader is the last line: besides this check, it writes the edge store and then
//! publishes `pages.kv_uploaded` only if no other upload of the page was published since it
//! read the last one, and writes again when that fails (see [`super::uploader`]).

use super::history::PageHistory;
use super::reprocess;
use super::runtime::{StepError, page_of};
use crate::domain::ids::PageId;
use crate::events::Event;
use crate::events::pages::{PageEvent, Reprocess, ReprocessOutcome, Stage};
use crate::infra::publish::Publisher;

/// An input of `stage` made from page version `version`.
pub struct Input<'a> {
    pub event: &'a Event<PageEvent>,
    pub page: PageId,
    pub version: u32,
    pub stage: Stage,
    pub run: Option<&'a Reprocess>,
}

impl<'a> Input<'a> {
    /// `event` as an input of `stage` made from page version `version` (in `run`, if any).
    pub fn new(
        event: &'a Event<PageEvent>,
        stage: Stage,
        version: u32,
        run: Option<&'a Reprocess>,
    ) -> Result<Self, StepError> {
        Ok(Self {
            event,
            page: page_of(event)?,
            version,
            stage,
            run,
        })
    }

    /// Whether a newer version of the page exists; if so, the input is recorded as superseded
    /// (and its reprocessing run ended) and the stage has nothing more to do with it.
    pub async fn superseded(
        &self,
        history: &PageHistory,
        publisher: &Publisher,
    ) -> Result<bool, StepError> {
        let client = self.event.meta.client_id;
        let current = match history.current_version(client, self.page).await? {
            Some((_, current)) if current > self.version => current,
            _ => return Ok(false),
        };
        self.record(current);
        if let Some(run) = self.run {
            let outcome = ReprocessOutcome::Skipped;
            reprocess::end(publisher, self.event, run, self.stage, outcome).await?;
        }
        Ok(true)
    }

    /// Logs and counts a superseded input.
    pub fn record(&self, current: u32) {
        tracing::info!(
            client.id = %self.event.meta.client_id,
            page.id = %self.page,
            stage = self.stage.as_str(),
            version = self.version,
            current,
            "superseded: the page has a newer version, this input is dropped"
        );
        metrics::counter!("aicache_superseded_total", "stage" => self.stage.as_str()).increment(1);
    }
}
