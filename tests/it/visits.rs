//! Visit ingestion and analytics: classification and verification of real user agents, the
//! IP replaced by its HMAC, retried batches counted once, nothing lost when the projection
//! lags or PostgreSQL restarts, and the stats a site owner reads.

use std::time::Duration;

use ai_cache::app::Role;
use reqwest::Method;
use serde_json::{Value, json};

use crate::clients::{create_client, create_key, send};
use crate::harness::{Options, TestApp, eventually, stream_count};

const GPTBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)";
const CHATGPT_USER: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko); compatible; ChatGPT-User/1.0; +https://openai.com/bot";
const CLAUDEBOT: &str = "Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; ClaudeBot/1.0; +claudebot@anthropic.com)";
const GOOGLEBOT: &str = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)";
const FIREFOX: &str = "Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0";

/// Ranges published for GPTBot (by bot) and OpenAI (by operator), in both formats.
fn ranges_dir() -> std::path::PathBuf {
    let dir = tempfile::tempdir().expect("tmp").keep();
    std::fs::write(
        dir.join("gptbot.json"),
        r#"{"prefixes":[{"ipv4Prefix":"20.171.206.0/24"}]}"#,
    )
    .expect("write");
    std::fs::write(dir.join("openai.txt"), "23.98.142.176/28\n").expect("write");
    dir
}

fn visit(url: &str, ua: &str, ip: &str, at: &str) -> Value {
    json!({"url": url, "user_agent": ua, "ip": ip, "referrer": null, "timestamp": at,
           "format_served": "markdown", "status": 200})
}

async fn app_with(roles: &[Role], options: Options) -> (TestApp, String, String) {
    let app = TestApp::with_options(roles, options).await;
    let client = create_client(&app, "Site", "site.test").await;
    let (_, key) = create_key(&app, &client, &["ingest"]).await;
    (app, client, key)
}

async fn post_batch(app: &TestApp, key: &str, visits: &[Value]) -> (u16, Value) {
    send(
        app.request(Method::POST, "/api/v1/visits/batch")
            .header("X-API-Key", key)
            .json(&json!({ "visits": visits })),
    )
    .await
}

/// The groups of a stats answer: (key, visits).
fn groups(stats: &Value) -> Vec<(String, i64)> {
    stats["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .map(|g| {
            (
                g["key"].as_str().expect("key").to_owned(),
                g["visits"].as_i64().expect("n"),
            )
        })
        .collect()
}

async fn visit_rows(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM visits")
        .fetch_one(app.db())
        .await
        .unwrap_or(-1)
}

async fn wait_for_rows(app: &TestApp, n: i64) {
    eventually(Duration::from_secs(30), "visits projected", || async {
        visit_rows(app).await == n
    })
    .await;
}

