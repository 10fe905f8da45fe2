//! Liveness: a role started while NATS or PostgreSQL is down (the real binary) waits for it
//! and then works; a stage killed mid-batch has its messages back within its short ack wait
//! (the figure is printed for BENCHMARKS.md, not asserted); `/health` sees a stage nobody
//! pulls from and a projection that stopped, and projections reopen their consumers as soon
//! as NATS comes back.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use ai_cache::app::Role;
use ai_cache::events::{Event, PageEvent};
use ai_cache::infra::blobs::BlobStore;
use ai_cache::pipeline::markdown::MarkdownStage;
use ai_cache::pipeline::runtime::{ConsumerRuntime, Delivery, RuntimeOptions, Step, StepError};
use tokio::sync::Notify;

use crate::clients::create_client;
use crate::harness::{Options, TestApp, eventually, stream_count};
use crate::page_origin::PageOrigin;

/// `ai-cache run --roles <roles>` against the app's servers, its log in a file; killed (-9)
/// when dropped.
pub(crate) struct RoleProcess {
    child: Child,
    log: PathBuf,
}

impl RoleProcess {
    pub(crate) fn start(app: &TestApp, roles: &str) -> Self {
        Self::start_with(app, roles, &[])
    }

    /// `roles` with more environment (`env` wins over the defaults).
    pub(crate) fn start_with(app: &TestApp, roles: &str, env: &[(&str, &str)]) -> Self {
        let log = tempfile::NamedTempFile::new()
            .expect("log file")
            .into_temp_path()
            .keep()
            .expect("keep");
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_ai-cache"))
            .args(["run", "--roles", roles])
            .env("DATABASE_URL", &app.db_url)
            .env("NATS_URL", app.nats.url())
            .env("FERNET_KEYS", app.options.fernet_keys.join(","))
            .env_remove("FERNET_KEY")
            .env("ALLOW_PRIVATE_NETWORKS", "true")
            .env("FETCH_RESOLVE", "site.test=127.0.0.1")
            .env("STAGE_CONCURRENCY", "8")
            .env("SCRAPER_PER_HOST_CONCURRENCY", "4")
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .expect("ai-cache starts");
        Self { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the process says it is waiting for `what`, and is still running.
    async fn waits_for(&mut self, what: &str) {
        let wanted = format!("waiting for {what}");
        eventually(Duration::from_secs(30), &wanted, || {
            let seen = self.log().contains(&wanted);
            async move { seen }
        })
        .await;
        assert!(
            self.child.try_wait().expect("status").is_none(),
            "the role waits instead of exiting: {}",
            self.log()
        );
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RoleProcess {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

const PIPELINE: &str = "projections,scraper,markdown,renderer,uploader";

/// A client on a fresh origin with `n` article pages; returns the client id.
async fn site_with_pages(app: &TestApp, origin: &PageOrigin, n: usize) -> String {
    let client = create_client(app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    let paths: Vec<String> = (0..n).map(|i| format!("/a/{i}")).collect();
    let urls = origin.articles(&paths);
    for chunk in urls.chunks(500) {
        app.add_urls(&client, chunk).await;
    }
    client
}

async fn live_pages(app: &TestApp) -> i64 {
    // Counted in the projection: a page is live once its pages.updated is applied.
    sqlx::query_scalar("SELECT count(*) FROM pages WHERE stage = 'live'")
        .fetch_one(app.db())
        .await
        .unwrap_or(0)
}

async fn wait_all_live(app: &TestApp, n: i64) {
    eventually(
        Duration::from_secs(90),
        &format!("{n} pages are live"),
        || async move { live_pages(app).await == n },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_started_while_nats_is_down_waits_and_then_works() {
    let mut app = TestApp::with_roles(&[Role::Api]).await;
    app.nats.stop();
    let mut role = RoleProcess::start(&app, PIPELINE);
    role.waits_for("NATS").await;
    tokio::task::block_in_place(|| app.nats.restart()).expect("nats restarts");
    let origin = PageOrigin::start().await;
    site_with_pages(&app, &origin, 3).await;
    wait_all_live(&app, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_started_while_postgres_is_down_waits_and_then_works() {
    let options = Options {
        own_postgres: true,
        ..Options::default()
    };
    let mut app = TestApp::with_options(&[Role::Api], options).await;
    let postgres = app.postgres.as_mut().expect("own postgres");
    postgres.stop();
    let mut role = RoleProcess::start(&app, PIPELINE);
    role.waits_for("PostgreSQL").await;
    let postgres = app.postgres.as_mut().expect("own postgres");
    tokio::task::block_in_place(|| postgres.restart()).expect("postgres restarts");
    let origin = PageOrigin::start().await;
    site_with_pages(&app, &origin, 3).await;
    wait_all_live(&app, 3).await;
}

/// The Markdown stage: handles `healthy` messages, then freezes on every later one (a process
/// that hangs, holding its messages, until it is killed).
struct FreezeAfter {
    stage: MarkdownStage,
    healthy: AtomicUsize,
    frozen: Arc<Notify>,
}

impl Step<PageEvent> for FreezeAfter {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        if self
            .healthy
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_err()
        {
            self.frozen.notify_one();
            std::future::pending::<()>().await;
        }
        self.stage.handle(event, delivery).await
    }
}

fn markdown_runtime<S: Step<PageEvent>>(app: &TestApp, step: S) -> ConsumerRuntime<PageEvent, S> {
    let options = RuntimeOptions {
        concurrency: 8,
        ..RuntimeOptions::default()
    };
    ConsumerRuntime::new(app.js().clone(), "markdown", step, options)
}

async fn markdown_stage(app: &TestApp) -> MarkdownStage {
    let blobs = BlobStore::open(app.js(), 1 << 24).await.expect("blobs");
    MarkdownStage::new(app.js(), blobs, None)
        .await
        .expect("markdown stage")
}

/// Kills the Markdown stage mid-batch (its task is dropped while it holds messages, as a
/// SIGKILL would leave them: unacked, no more in-progress acks) and measures how long until
/// every page is live again, with the consumer's own `ack_wait`. Prints the figure; asserts
/// only that nothing is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_killed_mid_batch_is_recovered_from_within_its_ack_wait() {
    const PAGES: usize = 40;
    let app = TestApp::with_roles(&[
        Role::Api,
        Role::Projections,
        Role::Scraper,
        Role::Renderer,
        Role::Uploader,
    ])
    .await;
    let origin = PageOrigin::start().await;
    let frozen = Arc::new(Notify::new());
    let doomed = markdown_runtime(
        &app,
        FreezeAfter {
            stage: markdown_stage(&app).await,
            healthy: AtomicUsize::new(PAGES / 4),
            frozen: Arc::clone(&frozen),
        },
    );
    let doomed = tokio::spawn(async move {
        doomed
            .run(tokio_util::sync::CancellationToken::new())
            .await
            .expect("runtime")
    });
    site_with_pages(&app, &origin, PAGES).await;
    frozen.notified().await;
    let pages_stream = app.js().get_stream("PAGES").await.expect("stream");
    let held_now = || async {
        pages_stream
            .consumer_info("markdown")
            .await
            .map_or(0, |info| info.num_ack_pending)
    };
    eventually(
        Duration::from_secs(30),
        "the frozen stage holds a batch",
        || async { held_now().await >= 4 },
    )
    .await;
    let held = held_now().await;
    doomed.abort();
    let _ = doomed.await;
    let killed = Instant::now();
    let successor = markdown_runtime(&app, markdown_stage(&app).await);
    let _successor = tokio::spawn(async move {
        successor
            .run(tokio_util::sync::CancellationToken::new())
            .await
            .expect("runtime")
    });
    wait_all_live(&app, PAGES as i64).await;
    let recovery = killed.elapsed();
    let ack_wait = pages_stream
        .consumer_info("markdown")
        .await
        .expect("info")
        .config
        .ack_wait;
    println!(
        "RECOVERY after killing the markdown stage mid-batch ({held} messages held): every \
         page live {:.1} s after the kill (ack_wait {} s)",
        recovery.as_secs_f64(),
        ack_wait.as_secs()
    );
    assert!(held > 0, "the stage held messages when it died");
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.updated.>")).await,
        PAGES as u64,
        "exactly one pages.updated per page"
    );
    assert_eq!(stream_count(app.js(), "DEADLETTER", None).await, 0);
}

/// An app with only `roles`, whose `/health` calls anything waiting over a second a stall.
async fn impatient(roles: &[Role]) -> TestApp {
    let mut options = Options::default();
    options.health.max_stall_secs = 1;
    TestApp::with_options(roles, options).await
}

async fn health_reasons(app: &TestApp) -> (u16, Vec<String>) {
    let (status, body) = app.health().await;
    let reasons = body["reasons"]
        .as_array()
        .map(|r| {
            r.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    (status, reasons)
}

/// Waits until `/health` gives (or, with `present` false, no longer gives) a reason
/// containing every one of `words`.
async fn health_says(app: &TestApp, words: &[&str], present: bool) {
    eventually(
        Duration::from_secs(30),
        &format!("/health reasons mention {words:?}: {present}"),
        || async {
            let (status, reasons) = health_reasons(app).await;
            let found = reasons.iter().any(|r| words.iter().all(|w| r.contains(w)));
            found == present && (!present || status == 503)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_sees_a_stage_nobody_pulls_from_until_one_does() {
    let app = impatient(&[Role::Api, Role::Projections]).await;
    let origin = PageOrigin::start().await;
    site_with_pages(&app, &origin, 1).await;
    let stalled = [
        "consumer PAGES/scraper-discovered stands still",
        "no process is pulling from it",
    ];
    health_says(&app, &stalled, true).await;
    let _scraper = RoleProcess::start(&app, "scraper");
    health_says(&app, &stalled[..1], false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_sees_a_projection_that_stopped_applying_until_it_catches_up() {
    let app = impatient(&[Role::Api]).await;
    let subject = format!(
        "pages.refresh_requested.{}.{}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    );
    app.js()
        .publish(subject, "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    let stopped = ["projection pages stopped applying"];
    health_says(&app, &stopped, true).await;
    let pages = ai_cache::projections::all()
        .into_iter()
        .find(|p| p.name() == "pages")
        .expect("pages projection");
    let runner = ai_cache::projections::runtime::ProjectionRunner::new(
        pages,
        app.db().clone(),
        app.js().clone(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let s = stop.clone();
    let _runner = tokio::spawn(async move { runner.run(s).await });
    health_says(&app, &stopped, false).await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projections_reopen_their_consumers_as_soon_as_nats_is_back() {
    let mut app = TestApp::with_roles(&[Role::Api, Role::Projections]).await;
    tokio::task::block_in_place(|| app.nats.stop());
    eventually(
        Duration::from_secs(10),
        "the client sees NATS gone",
        || async { !app.backbone.nats.is_connected() },
    )
    .await;
    tokio::task::block_in_place(|| app.nats.restart()).expect("nats restarts");
    eventually(
        Duration::from_secs(10),
        "JetStream answers again",
        || async { app.js().get_stream("PAGES").await.is_ok() },
    )
    .await;
    let subject = format!(
        "pages.refresh_requested.{}.{}",
        uuid::Uuid::new_v4(),
        uuid::Uuid::new_v4()
    );
    let seq = app
        .js()
        .publish(subject, "{}".into())
        .await
        .expect("publish")
        .await
        .expect("stored")
        .sequence;
    // The restarted server lost the runner's ephemeral consumer: the reconnect reopens it
    // (and cuts short any retry backoff the outage built up).
    let started = Instant::now();
    app.wait_for_checkpoint("pages", seq).await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the projection applied the event {:.1} s after NATS came back",
        started.elapsed().as_secs_f64()
    );
}
