//! Order: the newest content of a page always wins, whatever is redelivered, retried or
//! replayed late. Each test holds back an old version of a page at the Markdown stage (or
//! replays or re-uploads it) while a newer version goes through, then checks that the newer
//! text is served, the page's row stays at the newer version, `pages.updated` versions only
//! grow, and nothing is dead-lettered.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::domain::ids::{ClientId, PageId};
use ai_cache::domain::kv_key::kv_key;
use ai_cache::domain::url::NormalizedUrl;
use ai_cache::events::{Event, PageEvent};
use ai_cache::infra::blobs::BlobStore;
use ai_cache::infra::edge_store::EdgeStore;
use ai_cache::pipeline::markdown::MarkdownStage;
use ai_cache::pipeline::runtime::{ConsumerRuntime, Delivery, RuntimeOptions, Step, StepError};
use ai_cache::pipeline::uploader::Uploader;
use reqwest::Method;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clients::{create_client, send};
use crate::harness::{TestApp, eventually, stream_count};
use crate::page_origin::{Page, PageOrigin, article};

const PATH: &str = "/p/333";

/// The text of version `n` of the page.
fn edition(n: u32) -> String {
    format!("This is edition number {n} of the page, with enough words to be its main content.")
}

/// What the held stage does with the first delivery of the version it holds.
enum Hold {
    /// Never finishes: the process froze (and is then killed).
    Freeze,
    /// Waits for the signal, then fails as a network error would.
    FailWhenReleased(Arc<Notify>),
}

/// A stage that holds back the first delivery of one page version and hands everything else
/// to the real stage, recording the order in which it saw versions.
struct Holding<S> {
    stage: S,
    version: u32,
    hold: Hold,
    held: Arc<Notify>,
    seen: Arc<Mutex<Vec<(u32, u64)>>>,
}

fn version_of(event: &Event<PageEvent>) -> Option<u32> {
    match &event.payload {
        PageEvent::ContentChanged(c) => Some(c.page_version),
        PageEvent::HtmlRendered(h) => Some(h.page_version),
        _ => None,
    }
}

impl<S: Step<PageEvent>> Step<PageEvent> for Holding<S> {
    async fn handle(&self, event: Event<PageEvent>, delivery: &Delivery) -> Result<(), StepError> {
        let version = version_of(&event);
        if let Some(v) = version {
            self.seen
                .lock()
                .expect("lock")
                .push((v, delivery.delivered));
        }
        if version == Some(self.version) && delivery.delivered == 1 {
            self.held.notify_one();
            match &self.hold {
                Hold::Freeze => std::future::pending::<()>().await,
                Hold::FailWhenReleased(release) => {
                    release.notified().await;
                    return Err(StepError::retry_after(
                        "connection reset",
                        Duration::from_millis(50),
                    ));
                }
            }
        }
        self.stage.handle(event, delivery).await
    }
}

/// A client with one page on a test origin, the pipeline running except the stage the test
/// runs itself.
struct Scene {
    app: TestApp,
    origin: PageOrigin,
    client: String,
    page: PageId,
    url: NormalizedUrl,
}

impl Scene {
    async fn new(without: Option<Role>) -> Self {
        let roles: Vec<Role> = crate::harness::PIPELINE_ROLES
            .into_iter()
            .filter(|r| Some(*r) != without)
            .collect();
        let app = TestApp::with_roles(&roles).await;
        let origin = PageOrigin::start().await;
        let client = create_client(&app, "Site", "site.test").await;
        app.crawl_rate(&client, 600).await;
        let url = NormalizedUrl::parse(&origin.url(PATH)).expect("url");
        let page = PageId::derive(client.parse::<ClientId>().expect("client id"), &url);
        Self {
            app,
            origin,
            client,
            page,
            url,
        }
    }

