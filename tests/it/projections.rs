//! The projection runtime: exactly-once application, rebuild equality, bad events set aside.

use ai_cache::app::Role;
use ai_cache::domain::content::{BlobRef, ContentHash};
use ai_cache::domain::ids::ClientId;
use ai_cache::domain::url::NormalizedUrl;
use ai_cache::events::Event;
use ai_cache::events::clients::{
    ClientDeleted, ClientEvent, ClientSettings, ClientState, ClientUpdated,
};
use ai_cache::events::pages::*;
use ai_cache::events::visits::{
    BatchedVisit, FormatServed, Verification, VisitEvent, VisitRecorded, VisitorType, VisitsBatch,
};
use ai_cache::infra::publish::{Outgoing, Publisher};
use ai_cache::projections::{self, runtime, verify};
use serde_json::Value;
use std::sync::Arc;

use crate::harness::TestApp;

pub fn discovered(client: ClientId, url: &str) -> Event<PageEvent> {
    let url = NormalizedUrl::parse(url).expect("url");
    Discovered::bare(url, DiscoverySource::Manual).into_event(client)
}

async fn count(app: &TestApp, table: &str) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
        .fetch_one(app.db())
        .await
        .expect("count")
}

#[tokio::test]
async fn an_event_published_twice_with_the_same_id_is_projected_once() {
    let app = TestApp::with_roles(&[Role::Projections]).await;
    let publisher = Publisher::new(app.js().clone());
    let client = ClientId::new_random();
    let event = discovered(client, "https://example.com/a");
    let page = event.meta.page_id.expect("page");
    let out = Outgoing::keyed(event.clone(), format!("discover:{page}"));

    let first = publisher.publish(&out).await.expect("publish");
    let second = publisher.publish(&out).await.expect("publish again");
    assert!(!first.duplicate);
    assert!(
        second.duplicate,
        "the server must drop the repeated Nats-Msg-Id"
    );
    assert_eq!(second.sequence, first.sequence);
    // The same URL discovered again under another id (outside the duplicate window, say).
    let again = publisher
        .publish(&Outgoing::unique(discovered(
            client,
            "HTTPS://EXAMPLE.com/a#x",
        )))
        .await
        .expect("publish");

    app.wait_for_checkpoint("pages", again.sequence).await;
    assert_eq!(count(&app, "pages").await, 1);
    let (id, url): (uuid::Uuid, String) = sqlx::query_as("SELECT id, url FROM pages")
        .fetch_one(app.db())
        .await
        .expect("row");
    assert_eq!(id, page.as_uuid());
    assert_eq!(url, "https://example.com/a");
}

#[tokio::test]
async fn an_undecodable_event_is_set_aside_and_the_projection_moves_on() {
    let app = TestApp::with_roles(&[Role::Projections]).await;
    let bad = app
        .js()
        .publish(
            "pages.discovered.not-a-client.not-a-page",
            "{this is not json".into(),
        )
        .await
        .expect("publish")
        .await
        .expect("ack");
    let publisher = Publisher::new(app.js().clone());
    let good = publisher
        .publish(&Outgoing::unique(discovered(
            ClientId::new_random(),
            "https://example.com/b",
        )))
        .await
        .expect("publish");

    app.wait_for_checkpoint("pages", good.sequence).await;
    assert_eq!(count(&app, "pages").await, 1);
    let failures: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, error FROM projection_failures WHERE projection = 'pages'")
            .fetch_all(app.db())
            .await
            .expect("failures");
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].0, bad.sequence as i64);
    assert!(
        failures[0].1.contains("malformed event json"),
        "{}",
        failures[0].1
    );
}

