//! The whole pipeline: sitemap import → scrape → Markdown → HTML → built-in edge store →
//! `pages.updated`, observed the way an external system would (a plain NATS subscription).

use std::sync::Arc;
use std::time::Duration;

use ai_cache::app::Role;
use ai_cache::domain::kv_key::kv_key;
use ai_cache::domain::url::NormalizedUrl;
use ai_cache::events::PageEvent;
use ai_cache::infra::edge_store::EdgeStore;
use ai_cache::pipeline::runtime::{ConsumerRuntime, RuntimeOptions};
use ai_cache::pipeline::uploader::Uploader;
use futures::StreamExt;
use reqwest::Method;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::clients::{create_client, send};
use crate::harness::{Options, TestApp, eventually, stream_count};
use crate::page_origin::{Page, PageOrigin, article};

fn sitemap(origin: &PageOrigin, paths: &[String]) -> Page {
    let urls: String = paths
        .iter()
        .map(|p| format!("<url><loc>{}</loc></url>", origin.url(p)))
        .collect();
    let body = format!(
        r#"<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>"#
    );
    Page::Html {
        body: body.into_bytes(),
        content_type: "application/xml".into(),
        etag: None,
    }
}

fn spawn_uploader(
    app: &TestApp,
    uploader: &Arc<Uploader>,
) -> (tokio::task::JoinHandle<()>, CancellationToken) {
    let stop = CancellationToken::new();
    let rt = ConsumerRuntime::<PageEvent, _>::new(
        app.js().clone(),
        "uploader",
        Arc::clone(uploader),
        RuntimeOptions::default(),
    );
    let s = stop.clone();
    (
        tokio::spawn(async move { rt.run(s).await.expect("uploader") }),
        stop,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_is_served_and_announced_once_per_change() {
    let roles = [
        Role::Api,
        Role::Projections,
        Role::Scraper,
        Role::Markdown,
        Role::Renderer,
    ];
    let app = TestApp::with_options(&roles, Options::default()).await;
    // Redeliveries after a crash come quickly in this test.
    let pages_stream = app.js().get_stream("PAGES").await.expect("stream");
    let mut config = pages_stream
        .consumer_info("uploader")
        .await
        .expect("info")
        .config
        .clone();
    config.ack_wait = Duration::from_secs(2);
    pages_stream
        .create_consumer(config)
        .await
        .expect("shorter ack_wait");
    let uploader = Arc::new(
        Uploader::new(
            app.js(),
            app.db().clone(),
            ai_cache::infra::blobs::BlobStore::open(app.js(), 1 << 24)
                .await
                .expect("blobs"),
            None,
        )
        .await
        .expect("uploader"),
    );
    let (_first, stop_first) = spawn_uploader(&app, &uploader);

    let origin = PageOrigin::start().await;
    let client = create_client(&app, "Site", "site.test").await;
    app.crawl_rate(&client, 600).await;
    let paths: Vec<String> = (0..5).map(|i| format!("/doc/{i}")).collect();
    for p in &paths {
        origin.set(
            p,
            Page::html(&article(
                &format!("The text of {p}, long enough to be the main content of the page."),
                "0",
            )),
        );
    }
    origin.set("/sitemap.xml", sitemap(&origin, &paths));

    // An external system follows every client's served-content changes.
    let mut updates = app
        .backbone
        .nats
        .client
        .subscribe("pages.updated.>")
        .await
        .expect("subscribe");
    let (status, body) = app
        .import_sitemap(&json!({"client_id": client, "sitemap_url": origin.url("/sitemap.xml")}))
        .await;
    assert_eq!(
        (status, body["summary"]["created"].as_u64()),
        (200, Some(5)),
        "{body}"
    );
    let mut seen = Vec::new();
    while seen.len() < 5 {
        let msg = tokio::time::timeout(Duration::from_secs(30), updates.next())
            .await
            .expect("an update")
            .expect("open");
        seen.push(msg.subject.to_string());
    }
    let event: serde_json::Value = {
        let stream = app.js().get_stream("PAGES").await.expect("stream");
        let msg = stream
            .get_last_raw_message_by_subject(&seen[0])
            .await
            .expect("stored");
        serde_json::from_slice(&msg.payload).expect("json")
    };
    for field in [
        "url",
        "kv_key",
        "markdown_hash",
        "html_hash",
        "content_fingerprint",
        "page_version",
        "scraped_at",
        "updated_at",
    ] {
        assert!(
            !event["data"][field].is_null(),
            "pages.updated carries {field}: {event}"
        );
    }

    // Every page's key is in the edge store, pointing at its Markdown and HTML.
    let edge = EdgeStore::open(app.js()).await.expect("edge");
    for p in &paths {
        let key = kv_key(&NormalizedUrl::parse(&origin.url(p)).expect("url"));
        let manifest = edge
            .get(&key)
            .await
            .expect("get")
            .unwrap_or_else(|| panic!("{key} is stored"));
        assert_eq!(manifest.source_url, origin.url(p));
    }

    // One page really changes, another is fetched again unchanged: exactly one more update.
    origin.set(
        &paths[0],
        Page::html(&article(
            "Entirely new text for the first document, long enough to matter.",
            "1",
        )),
    );
    let ids: Vec<String> = {
        let (_, list) = send(app.master(
            Method::GET,
            &format!("/api/v1/sitemap/client/{client}/pages"),
        ))
        .await;
        paths
            .iter()
            .map(|p| {
                list["pages"]
                    .as_array()
                    .expect("pages")
                    .iter()
                    .find(|x| x["url"] == origin.url(p))
                    .expect("page")["id"]
                    .as_str()
                    .expect("id")
                    .to_owned()
            })
            .collect()
    };
    for id in &ids[..2] {
        app.refresh_page(&id).await;
    }
    let msg = tokio::time::timeout(Duration::from_secs(30), updates.next())
        .await
        .expect("the change is announced")
        .expect("open");
    assert!(msg.subject.ends_with(&ids[0]), "{}", msg.subject);
    eventually(
        Duration::from_secs(15),
        "the unchanged page was fetched again",
        || async {
            send(app.master(Method::GET, &format!("/api/v1/pages/{}", ids[1])))
                .await
                .1["status"]
                == "unchanged"
        },
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), updates.next())
            .await
            .is_err(),
        "no update for unchanged content"
    );

    // The uploader dies mid-batch; another takes over; nothing is announced twice or lost.
    let more: Vec<String> = (5..25).map(|i| format!("/doc/{i}")).collect();
    let urls = origin.articles(&more);
    app.add_urls(&client, &urls).await;
    let _ = tokio::time::timeout(Duration::from_secs(30), updates.next())
        .await
        .expect("uploads under way");
    stop_first.cancel();
    _first.abort();
    let (_second, stop_second) = spawn_uploader(&app, &uploader);
    eventually(
        Duration::from_secs(60),
        "every page is announced",
        || async { stream_count(app.js(), "PAGES", Some("pages.updated.>")).await >= 26 },
    )
    .await;
    // Nothing more happens: every upload is acked, so no redelivery can announce a page again.
    app.drained("PAGES", &["uploader"]).await;
    stop_second.cancel();
    assert_eq!(
        stream_count(app.js(), "PAGES", Some("pages.updated.>")).await,
        26,
        "5 + 1 change + 20, each once"
    );
    for p in paths.iter().chain(&more) {
        let key = kv_key(&NormalizedUrl::parse(&origin.url(p)).expect("url"));
        assert!(
            edge.get(&key).await.expect("get").is_some(),
            "{key} is in the store"
        );
    }
}