    /// Shortens a durable's ack wait, so a killed holder's message comes back quickly.
    async fn ack_wait(&self, durable: &str, wait: Duration) {
        let stream = self.app.js().get_stream("PAGES").await.expect("stream");
        let mut config = stream
            .consumer_info(durable)
            .await
            .expect("info")
            .config
            .clone();
        config.ack_wait = wait;
        stream.create_consumer(config).await.expect("ack wait");
    }

    /// Puts edition `n` on the origin and asks for the page (added the first time).
    async fn publish_edition(&self, n: u32) {
        self.origin
            .set(PATH, Page::html(&article(&edition(n), "f")));
        if n == 1 {
            self.app
                .add_urls(&self.client, &[self.url.to_string()])
                .await;
        } else {
            let (status, body) = send(self.app.master(
                Method::POST,
                &format!("/api/v1/pages/{}/refresh", self.page),
            ))
            .await;
            assert_eq!(status, 202, "{body}");
        }
    }

    async fn page_row(&self) -> serde_json::Value {
        send(
            self.app
                .master(Method::GET, &format!("/api/v1/pages/{}", self.page)),
        )
        .await
        .1
    }

    async fn wait_live(&self, version: u32) {
        eventually(
            Duration::from_secs(30),
            &format!("the page is live at version {version}"),
            || async move {
                let row = self.page_row().await;
                row["stage"] == "live" && row["version"] == version
            },
        )
        .await;
    }

    /// The versions of the page's events of `event_type`, in stream order.
    async fn versions(&self, event_type: &str) -> Vec<u32> {
        let stream = self.app.js().get_stream("PAGES").await.expect("stream");
        let subject = format!("{event_type}.{}.{}", self.client, self.page);
        let (events, _) = ai_cache::infra::nats::page_by_subject(&stream, &subject, 0, 1000, |m| {
            Event::<PageEvent>::from_json(&m.payload).ok()
        })
        .await
        .expect("history");
        events
            .iter()
            .filter_map(|e| match &e.payload {
                PageEvent::Updated(u) => Some(u.page_version),
                PageEvent::MarkdownGenerated(m) => Some(m.page_version),
                PageEvent::ContentChanged(c) => Some(c.page_version),
                _ => None,
            })
            .collect()
    }

    /// The Markdown the built-in edge serves for the page.
    async fn served_markdown(&self) -> String {
        let edge = EdgeStore::open(self.app.js()).await.expect("edge store");
        let manifest = edge
            .get(&kv_key(&self.url))
            .await
            .expect("read")
            .expect("the page is in the edge store");
        let blobs = BlobStore::open(self.app.js(), 1 << 24)
            .await
            .expect("blobs");
        let bytes = blobs
            .get(&manifest.markdown.hash)
            .await
            .expect("read")
            .expect("blob");
        String::from_utf8(bytes).expect("utf-8")
    }

    /// Waits until the pipeline has handled everything, then checks that version `newest`,
    /// with the text of edition `newest`, won.
    async fn assert_newest_wins(&self, newest: u32) {
        self.assert_wins(newest, newest).await;
    }

    /// Waits until the pipeline has handled everything, then checks that page version
    /// `newest`, with the text of edition `text`, won.
    async fn assert_wins(&self, newest: u32, text: u32) {
        let app = &self.app;
        let stages = ["scraper-refresh", "markdown", "renderer", "uploader"];
        app.drained("PAGES", &stages).await;
        app.caught_up("pages", "PAGES").await;
        let row = self.page_row().await;
        assert_eq!(
            (row["stage"].as_str(), row["version"].as_u64()),
            (Some("live"), Some(u64::from(newest))),
            "{row}"
        );
        let served = self.served_markdown().await;
        assert!(
            served.contains(&edition(text)),
            "the newest edition is served: {served}"
        );
        let updated = self.versions("pages.updated").await;
        assert!(
            updated.windows(2).all(|w| w[0] < w[1]) && updated.last() == Some(&newest),
            "pages.updated versions only grow and end at {newest}: {updated:?}"
        );
        assert_eq!(stream_count(app.js(), "DEADLETTER", None).await, 0);
    }
}