/// Publishes a realistic history: clients registered, updated and deleted; pages through
/// every pipeline step; visits in both schema versions.
async fn publish_history(app: &TestApp) {
    let publisher = Publisher::new(app.js().clone());
    let state = |name: &str, domain: &str| ClientState {
        name: name.into(),
        domain: domain.into(),
        cloudflare_account_id: Some("acct".into()),
        cloudflare_api_token_encrypted: Some("gAAAAAB-token".into()),
        cloudflare_kv_namespace_id: Some("ns".into()),
        gemini_api_key_encrypted: None,
        is_active: true,
        settings: ClientSettings::default(),
    };
    let (a, b) = (ClientId::new_random(), ClientId::new_random());
    let mut clients = vec![
        Event::new(a, None, ClientEvent::Registered(state("A", "a.example"))),
        Event::new(b, None, ClientEvent::Registered(state("B", "b.example"))),
    ];
    let mut updated = state("A renamed", "a.example");
    updated.is_active = false;
    clients.push(Event::new(
        a,
        None,
        ClientEvent::Updated(ClientUpdated {
            state: updated,
            changed: vec!["name".into(), "is_active".into()],
        }),
    ));
    clients.push(Event::new(
        b,
        None,
        ClientEvent::Deleted(ClientDeleted {
            domain: "b.example".into(),
        }),
    ));
    publisher
        .publish_all(
            &clients
                .into_iter()
                .map(Outgoing::unique)
                .collect::<Vec<_>>(),
        )
        .await
        .expect("clients");

    let mut pages = Vec::new();
    for i in 0..20 {
        let d = discovered(a, &format!("https://a.example/p/{i}"));
        let url = NormalizedUrl::parse(&format!("https://a.example/p/{i}")).expect("url");
        let raw = BlobRef::of(format!("<html>{i}</html>").as_bytes());
        let fp = ContentHash::of(format!("main {i}").as_bytes());
        let md = BlobRef::of(format!("# {i}").as_bytes());
        let html = BlobRef::of(format!("<h1>{i}</h1>").as_bytes());
        let steps = vec![
            PageEvent::Scraped(Scraped {
                url: url.clone(),
                http_status: 200,
                raw: raw.clone(),
                content_type: "text/html".into(),
                etag: Some(format!("\"{i}\"")),
                last_modified: None,
                fingerprint: fp.clone(),
                fetched_at: d.meta.occurred_at,
                duration_ms: 12,
            }),
            PageEvent::ContentChanged(ContentChanged {
                url: url.clone(),
                raw: raw.clone(),
                fingerprint: fp.clone(),
                previous_fingerprint: None,
                page_version: 1,
                reprocess: None,
                extracted: None,
            }),
            PageEvent::MarkdownGenerated(MarkdownGenerated {
                markdown_tokens: None,
                markdown: md.clone(),
                input_hash: raw.hash.clone(),
                generator: GeneratorKind::Local,
                generator_version: "1".into(),
                model: None,
                fallback_reason: None,
                tokens: None,
                metadata: PageMetadata {
                    title: Some(format!("Page {i}")),
                    ..Default::default()
                },
                page_version: 1,
                reprocess: None,
            }),
            PageEvent::HtmlRendered(HtmlRendered {
                html: html.clone(),
                markdown_hash: md.hash.clone(),
                renderer_version: "1".into(),
                page_version: 1,
                reprocess: None,
            }),
            PageEvent::KvUploaded(KvUploaded {
                store: EdgeStore::Builtin,
                kv_key: format!("https/a-example/p/{i}"),
                markdown_hash: md.hash.clone(),
                html_hash: html.hash.clone(),
                page_version: 1,
            }),
            PageEvent::Updated(Updated {
                url: url.clone(),
                kv_key: format!("https/a-example/p/{i}"),
                markdown_hash: md.hash,
                html_hash: html.hash,
                content_fingerprint: fp,
                page_version: 1,
                scraped_at: d.meta.occurred_at,
                updated_at: d.meta.occurred_at,
            }),
        ];
        let mut prev = d.clone();
        pages.push(d);
        for step in steps {
            let e = Event::caused_by(&prev, step);
            prev = e.clone();
            pages.push(e);
        }
        if i % 5 == 0 {
            pages.push(Event::caused_by(
                &prev,
                PageEvent::ScrapeFailed(ScrapeFailed {
                    failure: ScrapeFailure::RobotsDisallowed,
                    message: "disallowed".into(),
                    http_status: None,
                    retry_after_secs: None,
                    attempt: 1,
                }),
            ));
        }
        if i % 7 == 0 {
            pages.push(Event::caused_by(
                &prev,
                PageEvent::Removed(Removed {
                    http_status: Some(404),
                    reason: "gone".into(),
                }),
            ));
        }
    }
    publisher
        .publish_all(&pages.into_iter().map(Outgoing::unique).collect::<Vec<_>>())
        .await
        .expect("pages");

    let visits: Vec<_> = (0..10)
        .map(|i| {
            Outgoing::unique(Event::new(
                a,
                None,
                VisitEvent::Recorded(VisitRecorded {
                    charged_price: None,
                    signature_agent: None,
                    robots: None,
                    url: format!("https://a.example/p/{i}"),
                    visitor_type: if i % 2 == 0 {
                        VisitorType::AiBot
                    } else {
                        VisitorType::Human
                    },
                    bot_name: (i % 2 == 0).then(|| "GPTBot".to_owned()),
                    operator: (i % 2 == 0).then(|| "OpenAI".to_owned()),
                    category: None,
                    verification: Verification::Claimed,
                    user_agent: Some("UA".into()),
                    referrer: None,
                    ip_hash: Some("h".into()),
                    format_served: FormatServed::Markdown,
                    status: Some(200),
                    bytes: Some(1234),
                    visited_at: ai_cache::events::envelope::now(),
                }),
            ))
        })
        .collect();
    publisher.publish_all(&visits).await.expect("visits");
    // Visits as this version publishes them: in batches, a visit sent in two batches.
    let claude = VisitRecorded {
        charged_price: None,
        signature_agent: None,
        robots: None,
        url: String::new(),
        visitor_type: VisitorType::AiBot,
        bot_name: Some("ClaudeBot".into()),
        operator: Some("Anthropic".into()),
        category: Some("training".into()),
        verification: Verification::IpVerified,
        user_agent: Some("ClaudeBot/1.0".into()),
        referrer: None,
        ip_hash: None,
        format_served: FormatServed::Html,
        status: Some(200),
        bytes: None,
        visited_at: ai_cache::events::envelope::now(),
    };
    let batched = |ids: &[u128]| visits_batch(a, ids, "https://a.example/b/", &claude);
    publisher
        .publish_all(&[batched(&[1, 2, 3]), batched(&[3, 4])])
        .await
        .expect("visit batches");
    // A visit in the original system's shape (schema v1), as an import would write it.
    let v1 = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/events/visits.recorded.v1.json"),
    )
    .expect("fixture");
    app.js()
        .publish(format!("visits.recorded.{a}"), v1.into())
        .await
        .expect("publish")
        .await
        .expect("ack");
}