#[tokio::test]
async fn a_batch_is_classified_verified_hashed_and_counted_once_however_often_it_is_sent() {
    let options = Options {
        bot_ranges_dir: Some(ranges_dir()),
        ..Options::default()
    };
    let (app, client, key) = app_with(&[Role::Api, Role::Projections], options).await;
    let at = "2026-11-20T10:00:00Z";
    let batch = vec![
        visit("https://site.test/a", GPTBOT, "20.171.206.9", at),
        visit("https://site.test/a", CHATGPT_USER, "198.51.100.4", at),
        visit("https://site.test/b", CHATGPT_USER, "23.98.142.180", at),
        visit("https://site.test/b", CLAUDEBOT, "198.51.100.5", at),
        visit("https://site.test/a", GOOGLEBOT, "66.249.66.1", at),
        visit("https://site.test/a", FIREFOX, "192.0.2.33", at),
        json!({"url": "https://site.test/w", "user_agent": FIREFOX, "ip": "192.0.2.34",
               "timestamp": at, "cf_worker": "other-zone.example"}),
        // Refused: another site, a bad address, a far-future time, another client's id.
        visit("https://elsewhere.example/", GPTBOT, "20.171.206.9", at),
        visit("https://site.test/c", GPTBOT, "not-an-ip", at),
        visit(
            "https://site.test/c",
            GPTBOT,
            "20.171.206.9",
            "2999-01-01T00:00:00Z",
        ),
        json!({"url": "https://site.test/d", "timestamp": at, "client_id": uuid::Uuid::new_v4()}),
    ];
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 7, "{body}");
    assert_eq!(body["duplicates"], 0);
    let rejected: Vec<(u64, &str)> = body["rejected"]
        .as_array()
        .expect("rejected")
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().expect("index"),
                r["code"].as_str().expect("code"),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (7, "off_domain"),
            (8, "invalid_ip"),
            (9, "invalid_timestamp"),
            (10, "forbidden_client")
        ]
    );
    wait_for_rows(&app, 7).await;

    // Sending the same batch again (the Worker retrying) stores nothing new.
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(7))
    );
    // Nothing more happens: the stream kept the one event carrying the 7 visits, and the
    // projection has applied it.
    assert_eq!(stream_count(app.js(), "VISITS", None).await, 1);
    app.caught_up("visits", "VISITS").await;
    assert_eq!(visit_rows(&app).await, 7);

    type Row = (String, String, Option<String>, String, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT url, visitor_type, bot_name, verification, ip_hash
           FROM visits ORDER BY url, visitor_type, bot_name",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let summary: Vec<(&str, &str, Option<&str>, &str)> = rows
        .iter()
        .map(|r| (r.0.as_str(), r.1.as_str(), r.2.as_deref(), r.3.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (
                "https://site.test/a",
                "ai_bot",
                Some("ChatGPT-User"),
                "ip_mismatch"
            ),
            (
                "https://site.test/a",
                "ai_bot",
                Some("GPTBot"),
                "ip_verified"
            ),
            ("https://site.test/a", "human", None, "none"),
            (
                "https://site.test/a",
                "search_bot",
                Some("Googlebot"),
                "claimed"
            ),
            (
                "https://site.test/b",
                "ai_bot",
                Some("ChatGPT-User"),
                "ip_verified"
            ),
            (
                "https://site.test/b",
                "ai_bot",
                Some("ClaudeBot"),
                "claimed"
            ),
            ("https://site.test/w", "worker_proxy", None, "none"),
        ]
    );
    // Never the raw address: a 64-hex HMAC, the same for the same address.
    let dump: String = sqlx::query_scalar("SELECT json_agg(v)::text FROM visits v")
        .fetch_one(app.db())
        .await
        .expect("dump");
    for ip in ["20.171.206.9", "198.51.100.4", "66.249.66.1", "192.0.2.33"] {
        assert!(!dump.contains(ip), "{ip} stored raw");
    }
    assert!(
        rows.iter()
            .all(|r| r.4.as_ref().is_some_and(|h| h.len() == 64))
    );

    // The master key names the client; a key of this client cannot report for another.
    let (status, body) = app
        .post_visit(&json!({"url": "https://site.test/m", "user_agent": GPTBOT, "timestamp": at}))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("client_id_required")),
        "{body}"
    );
    let (status, body) = app.post_visit(&json!({"client_id": client, "url": "https://site.test/m", "user_agent": GPTBOT, "timestamp": at})).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (202, Some(1)),
        "{body}"
    );
    wait_for_rows(&app, 8).await;
}

#[tokio::test]
async fn ingestion_refuses_what_it_cannot_take_with_clear_errors() {
    let (app, client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    let (_, read_key) = create_key(&app, &client, &["read"]).await;
    let at = "2026-11-20T10:00:00Z";
    let one = visit("https://site.test/a", GPTBOT, "20.171.206.9", at);
    let (status, body) = post_batch(&app, &read_key, std::slice::from_ref(&one)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{body}"
    );
    let (status, _) = send(
        app.request(Method::POST, "/api/v1/visits/batch")
            .json(&json!({"visits": [one]})),
    )
    .await;
    assert_eq!(status, 401);
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"url": format!("https://site.test/{i}"), "timestamp": at}))
        .collect();
    let (status, body) = post_batch(&app, &key, &many).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("validation_failed")),
        "{body}"
    );
    for bad in [
        json!({"visits": [{"timestamp": at}]}),
        json!({"visits": [{"url": "https://site.test/", "timestamp": "yesterday"}]}),
        json!({"visits": [{"url": "https://site.test/", "timestamp": at, "colour": "red"}]}),
        json!({"visits": "no"}),
    ] {
        let (status, body) = send(
            app.request(Method::POST, "/api/v1/visits/batch")
                .header("X-API-Key", &key)
                .json(&bad),
        )
        .await;
        assert!(matches!(status, 400 | 422), "{bad}: {status} {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }
    let (status, body) = send(
        app.request(Method::POST, "/api/v1/visits")
            .header("X-API-Key", &key)
            .json(&visit("ftp://site.test/a", GPTBOT, "20.171.206.9", at)),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_url")),
        "{body}"
    );
}

/// Runs projection `name` until it has applied everything in its stream.
async fn catch_up(app: &TestApp, name: &str) {
    let projection = ai_cache::projections::all()
        .into_iter()
        .find(|p| p.name() == name)
        .expect("projection");
    ai_cache::projections::runtime::ProjectionRunner::new(
        projection,
        app.db().clone(),
        app.js().clone(),
    )
    .catch_up(&|_, _| {})
    .await
    .expect("catch up");
}

#[tokio::test]
async fn visits_wait_in_the_stream_while_the_projection_is_away_and_none_is_lost() {
    // No projection role runs: the API takes visits all the same.
    let app = TestApp::with_roles(&[Role::Api]).await;
    let (status, body) = app
        .post_client(&json!({"name": "Site", "domain": "site.test"}))
        .await;
    assert_eq!(
        status, 202,
        "without projections the write is accepted, not yet visible: {body}"
    );
    let client = body["id"].as_str().expect("id").to_owned();
    catch_up(&app, "clients").await;
    let (status, body) = app.post_key(&client, &json!({"scopes": ["ingest"]})).await;
    assert!(matches!(status, 201 | 202), "{body}");
    let key = body["key"].as_str().expect("key").to_owned();
    catch_up(&app, "clients").await;

    let at = "2026-11-20T10:00:00Z";
    let batch: Vec<Value> = (0..500)
        .map(|i| {
            visit(
                &format!("https://site.test/p/{i}"),
                GPTBOT,
                "20.171.206.9",
                at,
            )
        })
        .collect();
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(500)),
        "{body}"
    );
    assert_eq!(visit_rows(&app).await, 0, "nothing projects yet");
    // The projection comes back and finds every visit in the stream.
    catch_up(&app, "visits").await;
    assert_eq!(visit_rows(&app).await, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_loses_no_visit_and_counts_none_twice() {
    let options = Options {
        own_postgres: true,
        ..Options::default()
    };
    let (mut app, _client, key) = app_with(&[Role::Api, Role::Projections], options).await;
    let at = "2026-11-20T10:00:00Z";
    let batch = |from: usize| -> Vec<Value> {
        (from..from + 200)
            .map(|i| {
                visit(
                    &format!("https://site.test/p/{i}"),
                    CLAUDEBOT,
                    "198.51.100.5",
                    at,
                )
            })
            .collect()
    };
    let (status, body) = post_batch(&app, &key, &batch(0)).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(200)),
        "{body}"
    );

    tokio::task::block_in_place(|| app.postgres.as_mut().expect("own postgres").stop());
    // The key cannot be checked: the reporter is told to retry, nothing is taken.
    let (status, body) = post_batch(&app, &key, &batch(200)).await;
    assert_eq!(status, 503, "{body}");
    tokio::task::block_in_place(|| app.postgres.as_mut().expect("own postgres").restart())
        .expect("restart");

    // The reporter resends, and the first batch once more for good measure.
    let (status, body) = eventually_ok_post(&app, &key, &batch(200)).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(200)),
        "{body}"
    );
    let (_, body) = post_batch(&app, &key, &batch(0)).await;
    assert_eq!(body["duplicates"].as_u64(), Some(200), "{body}");
    wait_for_rows(&app, 400).await;
}

