//! The Markdown stage: `pages.content_changed` in, `pages.markdown_generated` out.
//!
//! The local generator's Markdown ([`crate::domain::markdown`]) is the one the scraper made
//! when it fetched the page (`extracted`, in the blob store), or, for an event without it or
//! made by another generator version, is made here from the raw HTML (off the async threads);
//! for clients with
//! `use_gemini` and a key (their own, else the operator's `GEMINI_API_KEY`), Gemini rewrites
//! it. A per-minute rate limit or an overload retries the message (after RetryInfo's delay);
//! a daily quota, a safety block, a cut-off answer, an unknown model or a third failed attempt
//! falls back to the local result, recorded with the reason and the tokens used. The Markdown
//! goes to the blob store, and the event is published under the key
//! `markdown:<page>:<input hash>:<generator or prompt version>`: a redelivery publishes nothing
//! new, and a new version regenerates.
//!
//! Order: a change older than the page's current version is superseded and dropped
//! ([`super::order`]).
//!
//! Reprocessing: a re-sent `pages.content_changed` whose raw HTML and wanted version (the
//! local generator's, or the prompt's and model's for a Gemini client) are those of the page's
//! last Markdown is skipped (`pages.reprocessed`, unless the run forces it); anything else is
//! generated again and carries the run on.

use std::sync::Arc;

use sqlx::PgPool;

use super::history::PageHistory;
use super::order;
use super::reprocess;
use super::runtime::{Delivery, Step, StepError};
use crate::domain::html_bounds::TooComplex;
use crate::domain::ids::{ClientId, PageId};
use crate::domain::markdown::{self, GENERATOR_VERSION};
use crate::domain::reprocess::output_key;
use crate::events::Event;
use crate::events::pages::{
    ContentChanged, Extracted, GeneratorKind, MarkdownGenerated, PageEvent, ReprocessOutcome,
    Stage, TokenUsage,
};
use crate::infra::blobs::BlobStore;
use crate::infra::gemini::{GeminiClient, GeminiError, PROMPT_VERSION};
use crate::infra::publish::{Outgoing, Publisher};
use crate::infra::secrets::{Secret, Secrets};
use crate::projections::clients as clients_read;

/// What Gemini generation needs.
pub struct Gemini {
    pub client: GeminiClient,
    /// To decrypt clients' own keys.
    pub secrets: Option<Arc<Secrets>>,
    /// The operator's key, for clients without their own.
    pub operator_key: Option<Secret>,
    pub db: PgPool,
}

/// Deliveries after which a failing Gemini call gives way to the local result.
const GEMINI_ATTEMPTS: u64 = 3;

/// The local Markdown generator: main-content extraction and HTML→Markdown, with a version
/// recorded in every `pages.markdown_generated`. A new version makes reprocessing regenerate
/// every page made by another one.
pub trait Generator: Send + Sync + 'static {
    fn version(&self) -> &str;
    /// Refuses HTML beyond [`crate::domain::html_bounds`] (a permanent failure).
    fn generate(&self, html: &str, url: &str) -> Result<markdown::Generated, TooComplex>;
}

/// The shipped generator ([`crate::domain::markdown`]).
pub struct LocalGenerator;

impl Generator for LocalGenerator {
    fn version(&self) -> &str {
        GENERATOR_VERSION
    }

    fn generate(&self, html: &str, url: &str) -> Result<markdown::Generated, TooComplex> {
        markdown::generate(html, url)
    }
}

/// The stage.
pub struct MarkdownStage {
    blobs: BlobStore,
    publisher: Publisher,
    history: PageHistory,
    gemini: Option<Gemini>,
    generator: Arc<dyn Generator>,
}

/// The Markdown to publish and how it was made.
struct Made {
    markdown: String,
    generator: GeneratorKind,
    version: String,
    model: Option<String>,
    fallback_reason: Option<String>,
    tokens: Option<TokenUsage>,
}

impl MarkdownStage {
    pub async fn new(
        js: &async_nats::jetstream::Context,
        blobs: BlobStore,
        gemini: Option<Gemini>,
    ) -> Result<Self, String> {
        Ok(Self {
            blobs,
            publisher: Publisher::new(js.clone()),
            history: PageHistory::open(js).await?,
            gemini,
            generator: Arc::new(LocalGenerator),
        })
    }