async fn dump(app: &TestApp, table: &str) -> Value {
    let sql = format!("SELECT coalesce(json_agg(t ORDER BY t.id), '[]'::json) FROM {table} t");
    sqlx::query_scalar::<_, Value>(sqlx::AssertSqlSafe(sql))
        .fetch_one(app.db())
        .await
        .expect("dump")
}

#[tokio::test]
async fn a_projection_rebuilt_from_the_streams_equals_the_live_one() {
    let app = TestApp::with_roles(&[Role::Projections]).await;
    publish_history(&app).await;
    let ends = [
        ("clients", app.last_seq("CLIENTS").await),
        ("pages", app.last_seq("PAGES").await),
        ("visits", app.last_seq("VISITS").await),
    ];
    for (name, end) in ends {
        app.wait_for_checkpoint(name, end).await;
    }
    let live: Vec<Value> =
        futures::future::join_all(["clients", "pages", "visits"].map(|t| dump(&app, t))).await;
    assert_eq!(live[0].as_array().map(Vec::len), Some(1), "B was deleted");
    assert_eq!(live[1].as_array().map(Vec::len), Some(20));
    assert_eq!(
        live[2].as_array().map(Vec::len),
        Some(15),
        "11 single visits, and 4 distinct ones in two batches"
    );
    assert_eq!(count(&app, "projection_failures").await, 0);

    // Rebuild every projection while the live runners keep running beside the rebuild.
    for projection in projections::all() {
        let name = projection.name();
        let end = runtime::rebuild(app.db(), app.js(), projection, &|_, _| {})
            .await
            .expect("rebuild");
        assert_eq!(
            end,
            ends.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, e)| *e)
                .expect("end")
        );
    }
    for (name, end) in ends {
        app.wait_for_checkpoint(name, end).await;
    }
    let rebuilt: Vec<Value> =
        futures::future::join_all(["clients", "pages", "visits"].map(|t| dump(&app, t))).await;
    assert_eq!(rebuilt, live);
}

