//! The consumer runtime every stage runs on: a durable pull consumer, a bounded number of
//! messages in flight, and one ack policy.
//!
//! - Ack only after the step returned `Ok` (its effects are committed).
//! - Transient failure: nak with a delay (the step's Retry-After, else the backoff schedule).
//! - Permanent failure, undecodable event or a panicking step: copy to DEADLETTER, then term.
//! - Transient failure on the last allowed delivery (`max_deliver` of the consumer): copy to
//!   DEADLETTER, then term.
//! - Deferred (not a failure: the step may not run yet): nak with the delay the first time;
//!   deferred again, the message is handed to the stage's re-drive consumer as a fresh copy,
//!   so deferrals never use up the deliveries failures are allowed and never dead-letter.
//! - A message that used up `max_deliver` without any decision (the process died on every
//!   delivery) is dead-lettered from the server's max-deliveries advisory.
//! - Long steps send in-progress acks so the server does not redeliver them meanwhile.
//! - On shutdown no new message is taken; messages already buffered are nak'd at once, those
//!   in flight get a grace period to finish and are nak'd if they do not.
//! - Dead letters an operator re-drives come back on `redrive.<consumer>` (stream REDRIVE)
//!   through the durable `<consumer>-redrive`, to the same step under the same policy: only
//!   the stage that gave up sees them again, and the fact streams get no copies.
//!
//! A message is never dropped without a decision: if the process dies, the server redelivers
//! it after the consumer's `ack_wait`.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind, consumer};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use async_nats::jetstream::context::ConsumerInfoErrorKind;

use super::deadletter::{self, DeadLetter, DeadLetterKind, Origin};
use crate::domain::ids::PageId;
use crate::events::{Event, EventFamily};

/// The page an input is about: every page stage's input names one, and one that does not
/// is refused for good (no redelivery can add it).
pub fn page_of<E>(event: &Event<E>) -> Result<PageId, StepError> {
    event
        .meta
        .page_id
        .ok_or_else(|| StepError::permanent("page event without page_id"))
}

/// How a step failed, which decides what the runtime does with the message.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// Worth retrying: network, 5xx, 429, database or NATS unavailable.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: bad input, 4xx.
    #[error("{message}")]
    Permanent { message: String },
    /// Not a failure: the step may not run yet (its host's turn is further away). The
    /// message comes back after `until`, and waiting never dead-letters it: deferred again,
    /// it is handed to the stage's re-drive consumer as a fresh copy.
    #[error("{message}")]
    Deferred { message: String, until: Duration },
}

impl StepError {
    /// An input `stage` does not consume reached it (its consumer's filter and its code
    /// disagree): no redelivery can change that.
    pub fn unhandled(stage: &str, event_type: &str) -> Self {
        Self::permanent(format!("the {stage} does not handle {event_type}"))
    }

    pub fn transient(err: impl std::fmt::Display) -> Self {
        Self::Transient {
            message: err.to_string(),
            retry_after: None,
        }
    }

    pub fn permanent(err: impl std::fmt::Display) -> Self {
        Self::Permanent {
            message: err.to_string(),
        }
    }

    /// Something that must exist, since the input was made after it (an earlier event of the
    /// page, a stored blob), was not found. On a replicated stream a read can be answered by a
    /// replica that is behind its leader (during a leader change above all), so this is
    /// retried, never refused at once: if it really is gone, the retries run out and the
    /// message is dead-lettered all the same.
    pub fn missing(what: impl std::fmt::Display) -> Self {
        Self::transient(format!(
            "{what} (not found: a replica may be behind its leader; retried)"
        ))
    }

    /// The step may not run before `until`; see [`StepError::Deferred`].
    pub fn deferred(reason: impl std::fmt::Display, until: Duration) -> Self {
        Self::Deferred {
            message: reason.to_string(),
            until,
        }
    }

    /// A transient failure that must not be retried before `delay` (Retry-After, RetryInfo).
    pub fn retry_after(err: impl std::fmt::Display, delay: Duration) -> Self {
        Self::Transient {
            message: err.to_string(),
            retry_after: Some(delay),
        }
    }
}