fn options() -> RuntimeOptions {
    RuntimeOptions {
        concurrency: 4,
        backoff: vec![Duration::from_millis(50)],
        shutdown_grace: Duration::from_secs(1),
    }
}

async fn markdown_stage(app: &TestApp) -> MarkdownStage {
    let blobs = BlobStore::open(app.js(), 1 << 24).await.expect("blobs");
    MarkdownStage::new(app.js(), blobs, None)
        .await
        .expect("markdown stage")
}

fn run<S: Step<PageEvent>>(
    app: &TestApp,
    durable: &str,
    step: S,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let stop = CancellationToken::new();
    let runtime = ConsumerRuntime::<PageEvent, _>::new(app.js().clone(), durable, step, options());
    let s = stop.clone();
    let task = tokio::spawn(async move { runtime.run(s).await.expect("runtime") });
    (task, stop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_held_by_a_killed_stage_never_overwrites_the_newer_one() {
    let scene = Scene::new(Some(Role::Markdown)).await;
    let app = &scene.app;
    scene.ack_wait("markdown", Duration::from_secs(4)).await;
    let held = Arc::new(Notify::new());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let frozen = Holding {
        stage: markdown_stage(app).await,
        version: 2,
        hold: Hold::Freeze,
        held: Arc::clone(&held),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let (frozen_task, _) = run(app, "markdown", frozen);
    scene.publish_edition(1).await;
    scene.wait_live(1).await;

    // Version 2 reaches the frozen process, which is then killed.
    scene.publish_edition(2).await;
    held.notified().await;
    frozen_task.abort();
    let _ = frozen_task.await;

    // A new process takes over; version 3 goes through while 2 waits out its ack wait.
    let fresh = Holding {
        stage: markdown_stage(app).await,
        version: 0,
        hold: Hold::Freeze,
        held: Arc::new(Notify::new()),
        seen: Arc::clone(&seen),
    };
    let (_fresh, _stop) = run(app, "markdown", fresh);
    scene.publish_edition(3).await;
    scene.wait_live(3).await;
    scene.assert_newest_wins(3).await;

    let seen = seen.lock().expect("lock").clone();
    assert_eq!(
        seen,
        vec![(3, 1), (2, 2)],
        "version 2 came back after version 3 was served"
    );
    assert_eq!(
        scene.versions("pages.markdown_generated").await,
        vec![1, 3],
        "the superseded change made no Markdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_retried_after_a_newer_one_went_through_is_dropped() {
    let scene = Scene::new(Some(Role::Markdown)).await;
    let app = &scene.app;
    let (held, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let step = Holding {
        stage: markdown_stage(app).await,
        version: 2,
        hold: Hold::FailWhenReleased(Arc::clone(&release)),
        held: Arc::clone(&held),
        seen: Arc::clone(&seen),
    };
    let (_task, _stop) = run(app, "markdown", step);
    scene.publish_edition(1).await;
    scene.wait_live(1).await;
    scene.publish_edition(2).await;
    held.notified().await;
    scene.publish_edition(3).await;
    scene.wait_live(3).await;
    // Version 2's first attempt fails now, and its retry finds version 3 served.
    release.notify_one();
    scene.assert_newest_wins(3).await;
    let seen = seen.lock().expect("lock").clone();
    assert_eq!(seen, vec![(1, 1), (2, 1), (3, 1), (2, 2)]);
    assert_eq!(scene.versions("pages.markdown_generated").await, vec![1, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_inputs_replayed_after_the_duplicate_window_change_nothing() {
    let scene = Scene::new(None).await;
    let app = &scene.app;
    scene.publish_edition(1).await;
    scene.wait_live(1).await;
    let stream = app.js().get_stream("PAGES").await.expect("stream");
    let last = |event_type: &str| {
        let subject = format!("{event_type}.{}.{}", scene.client, scene.page);
        let stream = stream.clone();
        async move {
            stream
                .direct_get_last_for_subject(subject)
                .await
                .expect("event")
        }
    };
    let kinds = [
        "pages.content_changed",
        "pages.markdown_generated",
        "pages.html_rendered",
    ];
    let mut old = Vec::new();
    for kind in kinds {
        old.push(last(kind).await);
    }
    scene.publish_edition(2).await;
    scene.wait_live(2).await;
    let updates_before = scene.versions("pages.updated").await;
    // Version 1's inputs, and version 2's rendering, published again under new ids (as if
    // re-sent after the duplicate window).
    old.push(last("pages.html_rendered").await);
    for msg in old {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", uuid::Uuid::new_v4().to_string().as_str());
        app.js()
            .publish_with_headers(msg.subject.to_string(), headers, msg.payload.clone())
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    scene.assert_newest_wins(2).await;
    assert_eq!(
        scene.versions("pages.updated").await,
        updates_before,
        "nothing new announced"
    );
    assert_eq!(
        scene.versions("pages.markdown_generated").await,
        vec![1, 2, 1],
        "only the replayed Markdown: the replayed change made none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_write_left_by_a_dead_uploader_is_undone_by_its_redelivery() {
    let scene = Scene::new(Some(Role::Uploader)).await;
    let app = &scene.app;
    let uploader = || async {
        Uploader::new(
            app.js(),
            app.db().clone(),
            BlobStore::open(app.js(), 1 << 24).await.expect("blobs"),
            None,
        )
        .await
        .expect("uploader")
    };
    let (held, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let step = Holding {
        stage: uploader().await,
        version: 1,
        hold: Hold::FailWhenReleased(Arc::clone(&release)),
        held: Arc::clone(&held),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    // Version 1's first upload is held; the test lets version 2 through first by hand.
    let (_task, _stop) = run(app, "uploader", step);
    scene.publish_edition(1).await;
    held.notified().await;
    let edge = EdgeStore::open(app.js()).await.expect("edge");
    let stream = app.js().get_stream("PAGES").await.expect("stream");
    let rendered_v1 = stream
        .direct_get_last_for_subject(format!(
            "pages.html_rendered.{}.{}",
            scene.client, scene.page
        ))
        .await
        .expect("rendering of version 1");
    scene.publish_edition(2).await;
    scene.wait_live(2).await;
    // The held delivery had written version 1 over version 2 and died before publishing.
    let mut stale = edge
        .get(&kv_key(&scene.url))
        .await
        .expect("read")
        .expect("manifest");
    let event = Event::<PageEvent>::from_json(&rendered_v1.payload).expect("event");
    let PageEvent::HtmlRendered(v1) = event.payload else {
        panic!("a rendering")
    };
    stale.html = v1.html;
    stale.page_version = 1;
    edge.put(&stale).await.expect("stale write");
    release.notify_one();
    scene.assert_newest_wins(2).await;
    let manifest = edge
        .get(&kv_key(&scene.url))
        .await
        .expect("read")
        .expect("manifest");
    assert_eq!(manifest.page_version, 2, "the stale write was undone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fetch_of_older_content_never_becomes_a_newer_version() {
    let scene = Scene::new(None).await;
    scene.publish_edition(1).await;
    scene.wait_live(1).await;
    // The fetch of edition 2 is held at the origin while edition 3 is fetched and served.
    let (asked, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    scene.origin.set(
        PATH,
        Page::Held {
            asked: Arc::clone(&asked),
            release: Arc::clone(&release),
            page: Box::new(Page::html(&article(&edition(2), "f"))),
        },
    );
    let (status, body) = send(scene.app.master(
        Method::POST,
        &format!("/api/v1/pages/{}/refresh", scene.page),
    ))
    .await;
    assert_eq!(status, 202, "{body}");
    asked.notified().await;
    scene.publish_edition(3).await;
    scene.wait_live(2).await;
    // Edition 2 arrives last: it lost the race, is fetched again and found unchanged.
    release.notify_one();
    scene.assert_wins(2, 3).await;
    assert_eq!(
        scene.versions("pages.content_changed").await,
        vec![1, 2],
        "one change per version"
    );
}