#[tokio::test]
async fn a_verified_rebuild_compares_with_the_live_rows_without_touching_them() {
    let app = TestApp::with_roles(&[Role::Projections]).await;
    publish_history(&app).await;
    for (name, stream) in [
        ("clients", "CLIENTS"),
        ("pages", "PAGES"),
        ("visits", "VISITS"),
    ] {
        app.wait_for_checkpoint(name, app.last_seq(stream).await)
            .await;
    }
    let live: Vec<Value> =
        futures::future::join_all(["clients", "pages", "visits"].map(|t| dump(&app, t))).await;
    for projection in projections::all() {
        let report = verify::verify(app.db(), app.js(), projection, &|_, _| {})
            .await
            .expect("verify");
        assert!(report.equal(), "{report:?}");
        assert!(report.tables.iter().any(|t| t.rows > 0), "{report:?}");
    }

    // A live row that the streams do not justify is found, on both sides of the comparison.
    sqlx::query("UPDATE pages SET title = 'edited by hand' WHERE id = (SELECT id FROM pages ORDER BY id LIMIT 1)")
        .execute(app.db())
        .await
        .expect("tamper");
    let pages = projections::all()
        .into_iter()
        .find(|p| p.name() == "pages")
        .expect("pages");
    let report = verify::verify(app.db(), app.js(), Arc::clone(&pages), &|_, _| {})
        .await
        .expect("verify");
    assert!(!report.equal());
    assert_eq!(
        (report.tables[0].only_live, report.tables[0].only_rebuilt),
        (1, 1),
        "{report:?}"
    );
    let tampered = dump(&app, "pages").await;
    assert_ne!(tampered, live[1]);

    // Verifying left the live rows as they were and no scratch schema behind; an in-place
    // rebuild repairs the row.
    let scratch: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.schemata WHERE schema_name LIKE 'aicache_verify_%'",
    )
    .fetch_one(app.db())
    .await
    .expect("schemata");
    assert_eq!(scratch, 0);
    runtime::rebuild(app.db(), app.js(), Arc::clone(&pages), &|_, _| {})
        .await
        .expect("rebuild");
    assert_eq!(dump(&app, "pages").await, live[1]);
    let report = verify::verify(app.db(), app.js(), pages, &|_, _| {})
        .await
        .expect("verify");
    assert!(report.equal(), "{report:?}");
}

/// Publishes `events`, projects them in batches (a rebuild) and then one at a time, checks
/// both give the same `pages` rows and returns them.
async fn pages_batched_and_one_by_one(app: &TestApp, events: Vec<Event<PageEvent>>) -> Value {
    Publisher::new(app.js().clone())
        .publish_all(&events.into_iter().map(Outgoing::unique).collect::<Vec<_>>())
        .await
        .expect("publish");

    let pages: Arc<dyn projections::Projection> = Arc::new(projections::pages::PagesProjection);
    runtime::rebuild(app.db(), app.js(), Arc::clone(&pages), &|_, _| {})
        .await
        .expect("rebuild in batches");
    let batched = dump(app, "pages").await;
    runtime::reset(app.db(), pages.as_ref())
        .await
        .expect("reset");
    runtime::ProjectionRunner::new(pages, app.db().clone(), app.js().clone())
        .with_batch(1)
        .catch_up(&|_, _| {})
        .await
        .expect("one at a time");
    assert_eq!(batched, dump(app, "pages").await, "batched ≠ one at a time");
    batched
}

