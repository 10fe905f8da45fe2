//! The consumer runtime against a real nats-server: redelivery after a crash without
//! duplicates, dead letters, restarts of the server, graceful shutdown.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::events::Event;
use ai_cache::events::pages::{PageEvent, RefreshReason, RefreshRequested};
use ai_cache::infra::publish::{Outgoing, Publisher};
use ai_cache::pipeline::deadletter::headers;
use ai_cache::pipeline::runtime::{ConsumerRuntime, Delivery, RuntimeOptions, Step, StepError};
use async_nats::jetstream::consumer;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::harness::{Recorder, TestApp, eventually, recorder, stream_count};
use crate::projections::discovered;

const STAGE: &str = "test-stage";

/// What the test step does after recording the delivery.
#[derive(Clone)]
enum Behaviour {
    /// Publish the next event (keyed by input), then succeed.
    Forward,
    /// Publish the next event, signal, then never return: a process dying before its ack.
    ForwardThenHang(Arc<Notify>),
    /// Fail transiently every time.
    AlwaysTransient,
    /// Panic.
    Panic,
    /// Signal, take a while, then forward.
    Slow(Arc<Notify>, Duration),
    /// Deferred (a host's turn is not there yet) this many times in all, then forward.
    Deferred(Arc<AtomicU64>),
    /// Deferred this many times in all, then fail transiently every time.
    DeferredThenTransient(Arc<AtomicU64>),
}

struct TestStep {
    publisher: Publisher,
    seen: Recorder<(String, u64)>,
    behaviour: Behaviour,
}

impl Step<PageEvent> for TestStep {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        let page = event
            .meta
            .page_id
            .map(|p| p.to_string())
            .unwrap_or_default();
        self.seen
            .lock()
            .expect("lock")
            .push((page.clone(), delivery.delivered));
        let next = Outgoing::keyed(
            Event::caused_by(
                &event,
                PageEvent::RefreshRequested(RefreshRequested {
                    reason: RefreshReason::Reprocess,
                    reprocess: None,
                }),
            ),
            format!("test-stage:{page}:{}", delivery.stream_seq),
        );
        match &self.behaviour {
            Behaviour::AlwaysTransient => return Err(StepError::transient("origin is down")),
            Behaviour::Panic => panic!("a bug in the step"),
            Behaviour::Deferred(left) | Behaviour::DeferredThenTransient(left)
                if left
                    .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                    .is_ok() =>
            {
                let wait = Duration::from_millis(50);
                return Err(StepError::deferred("waiting for a turn", wait));
            }
            Behaviour::DeferredThenTransient(_) => {
                return Err(StepError::transient("origin is down"));
            }
            Behaviour::Slow(started, delay) => {
                started.notify_one();
                tokio::time::sleep(*delay).await;
            }
            _ => {}
        }
        self.publisher
            .publish(&next)
            .await
            .map_err(StepError::transient)?;
        if let Behaviour::ForwardThenHang(published) = &self.behaviour {
            published.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
}

async fn create_test_consumer(app: &TestApp, max_deliver: i64) {
    app.js()
        .get_stream("PAGES")
        .await
        .expect("stream")
        .create_consumer(consumer::pull::Config {
            durable_name: Some(STAGE.into()),
            filter_subject: "pages.discovered.>".into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            max_deliver,
            ..Default::default()
        })
        .await
        .expect("consumer");
}

fn runtime(
    app: &TestApp,
    seen: &Recorder<(String, u64)>,
    behaviour: Behaviour,
) -> ConsumerRuntime<PageEvent, TestStep> {
    let step = TestStep {
        publisher: Publisher::new(app.js().clone()),
        seen: seen.clone(),
        behaviour,
    };
    let options = RuntimeOptions {
        concurrency: 4,
        backoff: vec![Duration::from_millis(50)],
        shutdown_grace: Duration::from_secs(5),
    };
    ConsumerRuntime::new(app.js().clone(), STAGE, step, options)
}

fn spawn(
    rt: ConsumerRuntime<PageEvent, TestStep>,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let token = CancellationToken::new();
    let t = token.clone();
    let handle = tokio::spawn(async move {
        rt.run(t).await.expect("runtime");
    });
    (handle, token)
}

async fn test_consumer_info(app: &TestApp) -> consumer::Info {
    app.js()
        .get_stream("PAGES")
        .await
        .expect("stream")
        .consumer_info(STAGE)
        .await
        .expect("info")
}

async fn consumer_idle(app: &TestApp) -> bool {
    let info = test_consumer_info(app).await;
    info.num_pending == 0 && info.num_ack_pending == 0
}

/// Runs a stage that publishes its output and then dies before acking (the task is aborted).
async fn crash_during_delivery(app: &TestApp, seen: &Recorder<(String, u64)>) {
    let published = Arc::new(Notify::new());
    let (doomed, _) = spawn(runtime(
        app,
        seen,
        Behaviour::ForwardThenHang(published.clone()),
    ));
    published.notified().await;
    doomed.abort();
    let _ = doomed.await;
}

/// Waits until `n` messages are dead-lettered and the test consumer has nothing left.
async fn wait_dead_lettered(app: &TestApp, n: u64) {
    eventually(
        Duration::from_secs(15),
        &format!("{n} message(s) are dead-lettered"),
        || async {
            stream_count(app.js(), "DEADLETTER", None).await == n && consumer_idle(app).await
        },
    )
    .await;
}

/// The headers of the test stage's last dead letter, by name, and its payload.
async fn last_dead_letter(app: &TestApp) -> (impl Fn(&str) -> Option<String>, bytes::Bytes) {
    let dl = app
        .js()
        .get_stream("DEADLETTER")
        .await
        .expect("stream")
        .get_last_raw_message_by_subject("deadletter.test-stage")
        .await
        .expect("dead letter");
    let headers = dl.headers.clone();
    (
        move |name: &str| headers.get(name).map(|v| v.to_string()),
        dl.payload,
    )
}

async fn publish_discovered(app: &TestApp, n: usize) -> Vec<String> {
    let publisher = Publisher::new(app.js().clone());
    let client = ai_cache::domain::ids::ClientId::new_random();
    let events: Vec<_> = (0..n)
        .map(|i| Outgoing::unique(discovered(client, &format!("https://example.com/{i}"))))
        .collect();
    let pages = events
        .iter()
        .map(|o| o.event.meta.page_id.expect("page").to_string())
        .collect();
    publisher.publish_all(&events).await.expect("publish");
    pages
}

#[tokio::test]
async fn a_stage_killed_before_its_ack_gets_the_message_again_and_produces_no_duplicate() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 5).await;
    let pages = publish_discovered(&app, 1).await;
    let seen = recorder();

    crash_during_delivery(&app, &seen).await;

    let (_survivor, stop) = spawn(runtime(&app, &seen, Behaviour::Forward));
    eventually(
        Duration::from_secs(15),
        "the message is redelivered and acked",
        || async { seen.lock().expect("lock").len() == 2 && consumer_idle(&app).await },
    )
    .await;
    stop.cancel();
    let deliveries: Vec<(String, u64)> = seen.lock().expect("lock").clone();
    assert_eq!(
        deliveries,
        vec![(pages[0].clone(), 1), (pages[0].clone(), 2)]
    );
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.refresh_requested.>")).await,
        1,
        "the redelivery published no duplicate"
    );
    assert_eq!(stream_count(app.js(), "DEADLETTER", None).await, 0);
}