/// A report too large for one event travels in several, every visit stored once; a visit
/// repeated within the report is a duplicate, and so is the report posted again.
#[tokio::test]
async fn a_large_report_is_split_into_events_and_each_visit_is_stored_once() {
    let (app, _client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    let at = "2026-11-20T10:00:00Z";
    let long_agent = format!("{CLAUDEBOT} {}", "x".repeat(900));
    let mut batch: Vec<Value> = (0..300)
        .map(|i| {
            let mut v = visit(
                &format!("https://site.test/p/{i}"),
                &long_agent,
                "198.51.100.5",
                at,
            );
            v["referrer"] = json!(format!("https://chatgpt.com/{}", "r".repeat(900)));
            v
        })
        .collect();
    batch.push(batch[10].clone());
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(300), Some(1)),
        "{body}"
    );
    let events = stream_count(app.js(), "VISITS", None).await;
    assert!(events > 1, "300 visits of ~2 KB in {events} event(s)");
    wait_for_rows(&app, 300).await;

    let (_, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (body["accepted"].as_u64(), body["duplicates"].as_u64()),
        (Some(0), Some(301)),
        "{body}"
    );
    assert_eq!(stream_count(app.js(), "VISITS", None).await, events);
    app.caught_up("visits", "VISITS").await;
    assert_eq!(visit_rows(&app).await, 300);
}