/// Events that reach the runner while it applies a batch are applied together in its next
/// batch. The server counts them as delivered, not pending: a runner that took more only
/// while the server said some were pending applied such a backlog an event at a time.
#[tokio::test]
async fn events_received_while_a_batch_is_applied_go_together_in_the_next_batch() {
    use futures::TryStreamExt;
    use std::time::Duration;
    let app = TestApp::with_roles(&[]).await;
    let client = ClientId::new_random();
    let pages: Arc<dyn projections::Projection> = Arc::new(projections::pages::PagesProjection);
    let runner = Arc::new(runtime::ProjectionRunner::new(
        pages,
        app.db().clone(),
        app.js().clone(),
    ));
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn({
        let (runner, stop) = (Arc::clone(&runner), stop.clone());
        async move { runner.run(stop).await }
    });
    let checkpoint = "SELECT last_seq FROM projection_checkpoints WHERE name = 'pages'";
    crate::harness::eventually(
        Duration::from_secs(10),
        "the runner has a checkpoint",
        || async {
            sqlx::query_scalar::<_, i64>(checkpoint)
                .fetch_optional(app.db())
                .await
                .expect("checkpoint")
                .is_some()
        },
    )
    .await;
    // The runner's first batch waits for the checkpoint's lock, held here.
    let mut holder = app.db().begin().await.expect("begin");
    sqlx::query(sqlx::AssertSqlSafe(format!("{checkpoint} FOR UPDATE")))
        .execute(&mut *holder)
        .await
        .expect("lock");
    let publisher = Publisher::new(app.js().clone());
    let page =
        |n: usize| Outgoing::unique(discovered(client, &format!("https://held.example/{n}")));
    publisher.publish(&page(0)).await.expect("publish");
    crate::harness::eventually(
        Duration::from_secs(10),
        "the runner waits for the lock",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            )
            .fetch_one(app.db())
            .await
            .expect("activity")
                == 1
        },
    )
    .await;
    let mut last = 0;
    for n in 1..=40 {
        last = publisher.publish(&page(n)).await.expect("publish").sequence;
    }
    crate::harness::eventually(
        Duration::from_secs(10),
        "the server delivered all 41",
        || async {
            let stream = app.js().get_stream("PAGES").await.expect("stream");
            let consumers: Vec<_> = stream.consumers().try_collect().await.expect("consumers");
            consumers
                .iter()
                .any(|c| c.delivered.stream_sequence == last)
        },
    )
    .await;
    holder.rollback().await.expect("unlock");
    let mut position = runner.position();
    tokio::time::timeout(Duration::from_secs(30), position.wait_for(|p| *p == last))
        .await
        .expect("all applied in time")
        .expect("position");
    assert_eq!(
        runner.batches_applied(),
        2,
        "the first event, then the 40 received meanwhile together"
    );
    assert_eq!(count(&app, "pages").await, 41);
    stop.cancel();
    task.await.expect("runner").expect("runner ends");
}

#[tokio::test]
async fn discoveries_applied_as_one_batch_give_the_rows_of_one_event_at_a_time() {
    let app = TestApp::with_roles(&[]).await;
    let client = ClientId::new_random();
    let seen_again = |url: &str, lastmod: &str| {
        let url = NormalizedUrl::parse(url).expect("url");
        Discovered {
            lastmod: Some(lastmod.into()),
            changefreq: Some("daily".into()),
            ..Discovered::bare(url, DiscoverySource::Sitemap)
        }
        .into_event(client)
    };
    // Runs of discoveries, a page discovered twice within a run (the second one adds
    // metadata), and another event of a page between its discoveries.
    let mut events: Vec<Event<PageEvent>> = (0..30)
        .map(|i| discovered(client, &format!("https://batch.example/p/{i}")))
        .collect();
    events.push(seen_again("https://batch.example/p/3", "2026-11-01"));
    events.push(seen_again("https://batch.example/p/3", "2026-11-02"));
    let scraped_page = events[7].clone();
    events.push(Event::caused_by(
        &scraped_page,
        PageEvent::RefreshRequested(RefreshRequested {
            reason: RefreshReason::Manual,
            reprocess: None,
        }),
    ));
    events.push(seen_again("https://batch.example/p/7", "2026-11-03"));
    events.extend((30..40).map(|i| discovered(client, &format!("https://batch.example/p/{i}"))));
    let batched = pages_batched_and_one_by_one(&app, events).await;
    let rows = batched.as_array().expect("rows");
    assert_eq!(rows.len(), 40);
    let page = |n: &str| {
        rows.iter()
            .find(|r| r["url"] == format!("https://batch.example/p/{n}"))
            .expect("page")
    };
    assert_eq!(
        page("3")["lastmod"],
        "2026-11-02",
        "the later discovery wins"
    );
    assert_eq!(page("7")["lastmod"], "2026-11-03");
    assert!(page("7")["last_refresh_requested_at"].is_string());
    assert_eq!(count(&app, "projection_failures").await, 0);
}