/// Where a message stands: which delivery this is.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub subject: String,
    pub stream_seq: u64,
    /// 1 for the first delivery.
    pub delivered: u64,
}

/// One pipeline step: handles one event, commits its effects, and says how it went.
pub trait Step<E: EventFamily>: Send + Sync + 'static {
    fn handle(
        &self,
        event: Event<E>,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), StepError>> + Send;
}

/// A shared step is a step: one instance can serve several consumers.
impl<S: Step<E>, E: EventFamily> Step<E> for Arc<S> {
    fn handle(
        &self,
        event: Event<E>,
        delivery: &Delivery,
    ) -> impl Future<Output = Result<(), StepError>> + Send {
        S::handle(self, event, delivery)
    }
}

/// Tuning of a runtime.
#[derive(Clone, Debug)]
pub struct RuntimeOptions {
    /// Messages handled at once.
    pub concurrency: usize,
    /// Delay before the n-th retry (the last entry repeats).
    pub backoff: Vec<Duration>,
    /// How long in-flight messages may take to finish on shutdown.
    pub shutdown_grace: Duration,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            concurrency: 16,
            backoff: [1, 5, 30, 120, 600].map(Duration::from_secs).to_vec(),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

/// The runtime could not start.
#[derive(Debug, thiserror::Error)]
#[error("consumer {stream}/{durable}: {message}")]
pub struct RuntimeError {
    stream: &'static str,
    durable: String,
    message: String,
}

/// Runs a [`Step`] on a durable consumer (and on its re-drive consumer, where one exists).
pub struct ConsumerRuntime<E, S> {
    inner: Arc<Inner<S>>,
    redrive: Arc<Inner<S>>,
    options: RuntimeOptions,
    _events: PhantomData<fn() -> E>,
}

/// The stream holding re-driven dead letters.
pub const REDRIVE_STREAM: &str = "REDRIVE";

/// The durable consumer that feeds re-driven dead letters of `consumer` back to its step.
pub fn redrive_consumer(consumer: &str) -> String {
    format!("{consumer}-redrive")
}

/// The subject dead letters of `consumer` are re-driven on.
pub fn redrive_subject(consumer: &str) -> String {
    format!("redrive.{}", consumer.to_lowercase())
}

/// Whether `consumer` has its re-drive consumer on REDRIVE.
pub async fn has_redrive_consumer(js: &jetstream::Context, consumer: &str) -> Result<bool, String> {
    let stream = js
        .get_stream(REDRIVE_STREAM)
        .await
        .map_err(|e| e.to_string())?;
    match stream.consumer_info(redrive_consumer(consumer)).await {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == ConsumerInfoErrorKind::NotFound => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// Copies `payload` to `consumer`'s re-drive subject, `origin` in its headers beside `extra`,
/// under message id `id` (a second copy within the duplicate window is not stored).
pub async fn copy_to_redrive(
    js: &jetstream::Context,
    consumer: &str,
    id: &str,
    origin: &Origin,
    extra: &[(&str, &str)],
    payload: bytes::Bytes,
) -> Result<(), String> {
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", id);
    origin.insert_into(&mut h);
    for (name, value) in extra {
        h.insert(*name, *value);
    }
    js.publish_with_headers(redrive_subject(consumer), h, payload)
        .await
        .map_err(|e| e.to_string())?
        .await
        .map(drop)
        .map_err(|e| e.to_string())
}

struct Inner<S> {
    js: jetstream::Context,
    stream: &'static str,
    durable: String,
    /// The stage's name (its main durable): metrics, logs and dead letters use it.
    stage: String,
    step: Arc<S>,
    backoff: Vec<Duration>,
}

/// Why a consumer could not be opened.
enum OpenError {
    /// The durable does not exist.
    Missing,
    Other(String),
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("the durable consumer does not exist"),
            Self::Other(message) => f.write_str(message),
        }
    }
}

struct ConsumerLimits {
    max_deliver: u64,
    progress_every: Duration,
}

type InFlight = Pin<Box<dyn Future<Output = ()> + Send>>;

impl<E: EventFamily + 'static, S: Step<E>> ConsumerRuntime<E, S> {
    pub fn new(
        js: jetstream::Context,
        durable: impl Into<String>,
        step: S,
        options: RuntimeOptions,
    ) -> Self {
        let durable = durable.into();
        let step = Arc::new(step);
        let inner = |stream: &'static str, consumer: String| {
            Arc::new(Inner {
                js: js.clone(),
                stream,
                durable: consumer,
                stage: durable.clone(),
                step: Arc::clone(&step),
                backoff: options.backoff.clone(),
            })
        };
        Self {
            inner: inner(E::STREAM.name(), durable.clone()),
            redrive: inner(REDRIVE_STREAM, redrive_consumer(&durable)),
            options,
            _events: PhantomData,
        }
    }

    /// Handles messages until `shutdown`, then returns in-flight work as described above.
    /// Reconnects by itself while NATS is away. Re-driven dead letters are handled beside
    /// the main consumer when the stage has a re-drive consumer.
    pub async fn run(&self, shutdown: CancellationToken) -> Result<(), RuntimeError> {
        let redrive = {
            let inner = Arc::clone(&self.redrive);
            let (options, shutdown) = (self.options.clone(), shutdown.clone());
            tokio::spawn(async move { inner.consume::<E>(&options, shutdown, true).await })
        };
        Arc::clone(&self.inner)
            .consume::<E>(&self.options, shutdown, false)
            .await;
        let _ = redrive.await;
        // Acks are publishes the client buffers: the caller may exit right after `run`
        // returns, so they are on the wire first (a lost ack would only mean a redelivery,
        // but a clean stop should not cause one).
        if let Err(e) = self.inner.js.client().flush().await {
            tracing::warn!(stage = %self.inner.durable, error = %e, "acks not flushed on shutdown");
        }
        Ok(())
    }

    /// Checks that the durable exists, so a misconfigured role fails at start-up.
    pub async fn check(&self) -> Result<(), RuntimeError> {
        self.inner
            .open(1)
            .await
            .map(|_| ())
            .map_err(|e| RuntimeError {
                stream: self.inner.stream,
                durable: self.inner.durable.clone(),
                message: e.to_string(),
            })
    }
}