/// Posts until the API answers something other than 503 (the pool reconnecting).
async fn eventually_ok_post(app: &TestApp, key: &str, visits: &[Value]) -> (u16, Value) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = post_batch(app, key, visits).await;
        if status != 503 || std::time::Instant::now() > deadline {
            return (status, body);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn stats_group_visits_by_bot_operator_category_day_and_page() {
    let (app, client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    // The client's pages; the edge sees them by any scheme and port.
    app.add_urls(
        &client,
        &[
            "https://site.test/top".into(),
            "https://site.test/other".into(),
        ],
    )
    .await;
    let mut batch = Vec::new();
    for (ua, n) in [
        (GPTBOT, 5),
        (CHATGPT_USER, 3),
        (CLAUDEBOT, 2),
        (GOOGLEBOT, 4),
        (FIREFOX, 6),
    ] {
        for i in 0..n {
            let day = if i % 2 == 0 {
                "2026-11-19"
            } else {
                "2026-11-20"
            };
            let page = if i < 2 { "/top" } else { "/other" };
            let origin = if i % 3 == 0 {
                "http://site.test:8080"
            } else {
                "https://site.test"
            };
            batch.push(visit(
                &format!("{origin}{page}"),
                ua,
                "198.51.100.7",
                &format!("{day}T1{i}:00:00Z"),
            ));
        }
    }
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(20)),
        "{body}"
    );
    wait_for_rows(&app, 20).await;
    let range = "from=2026-11-01T00:00:00Z&to=2026-11-30T00:00:00Z";
    let stats = |q: String| {
        let app = &app;
        let client = client.clone();
        async move {
            send(app.master(
                Method::GET,
                &format!("/api/v1/clients/{client}/visits/stats?{range}&{q}"),
            ))
            .await
        }
    };
    let (status, by_bot) = stats("group_by=bot".into()).await;
    assert_eq!(status, 200, "{by_bot}");
    assert_eq!(by_bot["totals"]["visits"], 20);
    assert_eq!(by_bot["totals"]["ai_visits"], 10);
    assert_eq!(by_bot["totals"]["human_visits"], 6);
    assert_eq!(by_bot["totals"]["search_bot_visits"], 4);
    assert_eq!(by_bot["totals"]["ai_share"], 0.5);
    assert_eq!(
        groups(&by_bot),
        [
            ("human".into(), 6),
            ("GPTBot".into(), 5),
            ("Googlebot".into(), 4),
            ("ChatGPT-User".into(), 3),
            ("ClaudeBot".into(), 2)
        ]
    );
    let (_, by_operator) = stats("group_by=operator".into()).await;
    assert_eq!(
        groups(&by_operator),
        [
            ("OpenAI".into(), 8),
            ("human".into(), 6),
            ("unknown operator".into(), 4),
            ("Anthropic".into(), 2)
        ]
    );
    let (_, by_category) = stats("group_by=category".into()).await;
    assert_eq!(
        groups(&by_category),
        [
            ("training".into(), 7),
            ("human".into(), 6),
            ("search".into(), 4),
            ("user_fetch".into(), 3)
        ]
    );
    let (_, by_day) = stats("group_by=day".into()).await;
    assert_eq!(
        groups(&by_day),
        [("2026-11-19".into(), 11), ("2026-11-20".into(), 9)]
    );
    let (_, by_hour) = stats("group_by=hour".into()).await;
    assert_eq!(
        groups(&by_hour),
        [
            ("2026-11-19T10:00Z".into(), 5),
            ("2026-11-19T12:00Z".into(), 4),
            ("2026-11-19T14:00Z".into(), 2),
            ("2026-11-20T11:00Z".into(), 5),
            ("2026-11-20T13:00Z".into(), 3),
            ("2026-11-20T15:00Z".into(), 1)
        ]
    );
    let (_, by_format) = stats("group_by=format".into()).await;
    assert_eq!(groups(&by_format), [("markdown".into(), 20)]);
    let (_, by_status) = stats("group_by=status".into()).await;
    assert_eq!(groups(&by_status), [("200".into(), 20)]);
    let (_, by_page) = stats("group_by=page".into()).await;
    assert_eq!(
        groups(&by_page),
        [
            ("https://site.test/other".into(), 10),
            ("https://site.test/top".into(), 10)
        ]
    );
    assert!(
        by_page["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .all(|g| g["page_id"].is_string()),
        "{by_page}"
    );
    let top = |v: &Value, table: &str| -> Vec<(String, i64, i64)> {
        v[table]
            .as_array()
            .expect("top pages")
            .iter()
            .map(|p| {
                (
                    p["url"].as_str().expect("url").to_owned(),
                    p["ai_visits"].as_i64().expect("n"),
                    p["bots"].as_i64().expect("n"),
                )
            })
            .collect()
    };
    assert_eq!(
        top(&by_page, "top_ai_pages"),
        [
            ("https://site.test/top".into(), 6, 3),
            ("https://site.test/other".into(), 4, 2)
        ]
    );
    assert_eq!(top(&by_page, "top_ai_misses"), []);
    // Paging.
    let (_, page2) = stats("group_by=bot&limit=2&offset=2".into()).await;
    assert_eq!(page2["total_groups"], 5);
    assert_eq!(
        groups(&page2),
        [("Googlebot".into(), 4), ("ChatGPT-User".into(), 3)]
    );
    let (_, past) = stats("group_by=bot&limit=2&offset=10".into()).await;
    assert_eq!(
        (
            past["total_groups"].as_i64(),
            past["groups"].as_array().map(Vec::len)
        ),
        (Some(5), Some(0))
    );
    // What is not a page of the client, or was not found, is a miss, not a page read.
    let misses = [
        ("http://site.test:8080/nope", 404),
        ("https://site.test/nope", 404),
        ("https://site.test/unknown", 200),
    ];
    let batch: Vec<Value> = misses
        .iter()
        .map(|(url, status)| {
            let mut v = visit(url, GPTBOT, "198.51.100.7", "2026-11-21T10:00:00Z");
            v["status"] = json!(status);
            v
        })
        .collect();
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(3)),
        "{body}"
    );
    wait_for_rows(&app, 23).await;
    let (_, after) = stats("group_by=page".into()).await;
    assert_eq!(
        top(&after, "top_ai_pages"),
        [
            ("https://site.test/top".into(), 6, 3),
            ("https://site.test/other".into(), 4, 2)
        ]
    );
    assert_eq!(
        top(&after, "top_ai_misses"),
        [
            ("//site.test/nope".into(), 2, 1),
            ("//site.test/unknown".into(), 1, 1)
        ]
    );
    // A range with nothing in it.
    let (status, empty) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/visits/stats?from=2020-01-01T00:00:00Z&to=2020-02-01T00:00:00Z"),
    ))
    .await;
    assert_eq!(
        (
            status,
            empty["totals"]["visits"].as_i64(),
            empty["totals"]["ai_share"].as_f64()
        ),
        (200, Some(0), Some(0.0))
    );
    // Bad queries and other tenants.
    for q in [
        "group_by=colour",
        "from=2026-11-30T00:00:00Z&to=2026-11-01T00:00:00Z",
        "from=2020-01-01T00:00:00Z&to=2026-01-01T00:00:00Z",
        "limit=0",
        "limit=5000",
        "offset=-1",
        "from=yesterday",
    ] {
        let (status, body) = send(app.master(
            Method::GET,
            &format!("/api/v1/clients/{client}/visits/stats?{q}"),
        ))
        .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{q}: {body}"
        );
    }
    let other = create_client(&app, "Other", "other.test").await;
    let (_, other_read) = create_key(&app, &other, &["read"]).await;
    let (status, _) = send(
        app.request(
            Method::GET,
            &format!("/api/v1/clients/{client}/visits/stats"),
        )
        .header("X-API-Key", &other_read),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{}/visits/stats", uuid::Uuid::new_v4()),
    ))
    .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bots_reading_what_robots_txt_disallows_them_are_listed_per_bot() {
    let app = TestApp::with_options(&crate::harness::PIPELINE_ROLES, Options::default()).await;
    let origin = crate::page_origin::PageOrigin::start().await;
    origin.robots("User-agent: GPTBot\nDisallow: /private/\n\nUser-agent: *\nAllow: /\n");
    let client = create_client(&app, "Site", "site.test").await;
    let (_, key) = create_key(&app, &client, &["ingest"]).await;
    app.add_urls(&client, &origin.articles(&["/".to_owned()]))
        .await;
    // The scraper shares the robots.txt it read.
    let store = ai_cache::infra::robots_store::RobotsStore::open(app.js())
        .await
        .expect("robots store");
    let site = format!("http://site.test:{}", origin.port);
    eventually(Duration::from_secs(30), "robots.txt shared", || async {
        store.get(&site).await.ok().flatten().is_some()
    })
    .await;

    let private = origin.url("/private/a");
    let now = chrono::Utc::now();
    let at = |s: i64| (now - chrono::Duration::seconds(s)).to_rfc3339();
    let (status, body) = post_batch(
        &app,
        &key,
        &[
            visit(&private, GPTBOT, "192.0.2.1", &at(50)),
            visit(&private, GPTBOT, "192.0.2.1", &at(40)),
            visit(&origin.url("/blog/x"), GPTBOT, "192.0.2.1", &at(30)),
            visit(&private, CLAUDEBOT, "192.0.2.2", &at(20)),
            visit(&private, FIREFOX, "192.0.2.3", &at(10)),
        ],
    )
    .await;
    assert_eq!((status, &body["accepted"]), (200, &json!(5)), "{body}");
    // The built-in edge's visits are judged too.
    let edge = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!(
            "{}/edge/site.test:{}/private/b",
            app.api.as_deref().expect("api"),
            origin.port
        ))
        .header("user-agent", GPTBOT)
        .header("x-forwarded-proto", "http")
        .send()
        .await
        .expect("edge");
    assert_eq!(edge.status(), 302);
    wait_for_rows(&app, 6).await;

    let judged: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT coalesce(bot_name, 'person') || ' ' || url, robots FROM visits ORDER BY visited_at",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let judged: Vec<(String, Option<&str>)> = judged
        .iter()
        .map(|(v, r)| (v.replace(&site, ""), r.as_deref()))
        .collect();
    assert_eq!(
        judged,
        [
            ("GPTBot /private/a".to_owned(), Some("disallowed")),
            ("GPTBot /private/a".to_owned(), Some("disallowed")),
            ("GPTBot /blog/x".to_owned(), Some("allowed")),
            ("ClaudeBot /private/a".to_owned(), Some("allowed")),
            ("person /private/a".to_owned(), None),
            ("GPTBot /private/b".to_owned(), Some("disallowed")),
        ]
    );

    let (status, list) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/visits/robots-violations"),
    ))
    .await;
    assert_eq!(status, 200, "{list}");
    let bots = list["bots"].as_array().expect("bots");
    assert_eq!(bots.len(), 1, "only GPTBot broke a rule: {list}");
    assert_eq!(bots[0]["bot_name"], "GPTBot");
    assert_eq!(bots[0]["operator"], "OpenAI");
    assert_eq!(bots[0]["violations"], 3);
    assert_eq!(
        bots[0]["urls"],
        json!([{"url": private, "visits": 2}, {"url": origin.url("/private/b"), "visits": 1}])
    );
    assert_eq!(
        bots[0]["first_seen"].as_str().map(|s| s.len() > 10),
        Some(true)
    );
    let (_, stats) = send(app.master(
        Method::GET,
        &format!("/api/v1/clients/{client}/visits/stats"),
    ))
    .await;
    assert_eq!(stats["totals"]["robots_violations"], 3, "{stats}");
    // Another client's key sees nothing of it.
    let other = create_client(&app, "Other", "other.test").await;
    let (_, other_key) = create_key(&app, &other, &["read"]).await;
    let (status, _) = send(
        app.request(
            Method::GET,
            &format!("/api/v1/clients/{client}/visits/robots-violations"),
        )
        .header("X-API-Key", other_key),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_signature_the_reporting_edge_verified_is_recorded_with_its_agent() {
    let (app, _client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    let mut signed = visit(
        "https://site.test/a",
        FIREFOX,
        "192.0.2.1",
        &chrono::Utc::now().to_rfc3339(),
    );
    signed["signature_agent"] = json!("https://chatgpt.com");
    let mut unknown = signed.clone();
    unknown["signature_agent"] = json!("https://agent.example");
    unknown["ip"] = json!("192.0.2.2");
    let (status, body) = post_batch(&app, &key, &[signed, unknown]).await;
    assert_eq!((status, &body["accepted"]), (200, &json!(2)), "{body}");
    wait_for_rows(&app, 2).await;
    let rows: Vec<(String, Option<String>, String, Option<String>)> = sqlx::query_as(
        "SELECT visitor_type, bot_name, verification, signature_agent FROM visits ORDER BY bot_name",
    )
    .fetch_all(app.db())
    .await
    .expect("rows");
    let s = |v: &str| Some(v.to_owned());
    assert_eq!(
        rows,
        [
            (
                "ai_bot".into(),
                s("ChatGPT Agent"),
                "signature".into(),
                s("https://chatgpt.com")
            ),
            (
                "other_bot".into(),
                s("https://agent.example"),
                "signature".into(),
                s("https://agent.example")
            ),
        ]
    );
    for bad in [
        "javascript:alert(1)",
        "https://chatgpt.com/path",
        "chatgpt.com",
    ] {
        let mut v = visit(
            "https://site.test/a",
            FIREFOX,
            "192.0.2.1",
            &chrono::Utc::now().to_rfc3339(),
        );
        v["signature_agent"] = json!(bad);
        let (status, body) = send(
            app.request(Method::POST, "/api/v1/visits")
                .header("X-API-Key", &key)
                .json(&v),
        )
        .await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_signature_agent", "{bad}");
    }
}

/// What the dashboard reads: filters, sections, referrals and the crawl-to-refer ratio,
/// series, the visit list with its cursor, bytes served, page filters and CSV exports.
#[tokio::test]
async fn the_dashboard_apis_filter_split_refer_list_and_export() {
    let (app, client, key) = app_with(&[Role::Api, Role::Projections], Options::default()).await;
    let page_urls = ["/blog/a", "/blog/b", "/blog/c", "/about"]
        .map(|p| format!("https://site.test{p}"))
        .to_vec();
    app.add_urls(&client, &page_urls).await;
    let at = |day: u32, i: usize| format!("2026-11-{day}T10:{i:02}:00Z");
    let mut batch = Vec::new();
    let mut push = |path: &str, ua: &str, day: u32, referrer: Option<&str>, bytes: Option<u64>| {
        let mut v = visit(
            &format!("https://site.test{path}"),
            ua,
            "198.51.100.7",
            &at(day, batch.len()),
        );
        v["referrer"] = json!(referrer);
        v["bytes"] = json!(bytes);
        batch.push(v);
    };
    for path in ["/blog/a", "/blog/a", "/blog/b", "/about"] {
        push(path, GPTBOT, 21, None, Some(1000));
    }
    for _ in 0..2 {
        push("/blog/a", CLAUDEBOT, 20, None, Some(500));
    }
    push("/about", CHATGPT_USER, 20, None, None);
    push("/blog/a", FIREFOX, 20, Some("https://chatgpt.com/"), None);
    push(
        "/blog/a",
        FIREFOX,
        20,
        Some("https://chatgpt.com/c/123"),
        None,
    );
    push(
        "/about",
        FIREFOX,
        20,
        Some("https://www.perplexity.ai/search?q=x"),
        None,
    );
    push("/about", FIREFOX, 20, Some("https://example.org/"), None);
    // A referrer a spreadsheet would run as a formula.
    push(
        "/about",
        FIREFOX,
        20,
        Some("=HYPERLINK(\"https://evil.test\")"),
        None,
    );
    let (status, body) = post_batch(&app, &key, &batch).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(12)),
        "{body}"
    );
    wait_for_rows(&app, 12).await;

    let get = |q: String| {
        let app = &app;
        async move { send(app.master(Method::GET, &q)).await }
    };
    let base = format!("/api/v1/clients/{client}/visits");
    let range = "from=2026-11-19&to=2026-11-21";
    let stats = |q: &str| get(format!("{base}/stats?{range}&{q}"));

    let (status, all) = stats("group_by=referrer").await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["totals"]["visits"], 12);
    assert_eq!(all["totals"]["referrals"], 3);
    assert_eq!(all["totals"]["bytes"], 5000);
    assert_eq!(all["totals"]["verified"], 0);
    let mut referrers = groups(&all);
    referrers.sort();
    assert_eq!(
        referrers,
        [
            ("OpenAI".into(), 2),
            ("Perplexity".into(), 1),
            ("none".into(), 8),
            ("other site".into(), 1)
        ]
    );
    let (_, sections) = stats("group_by=section").await;
    assert_eq!(groups(&sections), [("/blog/*".into(), 7), ("/".into(), 5)]);
    let (_, by_bot) = stats("group_by=bot").await;
    let gpt = by_bot["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["key"] == "GPTBot"))
        .expect("GPTBot");
    assert_eq!(
        (gpt["visits"].as_i64(), gpt["bytes"].as_i64()),
        (Some(4), Some(4000))
    );

    // Filters narrow every figure.
    for (q, visits) in [
        ("bot=GPTBot", 4),
        ("operator=Anthropic", 2),
        ("category=user_fetch", 1),
        ("bot=human", 5),
        ("verified=true", 0),
        ("bot=GPTBot&operator=Anthropic", 0),
    ] {
        let (status, v) = stats(q).await;
        assert_eq!(
            (status, v["totals"]["visits"].as_i64()),
            (200, Some(visits)),
            "{q}: {v}"
        );
    }
    let (_, pages) = send(app.master(
        Method::GET,
        &format!("/api/v1/sitemap/client/{client}/pages?search=BLOG/A"),
    ))
    .await;
    assert_eq!(pages["total_pages"], 1, "{pages}");
    let blog_a = pages["pages"][0]["id"].as_str().expect("id").to_owned();
    let (_, one_page) = stats(&format!("page_id={blog_a}&group_by=bot")).await;
    assert_eq!(one_page["totals"]["visits"], 6, "{one_page}");
    let (status, _) = stats(&format!("page_id={}", uuid::Uuid::nil())).await;
    assert_eq!(status, 404);
    let (status, bad) = stats(&format!("bot={}", "x".repeat(300))).await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_query")),
        "{bad}"
    );

    // Referrals: people sent by assistants, against the operator's crawls (ChatGPT-User
    // fetched for a person: not a crawl).
    let (status, refs) = get(format!("{base}/referrals?{range}")).await;
    assert_eq!(status, 200, "{refs}");
    let operators: Vec<(String, i64, i64, Option<f64>)> = refs["operators"]
        .as_array()
        .expect("operators")
        .iter()
        .map(|o| {
            (
                o["operator"].as_str().expect("name").to_owned(),
                o["crawls"].as_i64().expect("n"),
                o["referrals"].as_i64().expect("n"),
                o["crawl_to_refer"].as_f64(),
            )
        })
        .collect();
    assert_eq!(
        operators,
        [
            ("OpenAI".into(), 4, 2, Some(2.0)),
            ("Perplexity".into(), 0, 1, Some(0.0)),
            ("Anthropic".into(), 2, 0, None)
        ]
    );
    assert_eq!(
        (
            refs["total_referrals"].as_i64(),
            refs["total_crawls"].as_i64()
        ),
        (Some(3), Some(6))
    );
    assert_eq!(
        refs["per_day"]["buckets"],
        json!(["2026-11-19", "2026-11-20", "2026-11-21"])
    );

    // Series: a line per key over every bucket, the rest summed as `other`.
    let (status, series) = get(format!("{base}/series?{range}&split=category&lines=2")).await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(
        series["buckets"],
        json!(["2026-11-19", "2026-11-20", "2026-11-21"])
    );
    assert_eq!(
        series["series"],
        json!([
            {"key": "training", "total": 6, "values": [0, 2, 4]},
            {"key": "other", "total": 6, "values": [0, 6, 0]}
        ])
    );
    let (_, hourly) = get(format!(
        "{base}/series?from=2026-11-21T09:00:00Z&to=2026-11-21T12:00:00Z&interval=hour&split=bot"
    ))
    .await;
    assert_eq!(
        hourly["buckets"],
        json!([
            "2026-11-21T09:00Z",
            "2026-11-21T10:00Z",
            "2026-11-21T11:00Z"
        ])
    );
    assert_eq!(
        hourly["series"][0],
        json!({"key": "GPTBot", "total": 4, "values": [0, 4, 0]})
    );
    for bad in [
        format!("{base}/series?from=2026-01-01&to=2026-11-21&interval=hour"),
        format!("{base}/series?{range}&split=page"),
        format!("{base}/series?{range}&lines=0"),
    ] {
        let (status, body) = get(bad.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }

    // The visit list pages by cursor, newest first, each visit once.
    let mut seen = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let after = next
            .as_ref()
            .map(|n| format!("&after={n}"))
            .unwrap_or_default();
        let (status, list) = get(format!("{base}?{range}&limit=5{after}")).await;
        assert_eq!(status, 200, "{list}");
        for v in list["visits"].as_array().expect("visits") {
            seen.push((
                v["visited_at"].as_str().expect("t").to_owned(),
                v["id"].as_str().expect("id").to_owned(),
            ));
            if v["url"] == "https://site.test/blog/a" {
                assert_eq!(v["page_id"].as_str(), Some(blog_a.as_str()), "{v}");
            }
        }
        next = list["next"].as_str().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 12);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
    let (status, bad) = get(format!("{base}?after=nonsense")).await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );

    // CSV exports, formulas defused.
    let csv = |q: String| {
        let app = &app;
        async move {
            let res = app.master(Method::GET, &q).send().await.expect("csv");
            assert_eq!(res.status(), 200);
            assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
            res.text().await.expect("text")
        }
    };
    let visits_csv = csv(format!("{base}?{range}&limit=1000&format=csv")).await;
    assert_eq!(visits_csv.lines().count(), 13, "{visits_csv}");
    assert!(
        visits_csv.starts_with("visited_at,url,page_id,"),
        "{visits_csv}"
    );
    assert!(
        visits_csv.contains("\"'=HYPERLINK(\"\"https://evil.test\"\")\""),
        "{visits_csv}"
    );
    let bots_csv = csv(format!("{base}/stats?{range}&group_by=bot&format=csv")).await;
    assert!(
        bots_csv.starts_with("key,page_id,visits,ai_visits,"),
        "{bots_csv}"
    );
    assert!(bots_csv.contains("\nGPTBot,,4,4,"), "{bots_csv}");
    let series_csv = csv(format!(
        "{base}/series?{range}&split=category&lines=2&format=csv"
    ))
    .await;
    assert_eq!(
        series_csv,
        "bucket,training,other\n2026-11-19,0,0\n2026-11-20,2,6\n2026-11-21,4,0\n"
    );
    let refs_csv = csv(format!("{base}/referrals?{range}&format=csv")).await;
    assert_eq!(
        refs_csv,
        "operator,crawls,referrals,crawl_to_refer\nOpenAI,4,2,2.0\nPerplexity,0,1,0.0\nAnthropic,2,0,\n"
    );

    // The page list: pages no AI bot ever read, by URL text, last changed first, as CSV.
    let pages_of = |q: &str| get(format!("/api/v1/sitemap/client/{client}/pages?{q}"));
    let urls = |v: &Value| -> Vec<String> {
        v["pages"]
            .as_array()
            .expect("pages")
            .iter()
            .map(|p| p["url"].as_str().expect("url").to_owned())
            .collect()
    };
    let (_, unread) = pages_of("read_by_ai=false").await;
    assert_eq!(urls(&unread), ["https://site.test/blog/c"]);
    let (_, read) = pages_of("read_by_ai=true").await;
    assert_eq!(read["total_pages"], 3);
    let (_, blog) = pages_of("search=blog%2F&sort=updated").await;
    assert_eq!(blog["total_pages"], 3);
    let (_, literal) = pages_of("search=%25").await;
    assert_eq!(literal["total_pages"], 0, "% is matched as itself");
    let pages_csv = csv(format!("/api/v1/sitemap/client/{client}/pages?format=csv")).await;
    assert_eq!(pages_csv.lines().count(), 5, "{pages_csv}");

    // Who a key is; a client's key sees its own client only.
    let (_, me) = get("/api/v1/me".into()).await;
    assert_eq!(me, json!({"kind": "master"}));
    let (_, reader) = create_key(&app, &client, &["read"]).await;
    let (_, me) = send(
        app.request(Method::GET, "/api/v1/me")
            .header("X-API-Key", &reader),
    )
    .await;
    assert_eq!(
        (me["kind"].as_str(), me["client_id"].as_str()),
        (Some("client"), Some(client.as_str()))
    );
    let other = create_client(&app, "Other", "other.test").await;
    let (status, _) = send(
        app.request(
            Method::GET,
            &format!("/api/v1/clients/{other}/visits/series"),
        )
        .header("X-API-Key", &reader),
    )
    .await;
    assert_eq!(status, 403);
    let (status, _) = send(
        app.request(Method::GET, &format!("{base}/referrals"))
            .header("X-API-Key", &reader),
    )
    .await;
    assert_eq!(status, 200);
}