/// Each page's events interleaved with the other pages' (as stages publish them), some of
/// them order-sensitive: a late Markdown of an older version, a failure between two fetches,
/// a removal last. Applied in rounds (one statement per kind of event) they give the rows of
/// one event at a time.
#[tokio::test]
async fn page_events_applied_in_rounds_give_the_rows_of_one_event_at_a_time() {
    let app = TestApp::with_roles(&[]).await;
    let client = ClientId::new_random();
    let mut per_page: Vec<Vec<Event<PageEvent>>> = Vec::new();
    for i in 0..12 {
        let d = discovered(client, &format!("https://rounds.example/p/{i}"));
        let url = NormalizedUrl::parse(&format!("https://rounds.example/p/{i}")).expect("url");
        let raw = |v: u32| BlobRef::of(format!("<html>{i} v{v}</html>").as_bytes());
        let md = |v: u32| BlobRef::of(format!("# {i} v{v}").as_bytes());
        let scraped = |v: u32| {
            PageEvent::Scraped(Scraped {
                url: url.clone(),
                http_status: 200,
                raw: raw(v),
                content_type: "text/html".into(),
                etag: Some(format!("\"{i}-{v}\"")),
                last_modified: None,
                fingerprint: ContentHash::of(format!("main {i} v{v}").as_bytes()),
                fetched_at: d.meta.occurred_at,
                duration_ms: u64::from(v),
            })
        };
        let changed = |v: u32| {
            PageEvent::ContentChanged(ContentChanged {
                url: url.clone(),
                raw: raw(v),
                fingerprint: ContentHash::of(format!("main {i} v{v}").as_bytes()),
                previous_fingerprint: None,
                page_version: v,
                reprocess: None,
                extracted: None,
            })
        };
        let markdown = |v: u32| {
            PageEvent::MarkdownGenerated(MarkdownGenerated {
                markdown_tokens: None,
                markdown: md(v),
                input_hash: raw(v).hash,
                generator: GeneratorKind::Local,
                generator_version: "1".into(),
                model: None,
                fallback_reason: None,
                tokens: None,
                metadata: PageMetadata {
                    title: Some(format!("Page {i} v{v}")),
                    ..Default::default()
                },
                page_version: v,
                reprocess: None,
            })
        };
        let mut steps = vec![
            scraped(1),
            changed(1),
            PageEvent::ScrapeFailed(ScrapeFailed {
                failure: ScrapeFailure::Transient,
                message: "slow".into(),
                http_status: None,
                retry_after_secs: None,
                attempt: 1,
            }),
            scraped(2),
            changed(2),
            markdown(2),
            // A stage that ran late on the first version: changes nothing.
            markdown(1),
            PageEvent::HtmlRendered(HtmlRendered {
                html: BlobRef::of(format!("<h1>{i}</h1>").as_bytes()),
                markdown_hash: md(2).hash,
                renderer_version: "1".into(),
                page_version: 2,
                reprocess: None,
            }),
        ];
        if i % 3 == 0 {
            steps.push(PageEvent::Removed(Removed {
                http_status: Some(410),
                reason: "gone".into(),
            }));
        }
        let mut events = vec![d.clone()];
        for step in steps {
            let e = Event::caused_by(events.last().expect("event"), step);
            events.push(e);
        }
        per_page.push(events);
    }
    // Round robin: page 0's first event, page 1's first, ..., page 0's second...
    let mut events = Vec::new();
    let longest = per_page.iter().map(Vec::len).max().unwrap_or(0);
    for n in 0..longest {
        for page in &per_page {
            if let Some(e) = page.get(n) {
                events.push(e.clone());
            }
        }
    }
    let batched = pages_batched_and_one_by_one(&app, events).await;
    let rows = batched.as_array().expect("rows");
    assert_eq!(rows.len(), 12);
    for row in rows {
        let url = row["url"].as_str().expect("url");
        let i: u32 = url.rsplit('/').next().expect("n").parse().expect("n");
        assert_eq!(row["title"], format!("Page {i} v2"), "{row}");
        assert_eq!(row["version"], 2, "{row}");
        assert_eq!(row["last_fetch_ms"], 2, "{row}");
        let (status, stage) = if i.is_multiple_of(3) {
            ("removed", "removed")
        } else {
            ("changed", "rendered")
        };
        assert_eq!(
            (row["status"].as_str(), row["stage"].as_str()),
            (Some(status), Some(stage)),
            "{row}"
        );
    }
    assert_eq!(count(&app, "projection_failures").await, 0);
}

