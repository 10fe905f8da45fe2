//! Event history and reprocessing: a page's history shows every step it went through; after
//! a Markdown generator version bump, reprocessing from `markdown` regenerates exactly the
//! pages made by the old version and announces only those whose output changed; a second
//! run finds nothing to do; the edge store is not written with what it already holds.

use std::sync::Arc;
use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::domain::ids::{ClientId, PageId};
use ai_cache::domain::markdown;
use ai_cache::domain::url::NormalizedUrl;
use ai_cache::events::PageEvent;
use ai_cache::infra::blobs::BlobStore;
use ai_cache::pipeline::markdown::{Generator, MarkdownStage};
use ai_cache::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
use reqwest::Method;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::clients::{create_client, send};
use crate::harness::{TestApp, eventually, eventually_ok, stream_count};
use crate::page_origin::PageOrigin;

/// A new generator version: the same Markdown, except that pages under `/changed/` get a
/// paragraph more (as a real extractor change affects some pages and not others).
struct NextGenerator;

impl Generator for NextGenerator {
    fn version(&self) -> &str {
        "local-test-2"
    }

    fn generate(
        &self,
        html: &str,
        url: &str,
    ) -> Result<markdown::Generated, ai_cache::domain::html_bounds::TooComplex> {
        let mut made = markdown::generate(html, url)?;
        if url.contains("/changed/") {
            made.markdown
                .push_str("\n\nA paragraph the new generator finds.\n");
        }
        Ok(made)
    }
}

async fn spawn_markdown(
    app: &TestApp,
    generator: Option<Arc<dyn Generator>>,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let blobs = BlobStore::open(app.js(), 1 << 24).await.expect("blobs");
    let mut stage = MarkdownStage::new(app.js(), blobs, None)
        .await
        .expect("stage");
    if let Some(generator) = generator {
        stage = stage.with_generator(generator);
    }
    let runtime = ConsumerRuntime::<PageEvent, _>::new(
        app.js().clone(),
        "markdown",
        stage,
        RuntimeOptions::default(),
    );
    let stop = CancellationToken::new();
    let token = stop.clone();
    (
        tokio::spawn(async move { runtime.run(token).await.expect("markdown") }),
        stop,
    )
}

async fn count(app: &TestApp, event_type: &str) -> u64 {
    stream_count(app.js(), "PAGES", Some(&format!("{event_type}.>"))).await
}