impl<S> Inner<S> {
    /// The consume loop of one durable. An `optional` durable that does not exist (a test
    /// stage without a re-drive consumer) is not an error: the loop just ends.
    async fn consume<E>(
        self: Arc<Self>,
        options: &RuntimeOptions,
        shutdown: CancellationToken,
        optional: bool,
    ) where
        E: EventFamily + 'static,
        S: Step<E>,
    {
        let inner = &self;
        let stage = inner.durable.clone();
        let watcher = {
            let inner = Arc::clone(inner);
            let shutdown = shutdown.clone();
            tokio::spawn(async move { inner.watch_max_deliveries(shutdown).await })
        };
        let mut failures = 0u32;
        while !shutdown.is_cancelled() {
            let (mut messages, limits) = match inner.open(options.concurrency).await {
                Ok(opened) => opened,
                Err(OpenError::Missing) if optional => {
                    tracing::debug!(stage, "no such consumer: nothing to handle");
                    break;
                }
                Err(message) => {
                    failures += 1;
                    tracing::warn!(stage, error = %message, "cannot open consumer, retrying");
                    let delay = Duration::from_millis(200 * 2u64.pow(failures.min(6)));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            failures = 0;
            let limits = Arc::new(limits);
            let hard_stop = CancellationToken::new();
            let mut in_flight: FuturesUnordered<InFlight> = FuturesUnordered::new();
            loop {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
                    next = messages.next(), if in_flight.len() < options.concurrency => match next {
                        Some(Ok(msg)) => {
                            let inner = Arc::clone(inner);
                            let limits = Arc::clone(&limits);
                            let hard_stop = hard_stop.clone();
                            in_flight.push(Box::pin(async move { inner.process::<E>(msg, &limits, hard_stop).await }));
                        }
                        Some(Err(e)) => {
                            // Missing heartbeats while the server is away are expected; the
                            // stream resumes by itself after reconnecting.
                            tracing::warn!(stage, error = %e, "consumer stream error");
                        }
                        None => break,
                    },
                }
            }
            // Whatever is in flight finishes before a new consumer stream is opened.
            if shutdown.is_cancelled() {
                drain_buffered(&mut messages).await;
                let grace = options.shutdown_grace;
                let finished = tokio::time::timeout(grace, async {
                    while in_flight.next().await.is_some() {}
                })
                .await;
                if finished.is_err() {
                    hard_stop.cancel();
                    while in_flight.next().await.is_some() {}
                }
            } else {
                while in_flight.next().await.is_some() {}
            }
        }
        watcher.abort();
    }
}

/// Messages pulled but not started are handed back at once instead of waiting for ack_wait.
async fn drain_buffered(messages: &mut consumer::pull::Stream) {
    while let Ok(Some(Ok(msg))) =
        tokio::time::timeout(Duration::from_millis(20), messages.next()).await
    {
        let _ = msg.ack_with(AckKind::Nak(None)).await;
    }
}

/// The server's notice that a message used up its deliveries without being acked or termed.
#[derive(serde::Deserialize)]
struct MaxDeliveries {
    stream_seq: u64,
    deliveries: u64,
}

impl<S> Inner<S> {
    /// A message whose step crashed the process (or outlived ack_wait) on every delivery
    /// reaches `max_deliver` without the runtime ever deciding; the server then stops
    /// delivering it and says so in an advisory. This dead-letters such messages, so even
    /// they end up visible. One subscriber per stage (queue group) handles each advisory;
    /// the dead letter's id makes a second copy impossible anyway.
    async fn watch_max_deliveries(&self, shutdown: CancellationToken) {
        let client = self.js.client();
        let subject = format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{}.{}",
            self.stream, self.durable
        );
        let queue = format!("ai-cache-max-deliveries-{}", self.durable);
        let mut advisories = match client.queue_subscribe(subject, queue).await {
            Ok(sub) => sub,
            Err(e) => {
                tracing::error!(stage = %self.durable, error = %e, "cannot watch max-deliveries advisories");
                return;
            }
        };
        loop {
            let advisory = tokio::select! {
                _ = shutdown.cancelled() => return,
                next = advisories.next() => match next {
                    Some(msg) => msg,
                    None => return,
                },
            };
            let Ok(notice) = serde_json::from_slice::<MaxDeliveries>(&advisory.payload) else {
                tracing::warn!(stage = %self.durable, "unreadable max-deliveries advisory");
                continue;
            };
            if let Err(e) = self.dead_letter_by_seq(&notice).await {
                tracing::error!(stage = %self.durable, nats.seq = notice.stream_seq, error = %e, "cannot dead-letter a message that used up its deliveries");
            }
        }
    }