/// A batch event of visits `ids` of client `a`: visit `n` is `visit` at `{url_prefix}{n}`.
fn visits_batch(
    a: ClientId,
    ids: &[u128],
    url_prefix: &str,
    visit: &VisitRecorded,
) -> Outgoing<VisitEvent> {
    let visits = ids
        .iter()
        .map(|&n| {
            let url = format!("{url_prefix}{n}");
            BatchedVisit {
                id: uuid::Uuid::from_u128(n),
                page_id: ai_cache::domain::ids::PageId::derive(
                    a,
                    &NormalizedUrl::parse(&url).expect("url"),
                ),
                visit: VisitRecorded {
                    url,
                    ..visit.clone()
                },
            }
        })
        .collect();
    Outgoing::unique(Event::new(
        a,
        None,
        VisitEvent::BatchRecorded(VisitsBatch { visits }),
    ))
}

/// Large batches of visits are applied on two connections at once (rows split by id): the
/// rows are those of one event at a time, a visit sent in two events (in another order)
/// counts once, and an event PostgreSQL refuses (a NUL byte) is set aside on its own.
#[tokio::test]
async fn visit_batches_applied_on_two_connections_give_the_rows_of_one_event_at_a_time() {
    let app = TestApp::with_roles(&[]).await;
    let a = ClientId::new_random();
    let agent = format!("Mozilla/5.0 (compatible; GPTBot/1.2; {})", "x".repeat(200));
    let first: Vec<u128> = (1..=1000).collect();
    // The second event repeats 300 visits of the first, last first, among new ones.
    let second: Vec<u128> = (701..=1000).rev().chain(1001..=1700).collect();
    let third: Vec<u128> = (2001..=3000).collect();
    let refused: Vec<u128> = (5001..=5010).collect();
    let gptbot = |user_agent: &str| VisitRecorded {
        charged_price: None,
        signature_agent: None,
        robots: None,
        url: String::new(),
        visitor_type: VisitorType::AiBot,
        bot_name: Some("GPTBot".into()),
        operator: Some("OpenAI".into()),
        category: Some("training".into()),
        verification: Verification::Claimed,
        user_agent: Some(user_agent.to_owned()),
        referrer: None,
        ip_hash: Some("h".into()),
        format_served: FormatServed::Markdown,
        status: Some(200),
        bytes: Some(4096),
        visited_at: ai_cache::events::envelope::now(),
    };
    let (good, bad) = (gptbot(&agent), gptbot("bad\0agent"));
    let batch = |ids: &[u128], visit| visits_batch(a, ids, "https://two.example/p/", visit);
    let publisher = Publisher::new(app.js().clone());
    let mut published = Vec::new();
    for event in [
        batch(&first, &good),
        batch(&refused, &bad),
        batch(&second, &good),
        batch(&third, &good),
    ] {
        published.push(publisher.publish(&event).await.expect("publish"));
    }
    let bytes = app
        .js()
        .get_stream("VISITS")
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .bytes;
    assert!(
        bytes >= 2 * runtime::TWO_CONNECTIONS_MIN_BYTES as u64,
        "{bytes} bytes: too few to be applied on two connections"
    );

    let visits: Arc<dyn projections::Projection> = Arc::new(projections::visits::VisitsProjection);
    let runner =
        runtime::ProjectionRunner::new(Arc::clone(&visits), app.db().clone(), app.js().clone())
            .with_batch(2);
    runner.catch_up(&|_, _| {}).await.expect("two batches");
    // The first batch holds the refused event: applied again one event at a time; the
    // second goes on two connections.
    assert_eq!(
        runner.batches_on_two(),
        1,
        "a batch went on two connections"
    );
    let on_two = dump(&app, "visits").await;
    let failures = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT seq FROM projection_failures WHERE projection = 'visits' ORDER BY seq",
        )
        .fetch_all(app.db())
        .await
        .expect("failures")
    };
    assert_eq!(failures().await, vec![published[1].sequence as i64]);
    let rows = on_two.as_array().expect("rows");
    assert_eq!(
        rows.len(),
        2700,
        "1,000 + 700 new + 1,000, the refused 10 out"
    );
    let ids: std::collections::HashSet<&str> =
        rows.iter().filter_map(|r| r["id"].as_str()).collect();
    assert_eq!(ids.len(), 2700);

    runtime::reset(app.db(), visits.as_ref())
        .await
        .expect("reset");
    runtime::ProjectionRunner::new(visits, app.db().clone(), app.js().clone())
        .with_batch(1)
        .catch_up(&|_, _| {})
        .await
        .expect("one at a time");
    assert_eq!(
        on_two,
        dump(&app, "visits").await,
        "two connections ≠ one at a time"
    );
    assert_eq!(failures().await, vec![published[1].sequence as i64]);
}