#[tokio::test]
async fn a_message_failing_on_every_delivery_ends_in_the_dead_letter_stream() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 3).await;
    publish_discovered(&app, 1).await;
    let seen = recorder();
    let (_rt, stop) = spawn(runtime(&app, &seen, Behaviour::AlwaysTransient));
    wait_dead_lettered(&app, 1).await;
    stop.cancel();

    let deliveries: Vec<u64> = seen.lock().expect("lock").iter().map(|(_, d)| *d).collect();
    assert_eq!(deliveries, vec![1, 2, 3]);
    let (header, payload) = last_dead_letter(&app).await;
    assert_eq!(header(headers::DELIVERIES).as_deref(), Some("3"));
    assert_eq!(
        header(headers::ERROR_KIND).as_deref(),
        Some("retries_exhausted")
    );
    assert_eq!(header(headers::ERROR).as_deref(), Some("origin is down"));
    assert_eq!(header(headers::ORIGINAL_STREAM).as_deref(), Some("PAGES"));
    assert!(header(headers::ORIGINAL_SUBJECT).is_some_and(|s| s.starts_with("pages.discovered.")));
    let original = app
        .js()
        .get_stream("PAGES")
        .await
        .expect("stream")
        .get_raw_message(1)
        .await
        .expect("original");
    assert_eq!(
        payload, original.payload,
        "the payload is kept untouched for re-driving"
    );
}