/// Requests a run and waits until it is done; returns its final view.
async fn reprocess(app: &TestApp, client: &str, body: Value) -> Value {
    let (status, run) = app.post_reprocess(&client, &body).await;
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_str().expect("id").to_owned();
    eventually_ok(Duration::from_secs(30), || {
        let id = id.clone();
        async move {
            let (_, run) = send(app.master(Method::GET, &format!("/api/v1/reprocess/{id}"))).await;
            if run["status"] == "done" {
                Ok(run)
            } else {
                Err(run)
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generator_version_bump_regenerates_exactly_the_affected_pages() {
    let app = TestApp::with_roles(&[
        Role::Api,
        Role::Projections,
        Role::Scraper,
        Role::Renderer,
        Role::Uploader,
        Role::Reprocessor,
    ])
    .await;
    let (first, stop_first) = spawn_markdown(&app, None).await;
    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    let paths: Vec<String> = ["/changed/a", "/same/b", "/same/c"]
        .map(String::from)
        .to_vec();
    let urls = origin.articles(&paths);
    app.add_urls(&client, &urls).await;
    eventually(Duration::from_secs(30), "every page is served", || async {
        count(&app, "pages.updated").await == 3
    })
    .await;
    let page_id = |url: &str| {
        PageId::derive(
            ClientId::from_uuid(client.parse().expect("uuid")),
            &NormalizedUrl::parse(url).expect("url"),
        )
        .to_string()
    };

    // The history of a page: every step, in order, from the stream.
    let same_b = page_id(&urls[1]);
    let (status, history) = app.get_page_events(&same_b).await;
    assert_eq!(status, 200, "{history}");
    let types: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        types,
        [
            "pages.discovered",
            "pages.scraped",
            "pages.content_changed",
            "pages.markdown_generated",
            "pages.html_rendered",
            "pages.kv_uploaded",
            "pages.updated"
        ],
        "{history}"
    );
    assert!(
        history["items"][1]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("HTTP 200")),
        "{history}"
    );
    assert_eq!(
        history["items"][3]["event"]["data"]["generator_version"],
        ai_cache::domain::markdown::GENERATOR_VERSION
    );
    // Paged.
    let (_, first_two) = send(app.master(
        Method::GET,
        &format!("/api/v1/pages/{same_b}/events?limit=2"),
    ))
    .await;
    assert_eq!(first_two["items"].as_array().map(Vec::len), Some(2));
    let after = first_two["next_after"].as_u64().expect("next_after");
    let (_, rest) = send(app.master(
        Method::GET,
        &format!("/api/v1/pages/{same_b}/events?after={after}"),
    ))
    .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(5), "{rest}");
    assert_eq!(rest["items"][0]["type"], "pages.content_changed");

    let (_, before) = app.get_page(&same_b).await;
    // The new generator version is deployed, then the client reprocessed from `markdown`.
    stop_first.cancel();
    first.await.expect("stopped");
    let (_second, _stop_second) = spawn_markdown(&app, Some(Arc::new(NextGenerator))).await;
    let run = reprocess(&app, &client, json!({"from_stage": "markdown"})).await;
    assert_eq!(run["total"], 3, "{run}");
    assert_eq!(
        run["outcomes"],
        json!({"updated": 1, "unchanged": 2}),
        "{run}"
    );
    assert_eq!(
        count(&app, "pages.markdown_generated").await,
        6,
        "every page made by the old version is made again"
    );
    eventually(Duration::from_secs(5), "projections caught up", || async {
        count(&app, "pages.updated").await == 4
    })
    .await;
    let changed = page_id(&urls[0]);
    let (_, row) = app.get_page(&same_b).await;
    assert_eq!(
        row["last_changed_at"], before["last_changed_at"],
        "a re-sent change is not a new change: {row}"
    );
    assert_eq!(row["status"], before["status"]);
    let updated = stream_count(
        app.js(),
        "PAGES",
        Some(&format!("pages.updated.{client}.{changed}")),
    )
    .await;
    assert_eq!(
        updated, 2,
        "the one page whose output changed is announced again"
    );
    assert_eq!(
        count(&app, "pages.kv_uploaded").await,
        4,
        "nothing is uploaded for the pages whose output did not change"
    );
    let (_, history) = app.get_page_events(&changed).await;
    let made: Vec<&Value> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|e| e["type"] == "pages.markdown_generated")
        .collect();
    assert_eq!(made.len(), 2, "{history}");
    assert_eq!(
        made[1]["event"]["data"]["generator_version"],
        "local-test-2"
    );
    assert_eq!(
        made[1]["event"]["data"]["reprocess"]["from_stage"], "markdown",
        "the new Markdown carries its run"
    );

    // The history shows the reprocessing.
    let (_, history) = app.get_page_events(&same_b).await;
    let tail: Vec<&str> = history["items"]
        .as_array()
        .expect("items")
        .iter()
        .skip(7)
        .map(|e| e["type"].as_str().expect("type"))
        .collect();
    assert_eq!(
        tail,
        [
            "pages.content_changed",
            "pages.markdown_generated",
            "pages.reprocessed"
        ],
        "{history}"
    );
    assert_eq!(history["items"][9]["event"]["data"]["outcome"], "unchanged");

    // Nothing was made by another version any more: a second run regenerates nothing.
    let run = reprocess(&app, &client, json!({"from_stage": "markdown"})).await;
    assert_eq!(run["outcomes"], json!({"skipped": 3}), "{run}");
    assert_eq!(count(&app, "pages.markdown_generated").await, 6);
    assert_eq!(count(&app, "pages.updated").await, 4);

    // Forced, from upload, for one URL prefix: uploaded again, not announced again.
    let run = reprocess(
        &app,
        &client,
        json!({"from_stage": "upload", "url_prefix": origin.url("/same/"), "force": true}),
    )
    .await;
    assert_eq!(run["total"], 2, "{run}");
    assert_eq!(run["outcomes"], json!({"unchanged": 2}), "{run}");
    assert_eq!(count(&app, "pages.kv_uploaded").await, 6);
    assert_eq!(count(&app, "pages.updated").await, 4);

    // From scrape: fetched again whole (no conditional request), found unchanged.
    let hits_before = origin.hits("/same/c").len();
    let run = reprocess(&app, &client, json!({"from_stage": "scrape"})).await;
    assert_eq!(run["outcomes"], json!({"unchanged": 3}), "{run}");
    let hits = origin.hits("/same/c");
    assert_eq!(hits.len(), hits_before + 1);
    assert!(
        hits.last().is_some_and(
            |(_, h)| !h.contains_key("if-none-match") && !h.contains_key("if-modified-since")
        ),
        "a reprocessing fetch is not conditional"
    );

    // Bad requests are clear.
    let (status, body) = app
        .post_reprocess(&client, &json!({"from_stage": "everything"}))
        .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    let (status, body) = app.post_reprocess(&client, &json!({"from_stage": "render", "since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"})).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "until");
    let (status, _) = send(app.master(
        Method::GET,
        &format!("/api/v1/reprocess/{}", uuid::Uuid::new_v4()),
    ))
    .await;
    assert_eq!(status, 404);
    let (status, runs) =
        send(app.master(Method::GET, &format!("/api/v1/clients/{client}/reprocess"))).await;
    assert_eq!(status, 200);
    assert_eq!(runs.as_array().map(Vec::len), Some(4), "{runs}");

    // The same from the command line, as the real binary.
    let cli = |args: Vec<String>| {
        let app = &app;
        tokio::task::block_in_place(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            crate::cli::ai_cache(app, &args)
        })
    };
    let (ok, out, err) = cli(vec!["events".into(), "page".into(), urls[1].clone()]);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].contains("pages.discovered"), "{out}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("pages.scraped") && l.contains("HTTP 200")),
        "{out}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("pages.reprocessed") && l.contains("skipped")),
        "{out}"
    );
    let (ok, out, err) = cli([
        "reprocess",
        "start",
        "--client",
        "site.test",
        "--from",
        "render",
    ]
    .map(String::from)
    .to_vec());
    assert!(ok, "{err}");
    let run: Value = serde_json::from_str(&out).expect("the finished run as JSON");
    assert_eq!(run["status"], "done", "{out}");
    assert_eq!(run["outcomes"], json!({"skipped": 3}), "{out}");
    let (ok, _, err) = cli([
        "reprocess",
        "start",
        "--client",
        "site.test",
        "--from",
        "everything",
    ]
    .map(String::from)
    .to_vec());
    assert!(!ok && err.contains("unknown stage"), "{err}");

    // Everything above, rebuilt from the streams, is what the live projections show.
    for projection in ai_cache::projections::all() {
        let report =
            ai_cache::projections::verify::verify(app.db(), app.js(), projection, &|_, _| {})
                .await
                .expect("verify");
        assert!(report.equal(), "{report:?}");
    }
}