    /// Uses another local generator.
    pub fn with_generator(mut self, generator: Arc<dyn Generator>) -> Self {
        self.generator = generator;
        self
    }

    /// The version the page's Markdown would be made with now.
    async fn wanted_version(&self, client: ClientId) -> Result<String, StepError> {
        Ok(match self.gemini_for(client).await? {
            Some(Ok((gemini, _))) => format!("{PROMPT_VERSION}:{}", gemini.client.model()),
            _ => self.generator.version().to_owned(),
        })
    }

    /// The Gemini client and key for this client, or why there is none when it wants Gemini.
    async fn gemini_for(
        &self,
        client: ClientId,
    ) -> Result<Option<Result<(&Gemini, Secret), String>>, StepError> {
        let Some(gemini) = &self.gemini else {
            return Ok(None);
        };
        let Some(row) = clients_read::find(&gemini.db, client.as_uuid())
            .await
            .map_err(StepError::transient)?
        else {
            return Ok(None);
        };
        if !row.use_gemini {
            return Ok(None);
        }
        let own = match (&row.gemini_api_key_encrypted, &gemini.secrets) {
            (Some(token), Some(secrets)) => Some(
                secrets
                    .decrypt(&String::from_utf8_lossy(token))
                    .map_err(|e| e.to_string()),
            ),
            (Some(_), None) => Some(Err(
                "no Fernet key is configured to decrypt the client's Gemini key".to_owned(),
            )),
            (None, _) => None,
        };
        Ok(Some(
            match own.or_else(|| gemini.operator_key.clone().map(Ok)) {
                Some(Ok(key)) => Ok((gemini, key)),
                Some(Err(e)) => Err(e),
                None => Err("no Gemini key: neither the client's nor GEMINI_API_KEY".to_owned()),
            },
        ))
    }

    async fn make(
        &self,
        client: ClientId,
        url: &str,
        local: String,
        delivery: &Delivery,
    ) -> Result<Made, StepError> {
        let mut made = Made {
            markdown: local,
            generator: GeneratorKind::Local,
            version: self.generator.version().to_owned(),
            model: None,
            fallback_reason: None,
            tokens: None,
        };
        let (gemini, key) = match self.gemini_for(client).await? {
            None => return Ok(made),
            Some(Err(reason)) => {
                made.fallback_reason = Some(reason);
                return Ok(made);
            }
            Some(Ok(found)) => found,
        };
        let model = gemini.client.model().to_owned();
        metrics::counter!("aicache_gemini_calls_total").increment(1);
        let error = match gemini.client.markdown(&key, url, &made.markdown).await {
            Ok(out) => {
                return Ok(Made {
                    markdown: out.text,
                    generator: GeneratorKind::Gemini,
                    version: format!("{PROMPT_VERSION}:{model}"),
                    model: Some(model),
                    fallback_reason: None,
                    tokens: Some(out.tokens),
                });
            }
            Err(e) => e,
        };
        metrics::counter!("aicache_gemini_errors_total").increment(1);
        let last_try = delivery.delivered >= GEMINI_ATTEMPTS;
        match &error {
            GeminiError::RateLimited(wait) if !last_try => {
                return Err(StepError::retry_after(error.to_string(), *wait));
            }
            GeminiError::Overloaded | GeminiError::Unavailable(_) if !last_try => {
                return Err(StepError::transient(&error));
            }
            GeminiError::Blocked { tokens, .. } | GeminiError::Truncated { tokens, .. } => {
                made.tokens = *tokens
            }
            _ => {}
        }
        made.model = Some(model);
        made.fallback_reason = Some(format!("{error}; the local result was used"));
        Ok(made)
    }
}