#[tokio::test]
async fn a_message_deferred_again_starts_over_on_the_redrive_consumer_and_is_never_dead_lettered() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 3).await;
    create_redrive_consumer(&app, 3).await;
    publish_discovered(&app, 1).await;
    let seen = recorder();
    let left = Arc::new(AtomicU64::new(5));
    let (_rt, stop) = spawn(runtime(&app, &seen, Behaviour::Deferred(left)));
    eventually(Duration::from_secs(15), "the page is forwarded", || async {
        stream_count(app.js(), "PAGES", Some("pages.refresh_requested.>")).await == 1
    })
    .await;
    stop.cancel();

    let deliveries: Vec<u64> = seen.lock().expect("lock").iter().map(|(_, d)| *d).collect();
    assert_eq!(
        deliveries,
        vec![1, 2, 1, 2, 1, 2],
        "deferred, then deferred again and handed on, twice; the third copy is forwarded"
    );
    assert_eq!(stream_count(app.js(), "DEADLETTER", None).await, 0);
}

#[tokio::test]
async fn deferrals_never_use_up_the_deliveries_a_messages_failures_are_allowed() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 3).await;
    create_redrive_consumer(&app, 3).await;
    publish_discovered(&app, 1).await;
    let seen = recorder();
    let left = Arc::new(AtomicU64::new(2));
    let (_rt, stop) = spawn(runtime(&app, &seen, Behaviour::DeferredThenTransient(left)));
    wait_dead_lettered(&app, 1).await;
    stop.cancel();
    let deliveries: Vec<u64> = seen.lock().expect("lock").iter().map(|(_, d)| *d).collect();
    assert_eq!(
        deliveries,
        vec![1, 2, 1, 2, 3],
        "two deferrals (the second hands it on), then three failures: max_deliver of them"
    );
    let (header, _) = last_dead_letter(&app).await;
    assert_eq!(
        header(headers::ERROR_KIND).as_deref(),
        Some("retries_exhausted")
    );
    assert_eq!(header(headers::ORIGINAL_STREAM).as_deref(), Some("PAGES"));
}

async fn create_redrive_consumer(app: &TestApp, max_deliver: i64) {
    app.js()
        .get_stream("REDRIVE")
        .await
        .expect("stream")
        .create_consumer(consumer::pull::Config {
            durable_name: Some(format!("{STAGE}-redrive")),
            filter_subject: format!("redrive.{STAGE}"),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: Duration::from_secs(1),
            max_deliver,
            ..Default::default()
        })
        .await
        .expect("redrive consumer");
}

#[tokio::test]
async fn a_message_deferred_on_every_delivery_of_a_stage_without_redrive_is_dead_lettered() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 2).await;
    publish_discovered(&app, 1).await;
    let seen = recorder();
    let left = Arc::new(AtomicU64::new(u64::MAX));
    let (_rt, stop) = spawn(runtime(&app, &seen, Behaviour::Deferred(left)));
    wait_dead_lettered(&app, 1).await;
    stop.cancel();
    let (header, _) = last_dead_letter(&app).await;
    assert!(header(headers::ERROR).is_some_and(|e| e.contains("no re-drive consumer")));
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_at_once_without_reaching_the_step() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 5).await;
    app.js()
        .publish("pages.discovered.x.y", "\u{0}garbage".into())
        .await
        .expect("publish")
        .await
        .expect("ack");
    let seen = recorder();
    let (_rt, stop) = spawn(runtime(&app, &seen, Behaviour::Forward));
    wait_dead_lettered(&app, 1).await;
    stop.cancel();

    assert!(seen.lock().expect("lock").is_empty());
    let (header, _) = last_dead_letter(&app).await;
    assert_eq!(header(headers::ERROR_KIND).as_deref(), Some("permanent"));
    assert_eq!(header(headers::DELIVERIES).as_deref(), Some("1"));
}

#[tokio::test]
async fn a_panicking_step_dead_letters_its_message_and_the_runtime_carries_on() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 5).await;
    publish_discovered(&app, 2).await;
    let seen = recorder();
    let (rt, stop) = spawn(runtime(&app, &seen, Behaviour::Panic));
    wait_dead_lettered(&app, 2).await;
    assert!(!rt.is_finished(), "the runtime survives a panicking step");
    stop.cancel();
    let (header, _) = last_dead_letter(&app).await;
    assert_eq!(header(headers::ERROR).as_deref(), Some("step panicked"));
}