    async fn dead_letter_by_seq(&self, notice: &MaxDeliveries) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let original = stream
            .get_raw_message(notice.stream_seq)
            .await
            .map_err(|e| e.to_string())?;
        let error = "delivery limit reached without a decision: the stage crashed or timed out on every delivery";
        let dl = DeadLetter {
            origin: Origin::of(
                Some(&original.headers),
                self.stream,
                original.subject.as_str(),
                notice.stream_seq,
            ),
            source: (self.stream, notice.stream_seq),
            consumer: &self.stage,
            deliveries: notice.deliveries,
            kind: DeadLetterKind::RetriesExhausted,
            error,
            payload: original.payload,
        };
        let seq = deadletter::publish(&self.js, dl).await?;
        tracing::error!(stage = %self.stage, nats.seq = notice.stream_seq, deadletter.seq = seq, error, "message dead-lettered");
        metrics::counter!("aicache_stage_messages_total", "stage" => self.stage.clone(), "outcome" => "dead_letter").increment(1);
        Ok(())
    }

    async fn open(
        &self,
        batch: usize,
    ) -> Result<(consumer::pull::Stream, ConsumerLimits), OpenError> {
        let other = |e: &dyn std::fmt::Display| OpenError::Other(e.to_string());
        let stream = self
            .js
            .get_stream(self.stream)
            .await
            .map_err(|e| other(&e))?;
        // Asked first so a missing durable is told apart from an unreachable server.
        stream
            .consumer_info(&self.durable)
            .await
            .map_err(|e| match e.kind() {
                ConsumerInfoErrorKind::NotFound => OpenError::Missing,
                _ => other(&e),
            })?;
        let mut consumer: consumer::PullConsumer = stream
            .get_consumer(&self.durable)
            .await
            .map_err(|e| other(&e))?;
        let info = consumer.info().await.map_err(|e| other(&e))?;
        let max_deliver = u64::try_from(info.config.max_deliver).unwrap_or(u64::MAX);
        let max_deliver = if max_deliver == 0 {
            u64::MAX
        } else {
            max_deliver
        };
        let ack_wait = if info.config.ack_wait.is_zero() {
            Duration::from_secs(30)
        } else {
            info.config.ack_wait
        };
        let messages = consumer
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(|e| other(&e))?;
        let limits = ConsumerLimits {
            max_deliver,
            progress_every: ack_wait / 3,
        };
        Ok((messages, limits))
    }

    async fn process<E>(
        &self,
        msg: jetstream::Message,
        limits: &ConsumerLimits,
        hard_stop: CancellationToken,
    ) where
        E: EventFamily,
        S: Step<E>,
    {
        let stage = self.stage.as_str();
        let started = Instant::now();
        let delivery = match msg.info() {
            Ok(info) => Delivery {
                subject: msg.subject.to_string(),
                stream_seq: info.stream_sequence,
                delivered: u64::try_from(info.delivered).unwrap_or(1),
            },
            Err(e) => {
                tracing::error!(stage, error = %e, "message without jetstream metadata");
                return;
            }
        };
        let outcome = match Event::<E>::from_json(&msg.payload) {
            Err(e) => Err(StepError::permanent(format!("undecodable event: {e}"))),
            Ok(event) => {
                let step = AssertUnwindSafe(self.step.handle(event, &delivery)).catch_unwind();
                tokio::pin!(step);
                let mut progress = tokio::time::interval(limits.progress_every);
                progress.tick().await;
                loop {
                    tokio::select! {
                        result = &mut step => break match result {
                            Ok(result) => result,
                            Err(_) => Err(StepError::permanent("step panicked")),
                        },
                        _ = progress.tick() => {
                            let _ = msg.ack_with(AckKind::Progress).await;
                        }
                        _ = hard_stop.cancelled() => {
                            tracing::info!(stage, nats.seq = delivery.stream_seq, "shutting down: message handed back");
                            let _ = msg.ack_with(AckKind::Nak(None)).await;
                            return;
                        }
                    }
                }
            }
        };
        let label = self.settle(&msg, &delivery, limits, outcome).await;
        metrics::counter!("aicache_stage_messages_total", "stage" => stage.to_owned(), "outcome" => label).increment(1);
        metrics::histogram!("aicache_stage_duration_seconds", "stage" => stage.to_owned())
            .record(started.elapsed().as_secs_f64());
    }

    /// Acks, naks or dead-letters the message; returns the outcome label for metrics.
    async fn settle(
        &self,
        msg: &jetstream::Message,
        delivery: &Delivery,
        limits: &ConsumerLimits,
        outcome: Result<(), StepError>,
    ) -> &'static str {
        let stage = self.stage.as_str();
        let seq = delivery.stream_seq;
        match outcome {
            Ok(()) => {
                if let Err(e) = msg.ack().await {
                    // The server will redeliver; the step is idempotent.
                    tracing::warn!(stage, nats.seq = seq, error = %e, "ack failed");
                }
                "ok"
            }
            Err(StepError::Transient {
                message,
                retry_after,
            }) if delivery.delivered < limits.max_deliver => {
                let delay = retry_after.unwrap_or_else(|| self.backoff_for(delivery.delivered));
                tracing::warn!(stage, nats.seq = seq, delivered = delivery.delivered, retry_in_ms = delay.as_millis() as u64, error = %message, "step failed, will retry");
                let _ = msg.ack_with(AckKind::Nak(Some(delay))).await;
                "retry"
            }
            Err(StepError::Transient { message, .. }) => {
                self.dead_letter(msg, delivery, DeadLetterKind::RetriesExhausted, &message)
                    .await
            }
            Err(StepError::Deferred { message, until }) => {
                self.defer(msg, delivery, limits.max_deliver, &message, until)
                    .await
            }
            Err(StepError::Permanent { message }) => {
                self.dead_letter(msg, delivery, DeadLetterKind::Permanent, &message)
                    .await
            }
        }
    }

    /// A deferred step is not a failure. Its first deferral waits with a nak; a message
    /// deferred again is handed to the stage's re-drive consumer as a fresh copy (its
    /// deliveries count from 1 again), so waiting never uses up the deliveries its failures are
    /// allowed and never dead-letters it. A stage without a re-drive consumer naks instead,
    /// and dead-letters on the last delivery.
    async fn defer(
        &self,
        msg: &jetstream::Message,
        delivery: &Delivery,
        max_deliver: u64,
        reason: &str,
        until: Duration,
    ) -> &'static str {
        let stage = self.stage.as_str();
        let wait = || async move {
            tracing::debug!(
                stage,
                nats.seq = delivery.stream_seq,
                delivered = delivery.delivered,
                retry_in_ms = until.as_millis() as u64,
                reason,
                "step deferred"
            );
            let _ = msg.ack_with(AckKind::Nak(Some(until))).await;
            "deferred"
        };
        if delivery.delivered <= 1 {
            return wait().await;
        }
        let handed = match has_redrive_consumer(&self.js, stage).await {
            Ok(true) => self.hand_off(msg, delivery).await,
            Ok(false) if delivery.delivered < max_deliver => return wait().await,
            Ok(false) => {
                let why = format!("{reason} (deferred on every delivery, no re-drive consumer)");
                return self
                    .dead_letter(msg, delivery, DeadLetterKind::RetriesExhausted, &why)
                    .await;
            }
            Err(e) => Err(e),
        };
        match handed {
            Ok(()) => {
                tracing::info!(
                    stage,
                    nats.seq = delivery.stream_seq,
                    delivered = delivery.delivered,
                    reason,
                    "deferred again: handed to the re-drive consumer"
                );
                let _ = msg.ack().await;
                "handed_off"
            }
            Err(e) => {
                tracing::warn!(stage, nats.seq = delivery.stream_seq, error = %e, "cannot hand a deferred message on, will retry");
                let _ = msg.ack_with(AckKind::Nak(Some(self.backoff_for(1)))).await;
                "retry"
            }
        }
    }

    /// Hands a deferred message to the stage's re-drive consumer: a copy with its origin,
    /// whose id makes a second copy impossible if this process dies before the ack.
    async fn hand_off(&self, msg: &jetstream::Message, delivery: &Delivery) -> Result<(), String> {
        let origin = Origin::of(
            msg.headers.as_ref(),
            self.stream,
            &delivery.subject,
            delivery.stream_seq,
        );
        let id = format!("deferred:{}:{}", self.stream, delivery.stream_seq);
        let payload = msg.payload.clone();
        copy_to_redrive(&self.js, self.stage.as_str(), &id, &origin, &[], payload).await
    }

    async fn dead_letter(
        &self,
        msg: &jetstream::Message,
        delivery: &Delivery,
        kind: DeadLetterKind,
        error: &str,
    ) -> &'static str {
        let stage = self.stage.as_str();
        let dl = DeadLetter {
            origin: Origin::of(
                msg.headers.as_ref(),
                self.stream,
                &delivery.subject,
                delivery.stream_seq,
            ),
            source: (self.stream, delivery.stream_seq),
            consumer: stage,
            deliveries: delivery.delivered,
            kind,
            error,
            payload: msg.payload.clone(),
        };
        match deadletter::publish(&self.js, dl).await {
            Ok(dl_seq) => {
                tracing::error!(
                    stage,
                    nats.seq = delivery.stream_seq,
                    deadletter.seq = dl_seq,
                    kind = kind.as_str(),
                    error,
                    "message dead-lettered"
                );
                let _ = msg.ack_with(AckKind::Term).await;
                "dead_letter"
            }
            Err(e) => {
                // Without a dead letter the message must stay: retry later.
                tracing::warn!(stage, nats.seq = delivery.stream_seq, error = %e, "dead-lettering failed, will retry");
                let _ = msg.ack_with(AckKind::Nak(Some(self.backoff_for(1)))).await;
                "retry"
            }
        }
    }

    fn backoff_for(&self, delivered: u64) -> Duration {
        let i = usize::try_from(delivered.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::from_secs(1))
    }
}