impl MarkdownStage {
    /// Whether the page's last Markdown was made from this input by the wanted generator:
    /// a run that does not force has nothing to redo here.
    async fn made_already(
        &self,
        event: &Event<PageEvent>,
        changed: &ContentChanged,
        page: PageId,
    ) -> Result<bool, StepError> {
        let wanted = self.wanted_version(event.meta.client_id).await?;
        let last = self
            .history
            .last("pages.markdown_generated", event.meta.client_id, page)
            .await?;
        Ok(matches!(last, Some(PageEvent::MarkdownGenerated(m))
            if m.input_hash == changed.raw.hash && m.generator_version == wanted))
    }

    /// The local generator's Markdown and metadata of the page: what the scraper extracted
    /// when it was made by this stage's generator, else made from the raw HTML (CPU work, off
    /// the async threads); a page without main content fails for good.
    async fn generate_locally(
        &self,
        changed: &ContentChanged,
        url: &str,
    ) -> Result<markdown::Generated, StepError> {
        let generated = match &changed.extracted {
            Some(extracted) if extracted.generator_version == self.generator.version() => {
                self.extracted(extracted).await?
            }
            _ => self.extract(changed, url).await?,
        };
        if generated.markdown.trim().is_empty() {
            return Err(StepError::permanent("no main content found in the page"));
        }
        Ok(generated)
    }

    /// What the scraper extracted, from the blob store.
    async fn extracted(&self, extracted: &Extracted) -> Result<markdown::Generated, StepError> {
        let bytes =
            super::required_blob(&self.blobs, &extracted.markdown.hash, "extracted Markdown")
                .await?;
        let markdown = String::from_utf8(bytes).map_err(StepError::permanent)?;
        Ok(markdown::Generated {
            markdown,
            metadata: extracted.metadata.clone(),
        })
    }

    /// The local generator run on the page's raw HTML.
    async fn extract(
        &self,
        changed: &ContentChanged,
        url: &str,
    ) -> Result<markdown::Generated, StepError> {
        let raw = super::required_blob(&self.blobs, &changed.raw.hash, "raw HTML").await?;
        let url = url.to_owned();
        let generator = Arc::clone(&self.generator);
        let generated = tokio::task::spawn_blocking(move || {
            generator.generate(&String::from_utf8_lossy(&raw), &url)
        })
        .await
        .map_err(StepError::transient)?
        .map_err(StepError::permanent)?;
        Ok(generated)
    }
}

impl Step<PageEvent> for MarkdownStage {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        let PageEvent::ContentChanged(changed) = &event.payload else {
            return Err(StepError::unhandled("markdown stage", event.event_type()));
        };
        let input = order::Input::new(
            &event,
            Stage::Markdown,
            changed.page_version,
            changed.reprocess.as_ref(),
        )?;
        let page = input.page;
        if input.superseded(&self.history, &self.publisher).await? {
            return Ok(());
        }
        if let Some(run) = changed.reprocess.as_ref().filter(|r| !r.force)
            && self.made_already(&event, changed, page).await?
        {
            let outcome = ReprocessOutcome::Skipped;
            return reprocess::end(&self.publisher, &event, run, Stage::Markdown, outcome).await;
        }
        let url = changed.url.to_string();
        let generated = self.generate_locally(changed, &url).await?;
        let made = self
            .make(event.meta.client_id, &url, generated.markdown, delivery)
            .await?;
        let blob = self
            .blobs
            .put(made.markdown.as_bytes())
            .await
            .map_err(StepError::transient)?;
        let key = output_key(
            changed.reprocess.as_ref().map(|run| run.run_id),
            format!("markdown:{page}:{}:{}", changed.raw.hash, made.version),
        );
        let out = Event::caused_by(
            &event,
            PageEvent::MarkdownGenerated(MarkdownGenerated {
                markdown: blob,
                input_hash: changed.raw.hash.clone(),
                generator: made.generator,
                generator_version: made.version,
                model: made.model,
                fallback_reason: made.fallback_reason,
                tokens: made.tokens,
                markdown_tokens: Some(markdown::estimate_tokens(&made.markdown)),
                metadata: generated.metadata,
                page_version: changed.page_version,
                reprocess: changed.reprocess.clone(),
            }),
        );
        self.publisher
            .publish(&Outgoing::keyed(out, key))
            .await
            .map_err(StepError::transient)?;
        Ok(())
    }
}