#[tokio::test]
async fn on_shutdown_the_message_in_flight_finishes_and_is_acked() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 5).await;
    publish_discovered(&app, 1).await;
    let seen = recorder();
    let started = Arc::new(Notify::new());
    let (rt, stop) = spawn(runtime(
        &app,
        &seen,
        Behaviour::Slow(started.clone(), Duration::from_millis(400)),
    ));
    started.notified().await;
    stop.cancel();
    rt.await.expect("runtime returns");
    // The ack left before `run` returned (it flushes); the server applies acks on its own
    // queue, so its consumer info may lag a moment. Nobody pulls any more: a message that
    // was not acked would stay pending for good, and one that was nak'd is redelivered.
    eventually(
        Duration::from_secs(5),
        "the in-flight message is acked",
        || consumer_idle(&app),
    )
    .await;
    let info = test_consumer_info(&app).await;
    assert_eq!(info.num_redelivered, 0, "delivered once, acked once");
    assert_eq!(
        info.ack_floor.stream_sequence,
        info.delivered.stream_sequence
    );
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.refresh_requested.>")).await,
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_nats_restart_stages_and_projections_resume_and_nothing_is_lost() {
    let mut app = TestApp::with_roles(&[Role::Projections]).await;
    create_test_consumer(&app, 10).await;
    let seen = recorder();
    let (_rt, stop) = spawn(runtime(&app, &seen, Behaviour::Forward));
    let mut pages = publish_discovered(&app, 30).await;
    eventually(
        Duration::from_secs(15),
        "the first batch is handled",
        || async { seen.lock().expect("lock").len() >= 30 },
    )
    .await;

    tokio::task::block_in_place(|| app.nats.restart()).expect("restart");
    // Publishing retries until the client has reconnected.
    let publisher = Publisher::new(app.js().clone());
    let client = ai_cache::domain::ids::ClientId::new_random();
    for i in 0..30 {
        let out = Outgoing::unique(discovered(
            client,
            &format!("https://example.com/after/{i}"),
        ));
        pages.push(out.event.meta.page_id.expect("page").to_string());
        crate::harness::eventually_ok(Duration::from_secs(20), || publisher.publish(&out)).await;
    }

    eventually(
        Duration::from_secs(30),
        "every page is handled once more after the restart",
        || async {
            let mut handled: Vec<String> = seen
                .lock()
                .expect("lock")
                .iter()
                .map(|(p, _)| p.clone())
                .collect();
            handled.sort();
            handled.dedup();
            handled.len() == 60
        },
    )
    .await;
    eventually(Duration::from_secs(15), "the consumer is idle", || async {
        consumer_idle(&app).await
    })
    .await;
    stop.cancel();
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.refresh_requested.>")).await,
        60
    );
    let end = app.last_seq("PAGES").await;
    app.wait_for_checkpoint("pages", end).await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM pages")
        .fetch_one(app.db())
        .await
        .expect("count");
    assert_eq!(rows, 60);
}

#[tokio::test]
async fn a_step_longer_than_ack_wait_is_kept_alive_by_progress_acks_and_not_redelivered() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 5).await; // ack_wait 1 s
    publish_discovered(&app, 1).await;
    let seen = recorder();
    let started = Arc::new(Notify::new());
    let slow = Behaviour::Slow(started.clone(), Duration::from_millis(2500));
    let (_rt, stop) = spawn(runtime(&app, &seen, slow));
    started.notified().await;
    eventually(
        Duration::from_secs(10),
        "the slow step finishes and is acked",
        || async {
            stream_count(app.js(), "PAGES", Some("pages.refresh_requested.>")).await == 1
                && consumer_idle(&app).await
        },
    )
    .await;
    stop.cancel();
    let deliveries: Vec<u64> = seen.lock().expect("lock").iter().map(|(_, d)| *d).collect();
    assert_eq!(
        deliveries,
        vec![1],
        "no redelivery while the step was working"
    );
}

#[tokio::test]
async fn a_message_that_crashes_the_stage_on_every_delivery_still_ends_in_the_dead_letter_stream() {
    let app = TestApp::with_roles(&[]).await;
    create_test_consumer(&app, 2).await;
    publish_discovered(&app, 1).await;
    let seen = recorder();
    // Two deliveries, and the stage dies during each of them.
    for _ in 0..2 {
        crash_during_delivery(&app, &seen).await;
    }
    // A healthy instance is running when the server gives up on the message.
    let (_survivor, stop) = spawn(runtime(&app, &seen, Behaviour::Forward));
    wait_dead_lettered(&app, 1).await;
    stop.cancel();

    assert_eq!(
        seen.lock().expect("lock").len(),
        2,
        "the server delivered it max_deliver times, no more"
    );
    let (header, _) = last_dead_letter(&app).await;
    assert_eq!(header(headers::DELIVERIES).as_deref(), Some("2"));
    assert_eq!(
        header(headers::ERROR_KIND).as_deref(),
        Some("retries_exhausted")
    );
    assert!(header(headers::ERROR).is_some_and(|e| e.contains("without a decision")));
}