#[tokio::test]
async fn a_planner_that_died_mid_run_resumes_after_the_last_page_it_sent() {
    use ai_cache::events::clients::{ClientEvent, ReprocessRequested};
    use ai_cache::events::pages::Stage;
    use ai_cache::infra::publish::{Outgoing, Publisher};
    let app = TestApp::with_roles(&[Role::Projections, Role::Reprocessor]).await;
    let client = ClientId::from_uuid(uuid::Uuid::new_v4());
    let publisher = Publisher::new(app.js().clone());
    for i in 0..3 {
        let event = crate::projections::discovered(client, &format!("https://site.test/{i}"));
        publisher
            .publish(&Outgoing::unique(event))
            .await
            .expect("publish");
    }
    app.wait_for_checkpoint("pages", app.last_seq("PAGES").await)
        .await;
    let pages: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM pages ORDER BY id")
        .fetch_all(app.db())
        .await
        .expect("pages");
    // The state a planner leaves when it dies after sending the first page.
    let run = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO reprocess_runs (id, client_id, from_stage, status, total, requested, cursor,
             created_at, updated_at)
         VALUES ($1, $2, 'scrape', 'planning', 3, 1, $3, now(), now())",
    )
    .bind(run)
    .bind(client.as_uuid())
    .bind(pages[0])
    .execute(app.db())
    .await
    .expect("run row");
    let request = ai_cache::events::Event::new(
        client,
        None,
        ClientEvent::ReprocessRequested(ReprocessRequested {
            run_id: run,
            from_stage: Stage::Scrape,
            url_prefix: None,
            since: None,
            until: None,
            force: false,
        }),
    );
    publisher
        .publish(&Outgoing::unique(request))
        .await
        .expect("publish");
    eventually(Duration::from_secs(15), "the run is planned", || async {
        let status: String = sqlx::query_scalar("SELECT status FROM reprocess_runs WHERE id = $1")
            .bind(run)
            .fetch_one(app.db())
            .await
            .expect("status");
        status == "planned"
    })
    .await;
    let requested: i64 = sqlx::query_scalar("SELECT requested FROM reprocess_runs WHERE id = $1")
        .bind(run)
        .fetch_one(app.db())
        .await
        .expect("requested");
    assert_eq!(requested, 3);
    assert_eq!(
        stream_count(
            app.js(),
            "PAGES",
            Some(&format!("pages.refresh_requested.{client}.{}", pages[0]))
        )
        .await,
        0,
        "the page sent before the crash is not sent again"
    );
    for page in &pages[1..] {
        assert_eq!(
            stream_count(
                app.js(),
                "PAGES",
                Some(&format!("pages.refresh_requested.{client}.{page}"))
            )
            .await,
            1
        );
    }
}
