//! A page's own history on the PAGES stream: its last event of a type, read with a direct get
//! by subject. Stages use it for what they must know of a page's past (last fingerprint,
//! validators, URL) without depending on a projection that may lag.

use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};

use super::runtime::StepError;
use crate::domain::ids::{ClientId, PageId};
use crate::events::pages::PageEvent;
use crate::events::{Event, subjects};

/// Reads pages' last events.
#[derive(Clone)]
pub struct PageHistory {
    pages: Stream,
}

impl PageHistory {
    pub async fn open(js: &async_nats::jetstream::Context) -> Result<Self, String> {
        Ok(Self {
            pages: js.get_stream("PAGES").await.map_err(|e| e.to_string())?,
        })
    }

    /// The page's last event of `event_type`, if any (undecodable ones count as none).
    pub async fn last(
        &self,
        event_type: &str,
        client: ClientId,
        page: PageId,
    ) -> Result<Option<PageEvent>, StepError> {
        Ok(self
            .last_event(event_type, client, page)
            .await?
            .map(|(_, e)| e.payload))
    }

    /// The page's last event of `event_type` with its stream sequence.
    pub async fn last_event(
        &self,
        event_type: &str,
        client: ClientId,
        page: PageId,
    ) -> Result<Option<(u64, Event<PageEvent>)>, StepError> {
        let subject = subjects::event_subject(event_type, client, Some(page));
        match self.pages.direct_get_last_for_subject(subject).await {
            Ok(msg) => Ok(Event::<PageEvent>::from_json(&msg.payload)
                .ok()
                .map(|e| (msg.sequence, e))),
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
            Err(e) => Err(StepError::transient(format!(
                "reading the page's history: {e}"
            ))),
        }
    }

    /// The page's last event of `event_type` with its stream sequence, as the variant `pick`
    /// takes out of it (`None`: no such event, or another variant).
    pub async fn last_as<T>(
        &self,
        event_type: &str,
        client: ClientId,
        page: PageId,
        pick: impl FnOnce(PageEvent) -> Option<T>,
    ) -> Result<Option<(u64, T)>, StepError> {
        Ok(self
            .last_event(event_type, client, page)
            .await?
            .and_then(|(seq, e)| pick(e.payload).map(|t| (seq, t))))
    }

    /// The page's current version and the stream sequence of the change that made it: its
    /// last `pages.content_changed` (`None` before the first). Versions only grow: the
    /// scraper publishes a change only if no other change of the page came in between.
    pub async fn current_version(
        &self,
        client: ClientId,
        page: PageId,
    ) -> Result<Option<(u64, u32)>, StepError> {
        self.last_as("pages.content_changed", client, page, |e| match e {
            PageEvent::ContentChanged(c) => Some(c.page_version),
            _ => None,
        })
        .await
    }

    /// The page's URL, from its last `pages.content_changed` or `pages.discovered`.
    pub async fn url(
        &self,
        client: ClientId,
        page: PageId,
    ) -> Result<Option<crate::domain::url::NormalizedUrl>, StepError> {
        if let Some(PageEvent::ContentChanged(c)) =
            self.last("pages.content_changed", client, page).await?
        {
            return Ok(Some(c.url));
        }
        match self.last("pages.discovered", client, page).await? {
            Some(PageEvent::Discovered(d)) => Ok(Some(d.url)),
            _ => Ok(None),
        }
    }
}
